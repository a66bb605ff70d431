"""--dynamic-size: one ONNX for every input size (issue 23).

One export of xcit_nano_12_p16_224 (random weights, dynamic batch and size) runs on onnxruntime and
OpenVINO at 224, 384, 512x768 and 800x1344 (batch 1, to stay fast) within 1e-4 of PyTorch at each
size; a two-block ViT-S/16 does the same at 224 and 384 and matches timm's ``dynamic_img_size`` at
sizes other than its table's. A size that is not a multiple of the patch size is refused by the
runner with an error that names the rule, before any runtime sees it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from xcit_export import export as export_mod
from xcit_export.errors import DataError
from xcit_export.models.deploy import DeployModel
from xcit_export.models.zoo import build_model, get_spec
from xcit_export.targets import BuildContext, get_target

SIZES = [(224, 224), (384, 384), (512, 768), (800, 1344)]


def _export(model: DeployModel, spec, folder: Path) -> Path:
    options = export_mod.ExportOptions(batch=None, dynamic_size=True)
    raw = export_mod.export_onnx(model, model.input_shape, folder / "model.raw.onnx", options)
    return export_mod.simplify_onnx(raw, folder / "model.onnx")


@pytest.fixture(scope="module")
def xcit(tmp_path_factory):
    spec = get_spec("xcit_nano_12_p16_224")
    torch.manual_seed(0)
    model = DeployModel(build_model(spec), spec.preprocessing, dynamic_size=True)
    folder = tmp_path_factory.mktemp("dyn-xcit")
    return spec, model, _export(model, spec, folder)


@pytest.fixture(scope="module")
def xcit_reference(xcit):
    """PyTorch's logits at every size, computed once for every runtime compared with them."""
    _, model, _ = xcit
    return {size: export_mod.torch_reference(model, _inputs(*size))[0] for size in SIZES}


def _inputs(h: int, w: int, seed: int = 1) -> np.ndarray:
    return export_mod.seeded_inputs((3, h, w), 1, seed=seed)


def _ctx(spec, onnx_path: Path, out: Path, dynamic: bool = True) -> BuildContext:
    out.mkdir(parents=True, exist_ok=True)
    return BuildContext(spec=spec, onnx_path=onnx_path, out_dir=out, batch=None,
                        input_shape=(3, *spec.preprocessing.input_size), dynamic_size=dynamic)


def test_onnx_input_has_symbolic_height_and_width(xcit):
    _, _, path = xcit
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 3
    for d in (dims[0], dims[2], dims[3]):
        assert d.dim_param and not d.dim_value, dims


def test_xcit_onnxruntime_every_size(xcit, xcit_reference):
    _, _, path = xcit
    for h, w in SIZES:
        worst = export_mod.check_parity(path, _inputs(h, w), [xcit_reference[(h, w)]])
        assert worst["logits"] < 1e-4, (h, w, worst)


def test_fourier_encoding_is_not_a_constant(xcit):
    """The positional encoding is computed in the graph from the grid (no (1, C, 14, 14)-sized table)."""
    _, _, path = xcit
    graph = onnx.load(str(path)).graph
    assert any(n.op_type == "Range" for n in graph.node)
    big = [i.name for i in graph.initializer if 196 in i.dims and 128 in i.dims]
    assert not big, big


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_xcit_openvino_every_size(xcit, xcit_reference, tmp_path):
    spec, _, path = xcit
    target = get_target("openvino-fp32")
    artifact = target.build(_ctx(spec, path, tmp_path / "ov"))
    assert artifact.metadata["input_size"]["dynamic"] is True
    for mode in ("static", "dynamic"):
        runner = target.load(artifact, threads=2, shapes=mode)
        try:
            assert runner.shape_mode == mode
            for h, w in SIZES:
                ref = xcit_reference[(h, w)]
                got = runner.infer(_inputs(h, w))[0]
                assert got.shape == ref.shape
                assert np.abs(got - ref).max() < 1e-4, (mode, h, w)
        finally:
            runner.close()


def test_runner_refuses_a_size_off_the_patch_grid(xcit, tmp_path):
    spec, _, path = xcit
    target = get_target("onnxruntime-fp32")
    artifact = target.build(_ctx(spec, path, tmp_path / "ort"))
    runner = target.load(artifact, threads=1)
    try:
        assert runner.infer(_inputs(96, 160))[0].shape == (1, 1000)  # any multiple of 16
        with pytest.raises(DataError, match="multiples of the patch size 16"):
            runner.infer(_inputs(200, 224))
    finally:
        runner.close()


def test_static_artifact_names_its_size(tmp_path):
    spec = get_spec("xcit_nano_12_p16_224").with_overrides(input_size=(64, 64))
    torch.manual_seed(0)
    model = DeployModel(build_model(spec), spec.preprocessing)
    raw = export_mod.export_onnx(model, model.input_shape, tmp_path / "raw.onnx", export_mod.ExportOptions(batch=1))
    target = get_target("onnxruntime-fp32")
    artifact = target.build(_ctx(spec, raw, tmp_path / "ort", dynamic=False))
    runner = target.load(artifact, threads=1)
    try:
        with pytest.raises(DataError, match="exported for 64x64 only.*--dynamic-size"):
            runner.infer(_inputs(96, 96))
    finally:
        runner.close()


# --------------------------------------------------------------------------------------------
# ViT-S/16: the position table resampled at run time, as timm's dynamic_img_size does
# --------------------------------------------------------------------------------------------

def _vit(depth: int = 2):
    from dataclasses import replace

    spec = get_spec("vit_small_patch16_224")
    spec = replace(spec, kwargs={**spec.kwargs, "depth": depth})  # two random blocks: the same graph, faster
    torch.manual_seed(0)
    return spec, build_model(spec)


def test_vit_onnxruntime_224_and_384(tmp_path):
    spec, backbone = _vit()
    model = DeployModel(backbone, spec.preprocessing, dynamic_size=True)
    path = _export(model, spec, tmp_path)
    for h, w in [(224, 224), (384, 384)]:
        x = _inputs(h, w)
        worst = export_mod.check_parity(path, x, export_mod.torch_reference(model, x))
        assert worst["logits"] < 1e-4, (h, w, worst)


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm (test oracle) not installed")
def test_vit_matches_timm_dynamic_img_size():
    root = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())  # the repository
    spec_ = importlib.util.spec_from_file_location("timm_parity", root / "tools" / "timm_parity.py")
    timm_parity = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(timm_parity)
    timm = timm_parity.import_timm()
    spec, ours = _vit()
    ref = timm.create_model("vit_small_patch16_224", pretrained=False, depth=2, dynamic_img_size=True).eval()
    with torch.no_grad():  # perturb the table so the resampling matters
        ours.pos_embed.add_(torch.randn_like(ours.pos_embed))
    ref.load_state_dict(ours.state_dict())
    ours.dynamic_img_size = True
    for h, w in [(224, 224), (384, 384), (160, 320), (512, 768)]:
        x = torch.from_numpy(_inputs(h, w))
        with torch.no_grad():
            diff = (ours(x) - ref(x)).abs().max().item()
        assert diff < 1e-4, (h, w, diff)


# --------------------------------------------------------------------------------------------
# TensorRT-RTX: an optimisation profile over the sizes asked for, built ahead of time here
# --------------------------------------------------------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt-rtx not installed")
def test_tensorrt_rtx_profile_spans_the_sizes_and_device_check_runs_each(xcit, tmp_path):
    import json

    from xcit_export.device.bundle import create_bundle, device_check
    from xcit_export.targets import Artifact

    spec, _, path = xcit
    out = tmp_path / "rtx"
    out.mkdir()
    ctx = BuildContext(spec=spec, onnx_path=path, out_dir=out, batch=None, input_shape=(3, 224, 224), threads=2,
                       dynamic_size=True, sizes=((224, 224), (320, 384)),
                       options={"compute_capability": "8.6", "max_batch": 2, "golden_count": 2})
    target = get_target("tensorrt-rtx-fp32")
    artifact = target.build(ctx)
    artifact.save_metadata()
    artifact = Artifact.from_dir(out)
    engine = json.loads((out / "engine.json").read_text())
    assert engine["profile"]["min"] == [1, 3, 224, 224]
    assert engine["profile"]["opt"] == [1, 3, 224, 224]
    assert engine["profile"]["max"] == [2, 3, 320, 384]
    assert artifact.metadata["profile"]["size"] == {"layout": "nchw", "min": [224, 224], "opt": [224, 224],
                                                    "max": [320, 384]}
    assert (out / "golden_320x384.npz").exists() and "320x384" in artifact.metadata["golden_sizes"]
    runner = target.load(artifact, threads=2)  # no GPU here: the precision-ready ONNX on onnxruntime
    try:
        assert runner.infer(_inputs(320, 384))[0].shape == (1, 1000)
        with pytest.raises(DataError, match="outside .*size range 224x224 .. 320x384"):
            runner.infer(_inputs(384, 384))
    finally:
        runner.close()
    bundle = create_bundle(out, tmp_path / "bundle", tarball=False)
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["profile"]["size"]["max"] == [320, 384] and "320x384" in meta["golden_sizes"]
    report = device_check(bundle, iterations=2, warmup=1, profile=False)
    assert report["passed"] and report["sizes"]["320x384"]["checks"]
    assert all(c["ok"] for c in report["sizes"]["320x384"]["checks"])
    assert {c["metric"] for c in report["checks"]} >= {"rel_error_max", "rel_error_max @ 320x384"}


def test_features_at_800x1344_have_strides_4_to_32(tmp_path):
    """--output features --dynamic-size: the four detection maps at strides 4, 8, 16, 32 of any size."""
    spec = get_spec("xcit_nano_12_p16_224")
    torch.manual_seed(0)
    model = DeployModel(build_model(spec), spec.preprocessing, output="features", dynamic_size=True)
    raw = export_mod.export_onnx(model, model.input_shape, tmp_path / "raw.onnx",
                                 export_mod.ExportOptions(batch=1, dynamic_size=True))
    x = _inputs(800, 1344)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(raw), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})
    assert [o.name for o in sess.get_outputs()] == ["features_s4", "features_s8", "features_s16", "features_s32"]
    assert [g.shape for g in got] == [(1, 128, 800 // s, 1344 // s) for s in (4, 8, 16, 32)]
    ref = export_mod.torch_reference(model, x)
    for g, r in zip(got, ref):
        assert np.abs(g - r).max() < 1e-4


# --------------------------------------------------------------------------------------------
# --eval-sizes through the pipeline, the CLI and recipes
# --------------------------------------------------------------------------------------------

def test_eval_sizes_needs_dynamic_size_and_patch_multiples(tmp_path):
    from xcit_export.errors import XcitExportError
    from xcit_export.options import RunOptions
    from xcit_export.pipeline import run

    base = dict(out=tmp_path / "o", input_size=(64, 64), warmup=0, iterations=1)
    with pytest.raises(XcitExportError, match="--eval-sizes needs --dynamic-size"):
        run(RunOptions("xcit_nano_12_p16_224", ["onnxruntime-fp32"], **base, eval_sizes=((64, 64), (96, 96))))
    with pytest.raises(XcitExportError, match="100x96 does not fit .* multiples of the patch size 16"):
        run(RunOptions("xcit_nano_12_p16_224", ["onnxruntime-fp32"], **base, dynamic_size=True,
                       eval_sizes=((100, 96),)))
    # a tensor evaluation set cannot be preprocessed at another size: refused before any work (issue 29)
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 3, 64, 64), np.float32))
    with pytest.raises(XcitExportError, match=r"holds tensors preprocessed at one size, which cannot be evaluated "
                                              r"at 96x96 \(--eval-sizes\)"):
        run(RunOptions("xcit_nano_12_p16_224", ["onnxruntime-fp32"], **base, dynamic_size=True,
                       eval=str(tmp_path / "x.npz"), eval_sizes=((64, 64), (96, 96))))
    assert not (tmp_path / "o").exists()  # refused before any work: nothing created


def test_pipeline_reports_accuracy_and_latency_per_size(tmp_path):
    from xcit_export.options import RunOptions
    from xcit_export.pipeline import run

    report = run(RunOptions("xcit_nano_12_p16_224", ["onnxruntime-fp32"], out=tmp_path / "o",
                            input_size=(64, 64), eval_count=2, threads=2, profile=False, dynamic_size=True,
                            eval_sizes=((64, 64), (96, 128)), warmup=1, iterations=2,
                            thresholds={"onnxruntime-fp32": {"thresholds": {"min_cosine": 0.9999}}}))
    entry = report["targets"][0]
    assert entry["status"] == "ok" and entry["passed"] is True
    assert [s["size"] for s in entry["sizes"]] == ["64x64", "96x128"]
    assert [s["tokens"] for s in entry["sizes"]] == [16, 48]
    for s in entry["sizes"]:
        assert s["status"] == "ok" and s["accuracy"]["cosine_min"] > 0.9999 and s["latency_median_ms"] > 0
    assert any(c["metric"] == "cosine_min @ 96x128" for c in entry["checks"])
    assert set(report["sizes"]["slopes"]) == {"pytorch", "onnxruntime-fp32"}
    html = (tmp_path / "o" / "report.html").read_text()
    assert "<h2>Sizes</h2>" in html and 'data-plot="tokens"' in html
    assert "## Sizes" in (tmp_path / "o" / "report.md").read_text()


def test_recipe_and_cli_take_eval_sizes(tmp_path):
    from click.testing import CliRunner

    from xcit_export.cli import main
    from xcit_export.recipe import load_recipe, to_run_options

    path = tmp_path / "r.toml"
    path.write_text('[model]\nname = "xcit_nano_12_p16_224"\n[export]\ndynamic_size = true\n'
                    'eval_sizes = [224, "512x768", [800, 1344]]\n[targets.onnxruntime-fp32]\n')
    config = to_run_options(load_recipe(path))
    assert config.dynamic_size is True and config.eval_sizes == ((224, 224), (512, 768), (800, 1344))
    result = CliRunner().invoke(main, ["--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32",
                                       "--dynamic-size", "--eval-sizes", "224,abc"])
    assert result.exit_code != 0 and "'abc' is not a size" in result.output


@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf not installed")
def test_openvino_int8_tied_to_one_size_fails_its_build(tmp_path):
    """NNCF's INT8 IR of a --dynamic-size XCiT only runs at the size it was quantized at: the build
    says so (and what to use instead) instead of a target that passes at 64x64 and breaks elsewhere."""
    from xcit_export.errors import ArtifactError

    spec = get_spec("xcit_nano_12_p16_224").with_overrides(input_size=(64, 64))
    torch.manual_seed(0)
    model = DeployModel(build_model(spec), spec.preprocessing, dynamic_size=True)
    raw = export_mod.export_onnx(model, model.input_shape, tmp_path / "raw.onnx",
                                 export_mod.ExportOptions(dynamic_size=True))
    ctx = _ctx(spec, raw, tmp_path / "ov8")
    ctx.calibration = export_mod.seeded_inputs((3, 64, 64), 32, seed=5)
    with pytest.raises(ArtifactError, match="does not run at another size .*onnxruntime-int8 or tensorrt-int8"):
        get_target("openvino-int8").build(ctx)
