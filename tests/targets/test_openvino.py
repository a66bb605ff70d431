"""OpenVINO targets: build, load and infer openvino-fp32/fp16/int8 against the PyTorch reference.

XCiT-Nano at 64x64 (random weights) keeps this fast: one dynamic-batch ONNX export is shared by
every test; static-batch builds reshape it (``ctx.batch``), as the targets do for any dynamic
ONNX. Calibration and evaluation data are seeded random arrays.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from xcit_export.errors import ArtifactError, DataError, XcitExportError  # noqa: E402
from xcit_export.targets import Artifact, BuildContext, get_target  # noqa: E402
from xcit_export.evaluate.validate import compare_outputs  # noqa: E402

MODEL = "xcit_nano_12_p16_224"
SIZE = (64, 64)
INPUT_SHAPE = (3, *SIZE)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from xcit_export.export import export_onnx, seeded_inputs, simplify_onnx, torch_reference
    from xcit_export.models.weights import load_model
    from xcit_export.models.zoo import get_spec

    spec = get_spec(MODEL).with_overrides(input_size=SIZE)
    model = load_model(spec, "random", 0)
    folder = tmp_path_factory.mktemp("onnx")
    raw = export_onnx(model, INPUT_SHAPE, folder / "model.raw.onnx")
    onnx_path = simplify_onnx(raw, folder / "model.onnx")
    x = seeded_inputs(INPUT_SHAPE, 8, seed=2)
    calib = seeded_inputs(INPUT_SHAPE, 32, seed=3)
    return {"spec": spec, "onnx": onnx_path, "x": x, "ref": torch_reference(model, x)[0], "calib": calib,
            "tmp": tmp_path_factory}


def _build(setup, name: str, batch: int | None, options: dict | None = None, calib=None, evaluation=None,
           folder: Path | None = None) -> Artifact:
    target = get_target(name)
    options = options or {}
    target.check_options(options)
    out = folder or setup["tmp"].mktemp(name)
    ctx = BuildContext(spec=setup["spec"], onnx_path=setup["onnx"], out_dir=out, batch=batch,
                       input_shape=INPUT_SHAPE, calibration=setup["calib"] if calib is None else calib,
                       calibration_id="seeded", evaluation=evaluation, options=options, threads=2)
    artifact = target.build(ctx)
    artifact.save_metadata()
    return Artifact.from_dir(out)


def _run(setup, name: str, artifact: Artifact, batch: int | None, **options) -> tuple[np.ndarray, object]:
    from xcit_export.evaluate.validate import run_in_batches

    runner = get_target(name).load(artifact, threads=2, **options)
    try:
        out = run_in_batches(runner.infer, setup["x"], batch or 5)[0]  # 5: a padded last batch
    finally:
        runner.close()
    return out, runner


def _check_ir(artifact: Artifact, batch: int | None, precision: str) -> None:
    import openvino as ov

    assert artifact.path.name == "model.xml"
    assert sorted(f.name for f in artifact.files) == ["model.bin", "model.xml"]
    assert all(f.exists() and f.stat().st_size > 0 for f in artifact.files)
    meta = artifact.metadata
    assert meta["precision"] == precision
    assert meta["openvino"] == ov.__version__.split("-")[0]
    assert meta["batch"] == (batch if batch else "dynamic")
    shape = ov.Core().read_model(str(artifact.path)).input(0).get_partial_shape()
    assert shape[0].is_dynamic == (batch is None)
    assert [d.get_length() for d in list(shape)[1:]] == list(INPUT_SHAPE)


def test_registered_with_options():
    for name in ("openvino-fp32", "openvino-fp16", "openvino-int8"):
        t = get_target(name)
        assert t.backend == "openvino" and {"device", "hint", "inference_precision"} <= set(t.options)
        assert "AVX-512 VNNI" in t.verified
    int8 = get_target("openvino-int8")
    assert int8.needs_calibration and int8.requires == ("openvino", "nncf")
    assert {"subset_size", "preset", "ignored_scope", "max_drop", "fast_bias_correction"} <= set(int8.options)
    assert get_target("openvino-fp32").requires == ("openvino",)
    with pytest.raises(XcitExportError, match="does not take option"):
        get_target("openvino-fp32").check_options({"subset_size": 10})


@pytest.mark.parametrize("batch", [1, None], ids=["static1", "dynamic"])
@pytest.mark.parametrize("name", ["openvino-fp32", "openvino-fp16"])
def test_float_targets_match_pytorch(setup, name, batch):
    artifact = _build(setup, name, batch)
    precision = name.split("-")[1]
    _check_ir(artifact, batch, precision)
    out, runner = _run(setup, name, artifact, batch)
    acc = compare_outputs(out, setup["ref"])
    assert acc["finite"] and acc["top1_agreement"] == 1.0
    weights_ratio = artifact.metadata["bin_size_bytes"] / setup["onnx"].stat().st_size
    if name == "openvino-fp32":
        assert runner.inference_precision == "f32"  # not the CPU's bf16 default
        assert acc["max_abs_error"] < 1e-3, acc
        assert 0.9 < weights_ratio < 1.1, weights_ratio
    else:
        assert artifact.metadata["weights_compressed_to_fp16"] is True
        assert 0.4 < weights_ratio < 0.6, weights_ratio  # FP16 weights: half the ONNX's FP32
        assert acc["cosine_min"] > 0.999, acc
    assert runner.device == "CPU" and runner.threads == 2 and runner.measures_latency


def test_int8_dynamic_batch_with_accuracy_control(setup):
    # Unlabelled evaluation: the metric is top-1 agreement with the FP32 model (100% for FP32).
    artifact = _build(setup, "openvino-int8", None, {"subset_size": 32, "max_drop": 0.5},
                      evaluation=(setup["x"], None))
    _check_ir(artifact, None, "int8")
    nncf_meta = artifact.metadata["nncf"]
    assert nncf_meta["method"] == "quantize_with_accuracy_control"
    assert nncf_meta["accuracy_metric"] == "top1_agreement_vs_fp32" and nncf_meta["fp32_score"] == 100.0
    assert nncf_meta["int8_score"] >= 50.0 and nncf_meta["max_drop"] == 0.5 and nncf_meta["max_drop_points"] == 50.0
    out, _ = _run(setup, "openvino-int8", artifact, None)  # batches of 5: dynamic batch works
    acc = compare_outputs(out, setup["ref"])
    assert acc["finite"] and acc["cosine_mean"] > 0.99, acc


# ------------------------------------------------------------------------------------------------
# Bad input: one clear error each
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fp32_artifact(setup):
    return _build(setup, "openvino-fp32", 1)


def _copy(artifact: Artifact, dst: Path) -> Artifact:
    shutil.copytree(artifact.path.parent, dst)
    return Artifact.from_dir(dst)


def test_missing_bin(fp32_artifact, tmp_path):
    art = _copy(fp32_artifact, tmp_path / "ir")
    (tmp_path / "ir" / "model.bin").unlink()
    with pytest.raises(ArtifactError, match=r"model\.bin' does not exist; rebuild"):
        get_target("openvino-fp32").load(art)


def test_truncated_bin(fp32_artifact, tmp_path):
    art = _copy(fp32_artifact, tmp_path / "ir")
    bin_path = tmp_path / "ir" / "model.bin"
    data = bin_path.read_bytes()
    bin_path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ArtifactError, match=r"model\.bin' are \d+ bytes but were built as \d+.*truncated.*rebuild"):
        get_target("openvino-fp32").load(art)
    # Without the recorded size (an IR from elsewhere), OpenVINO's own check is reported the same way.
    art.metadata.pop("bin_size_bytes")
    with pytest.raises(ArtifactError, match=r"cannot read .*model\.xml.*damaged; rebuild"):
        get_target("openvino-fp32").load(art)


def test_unsupported_device(setup, fp32_artifact):
    with pytest.raises(XcitExportError, match=r"unsupported OpenVINO device 'TPU' \(--device\): use one of CPU, GPU"):
        _build(setup, "openvino-fp32", 1, {"device": "TPU"})
    with pytest.raises(XcitExportError, match=r"unsupported OpenVINO hint 'fast'"):
        get_target("openvino-fp32").load(fp32_artifact, hint="fast")
    import openvino as ov

    available = ov.Core().available_devices
    if not any(d.startswith("GPU") for d in available):
        with pytest.raises(ArtifactError, match=r"device GPU is not available on this machine; available: CPU"):
            get_target("openvino-fp32").load(fp32_artifact, device="GPU")


def test_calibration_too_small(setup):
    few = setup["calib"][:8]
    with pytest.raises(DataError, match=r"calibration set has 8 image\(s\).*at least 32.*--calib-size"):
        _build(setup, "openvino-int8", 1, calib=few)
    with pytest.raises(DataError, match=r"subset_size=64 asks for more calibration images than the set holds "
                                        r"\(32\).*--calib-size 64"):
        _build(setup, "openvino-int8", 1, {"subset_size": 64})
    with pytest.raises(DataError, match=r"calibration set has shape \(32, 3, 32, 32\)"):
        _build(setup, "openvino-int8", 1, calib=np.zeros((32, 3, 32, 32), np.float32))


def test_bad_int8_options(setup):
    with pytest.raises(XcitExportError, match=r"preset 'fast' is not an NNCF preset"):
        _build(setup, "openvino-int8", 1, {"preset": "fast"})
    with pytest.raises(XcitExportError, match=r"max_drop=150 is out of range"):
        _build(setup, "openvino-int8", 1, {"max_drop": 150})
    # max_drop is a fraction for every target: a value in percentage points is refused, never reread
    with pytest.raises(XcitExportError, match=r"max_drop=1.0 is read as a fraction \(100 points\); for 1 point "
                                              r"pass 0.01"):
        _build(setup, "openvino-int8", 1, {"max_drop": 1.0})
    with pytest.raises(DataError, match=r"max_drop needs an evaluation set"):
        _build(setup, "openvino-int8", 1, {"max_drop": 0.01})
    with pytest.raises(XcitExportError, match=r"ignored_scope pattern '\(' is not a regular expression"):
        _build(setup, "openvino-int8", 1, {"ignored_scope": ["("]})


def test_ignored_scope_parsing():
    from xcit_export.targets.openvino import parse_ignored_scope

    scope, spec = parse_ignored_scope(["MatMul", "node_linear.*"], {"MatMul", "Add"})
    assert spec == {"names": [], "patterns": ["node_linear.*"], "types": ["MatMul"]}
    assert scope.types == ["MatMul"] and scope.patterns == ["node_linear.*"]
    _, spec = parse_ignored_scope({"names": ["logits"]}, set())
    assert spec["names"] == ["logits"]
    assert parse_ignored_scope(None, set()) == (None, None)
    with pytest.raises(XcitExportError, match="unknown key"):
        parse_ignored_scope({"nodes": ["x"]}, set())


def test_pipeline_static_batch_fp32_and_int8(setup, tmp_path):
    """The pipeline's spine at static batch 1: FP32 and INT8 built, validated and timed; the INT8 IR
    is really quantized and refuses another batch with a message that says how to fix it."""
    import openvino as ov

    from xcit_export.options import Inputs, RunOptions
    from xcit_export.pipeline import run

    config = RunOptions(MODEL, ["openvino-fp32", "openvino-int8"], out=tmp_path / "out", input_size=SIZE, batch=1,
                        threads=1, eval_count=8, warmup=1, iterations=3,
                        target_options={"openvino-int8": {"subset_size": 32, "preset": "performance",
                                                          "device": "CPU", "hint": "latency"}})
    report = run(config, Inputs(calib_data=setup["calib"], calib_id="seeded-32"))
    entries = {t["target"]: t for t in report["targets"]}
    for name, entry in entries.items():
        assert entry["status"] == "ok", (name, entry.get("error"), entry.get("traceback"))
        assert entry["artifact"]["batch"] == 1 and entry["latency"]["median_ms"] > 0
        assert entry["device"] == "CPU" and entry["threads"] == 1
    assert entries["openvino-fp32"]["accuracy"]["top1_agreement"] == 1.0
    assert entries["openvino-fp32"]["accuracy"]["max_abs_error"] < 1e-3
    acc = entries["openvino-int8"]["accuracy"]
    assert acc["finite"] and acc["cosine_mean"] > 0.99 and acc["cosine_min"] > 0.98, acc
    nncf_meta = entries["openvino-int8"]["artifact"]["nncf"]
    assert nncf_meta["method"] == "quantize" and nncf_meta["preset"] == "performance"
    assert nncf_meta["model_type"] == "transformer" and nncf_meta["subset_size"] == 32
    assert nncf_meta["calibration_id"] == "seeded-32"

    artifact = Artifact.from_dir(tmp_path / "out" / "openvino-int8")
    _check_ir(artifact, 1, "int8")
    ops = {op.get_type_name() for op in ov.Core().read_model(str(artifact.path)).get_ops()}
    assert "FakeQuantize" in ops  # really quantized
    runner = get_target("openvino-int8").load(artifact)
    with pytest.raises(ArtifactError, match=r"static batch 1; got a batch of 2.*--batch 2"):
        runner.infer(setup["x"][:2])
    runner.close()


def test_static_onnx_is_never_made_dynamic(setup, tmp_path):
    """A static-batch graph keeps the batch in its Reshape constants: reshaping it to a dynamic batch
    compiles but fails at run time, so the build refuses it and says which --batch to pass."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "static",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, *INPUT_SHAPE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, *INPUT_SHAPE])])
    path = tmp_path / "static.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    ctx = BuildContext(spec=setup["spec"], onnx_path=path, out_dir=tmp_path, batch=None, input_shape=INPUT_SHAPE)
    with pytest.raises(ArtifactError, match=r"static batch 1 but no --batch was given.*pass --batch 1"):
        get_target("openvino-fp32").build(ctx)


def test_runner_results_survive_later_calls(setup, fp32_artifact):
    """Zero-copy input and a reused request: returned arrays are the caller's, inputs are not kept."""
    runner = get_target("openvino-fp32").load(fp32_artifact, threads=2)
    try:
        x = setup["x"][:2].copy()
        first = runner.infer(x[0:1])[0]
        kept = first.copy()
        second = runner.infer(x[1:2])[0]
        x[:] = 0.0  # the caller reuses its input buffer
        runner.infer(x[0:1])
        assert np.array_equal(first, kept)  # not overwritten by the later calls
        for got, ref in ((first, setup["ref"][0:1]), (second, setup["ref"][1:2])):
            assert compare_outputs(got, ref)["max_abs_error"] < 1e-3  # as test_float_targets_match_pytorch
        # A strided view and float64 input give the same numbers (converted on our side, not the caller's).
        strided = np.repeat(setup["x"][0:1], 2, axis=3)[..., ::2]
        assert not strided.flags.c_contiguous
        for variant in (strided, setup["x"][0:1].astype(np.float64)):
            assert compare_outputs(runner.infer(variant)[0], setup["ref"][0:1])["max_abs_error"] < 1e-3
    finally:
        runner.close()


def test_a_missing_device_stops_the_run_before_the_export(tmp_path):
    """Issue 29: --device GPU where OpenVINO has no GPU failed after export, NNCF and the reference
    (1.5 min); it is refused before any work and --out is left as it was."""
    import openvino as ov

    from xcit_export.errors import UsageError
    from xcit_export.options import RunOptions
    from xcit_export.pipeline import run

    if any(d.startswith("GPU") for d in ov.Core().available_devices):
        pytest.skip("this machine has an OpenVINO GPU")
    for name in ("openvino-fp32", "openvino-int8"):  # a usage error: the CLI exits 2 (tests/test_cli.py)
        with pytest.raises(UsageError, match=r"device GPU is not available on this machine; available: CPU"):
            run(RunOptions("xcit_nano_12_p16_224", [name], out=tmp_path / "o", target_options={name: {"device": "GPU"}}))
    assert not (tmp_path / "o").exists()
