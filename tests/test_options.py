"""Issue 22, items 2 and 4: one meaning for every option, and options that need data refuse to run
without it.

* one option parser (``targets/base.py``) for every target: lists, strict booleans, ranged numbers;
* ``max_drop`` is a fraction everywhere (openvino-int8 included), and a value in points is refused;
* ``--target auto`` ranks candidates timed at different batches per image, and says so;
* the latency loop honours --iterations / --min-seconds, and its cap is explicit (--max-seconds);
* sensitivity, the budget search and NNCF accuracy control refuse to run without --eval, and a
  recipe matrix with ``[data] eval`` passes that set to them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from xcit_export.cli import main
from xcit_export.errors import XcitExportError
from xcit_export.evaluate import validate
from xcit_export.evaluate.auto import Budget, recommend
from xcit_export.evaluate.validate import LatencyOptions, measure_latency
from xcit_export.pipeline import RunConfig, run
from xcit_export.targets import get_target
from xcit_export.targets.base import BuildContext
from xcit_export.values import as_bool, as_drop, as_int, as_list

# --------------------------------------------------------------------------------------------
# One parser
# --------------------------------------------------------------------------------------------


def test_option_parser_values():
    assert as_list("MatMul,Conv") == ["MatMul", "Conv"] and as_list(["MatMul", " Conv "]) == ["MatMul", "Conv"]
    assert as_list("name") == ["name"] and as_list(None) == [] and as_list("") == []
    for text, value in (("true", True), ("False", False), ("1", True), ("0", False), ("yes", True), ("NO", False),
                        (True, True), (0, False)):
        assert as_bool(text, "x") is value, text
    with pytest.raises(XcitExportError, match=r"option quantize_attention='maybe' is not a boolean"):
        as_bool("maybe", "quantize_attention")
    assert as_int("8", "golden_count") == 8
    with pytest.raises(XcitExportError, match=r"option search_images=0 is out of range: it must be >= 1"):
        as_int("0", "search_images")
    with pytest.raises(XcitExportError, match=r"is not a whole number"):
        as_int("2.5", "search_images")


def test_max_drop_is_a_fraction_and_points_are_refused():
    assert as_drop("0.01") == 0.01 and as_drop(0) == 0.0 and as_drop(None) is None
    with pytest.raises(XcitExportError, match=r"^max_drop=1.0 is read as a fraction \(100 points\); for 1 point pass "
                                              r"0.01$"):
        as_drop("1.0")
    with pytest.raises(XcitExportError, match=r"max_drop=2 is read as a fraction \(200 points\); for 2 points pass "
                                              r"0.02"):
        as_drop(2)
    for bad in ("150", "-0.1", "nan", "lots", True):
        with pytest.raises(XcitExportError, match=r"max_drop="):
            as_drop(bad)


def _tiny_onnx(path: Path) -> Path:
    """x (1x4) -> MatMul(x, W) -> MatMul(h, h^T): one weight MatMul, one activation-by-activation."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="weight_mm"),
             helper.make_node("Transpose", ["h"], ["ht"], name="t"),
             helper.make_node("MatMul", ["h", "ht"], ["y"], name="act_mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


class _Stop(Exception):
    pass


@pytest.mark.parametrize("options, op_types, excluded", [
    ({"op_types": "MatMul,Conv", "exclude_nodes": "weight_mm"}, ["MatMul", "Conv"], {"weight_mm", "act_mm"}),
    ({"quantize_attention": "False"}, ["MatMul", "Gemm", "Conv"], {"act_mm"}),  # "False" was truthy
    ({"quantize_attention": "true", "per_channel": "false"}, ["MatMul", "Gemm", "Conv"], set()),
])
def test_onnxruntime_int8_reads_lists_and_booleans(tmp_path, monkeypatch, options, op_types, excluded):
    from xcit_export.quantize import ort_int8

    seen = {}

    def fake_quantize(src, dst, calibration, fmt, **kw):
        seen.update(kw)
        raise _Stop

    monkeypatch.setattr(ort_int8, "quantize", fake_quantize)
    ctx = BuildContext(spec=None, onnx_path=_tiny_onnx(tmp_path / "m.onnx"), out_dir=tmp_path, batch=None,
                       input_shape=(4,), calibration=np.zeros((2, 1, 4), np.float32), options=options)
    with pytest.raises(_Stop):
        get_target("onnxruntime-int8").build(ctx)
    assert seen["op_types"] == op_types  # not ['M', 'a', 't', ...]
    assert set(seen["exclude_nodes"]) == excluded
    assert seen["per_channel"] is (options.get("per_channel") != "false")


def test_onnxruntime_int8_refuses_a_bad_boolean(tmp_path):
    ctx = BuildContext(spec=None, onnx_path=_tiny_onnx(tmp_path / "m.onnx"), out_dir=tmp_path, batch=None,
                       input_shape=(4,), calibration=np.zeros((2, 1, 4), np.float32),
                       options={"quantize_attention": "sometimes"})
    with pytest.raises(XcitExportError, match=r"quantize_attention='sometimes' is not a boolean"):
        get_target("onnxruntime-int8").build(ctx)


def test_tensorrt_and_openvino_share_the_parser():
    from xcit_export.targets.openvino import _parse_bool
    from xcit_export.targets.tensorrt.options import _as_bool, _as_list

    assert _as_list("a, b") == ["a", "b"] and _as_bool("off") is False and _parse_bool("x", "yes") is True
    with pytest.raises(XcitExportError, match=r"cuda_graph='garbage' is not a boolean"):  # was silently False
        _as_bool("garbage", "cuda_graph")


def test_openvino_int8_max_drop_is_a_fraction(tmp_path):
    pytest.importorskip("nncf")
    from xcit_export.targets.openvino import _int8_settings

    def settings(max_drop):
        ctx = BuildContext(spec=None, onnx_path=tmp_path / "unused.onnx", out_dir=tmp_path, batch=1,
                           input_shape=(3, 8, 8), calibration=np.zeros((32, 3, 8, 8), np.float32),
                           evaluation=(np.zeros((4, 3, 8, 8), np.float32), None), options={"max_drop": max_drop})
        return _int8_settings(ctx)["max_drop"]

    assert settings("0.01") == 0.01  # one point, as for onnxruntime-int8 and TensorRT
    with pytest.raises(XcitExportError, match=r"max_drop=1.0 is read as a fraction \(100 points\); for 1 point "
                                              r"pass 0.01"):
        settings("1.0")


# --------------------------------------------------------------------------------------------
# --target auto --batch N: like with like
# --------------------------------------------------------------------------------------------

def test_auto_ranks_per_image_across_batches_and_says_so():
    def entry(name, median, batch):
        return {"target": name, "status": "ok", "artifact": {"path": f"/o/{name}"},
                "latency": {"median_ms": median, "batch": batch},
                "accuracy": {"count": 8, "nonfinite_count": 0, "top1_agreement": 1.0, "cosine_mean": 1.0}}

    # batch 8: 16 ms for 8 images (2 ms each); its batch-1 variant: 3 ms for one image.
    rec = recommend([entry("openvino-fp32", 16.0, 8), entry("openvino-fp32@batch1", 3.0, 1)], Budget(),
                    labelled=False)
    assert rec["target"] == "openvino-fp32" and rec["latency"]["per_image_ms"] == 2.0
    assert rec["lines"][0].startswith("Recommended: openvino-fp32 (16.00 ms median at batch 8, 2.00 ms per image")
    assert "Ranked by median latency per image (the batch's median / its batch size): candidates were timed at " \
           "batches 1, 8" in rec["lines"]
    why = {c["target"]: c["why"] for c in rec["candidates"]}
    assert why["openvino-fp32@batch1"] == "1.50x slower than openvino-fp32 (per image, batch 1 vs 8)"
    same = recommend([entry("a", 2.0, 1), entry("b", 3.0, 1)], Budget(), labelled=False)
    assert same["target"] == "a" and "Ranked by median latency at batch 1" in same["lines"]


# --------------------------------------------------------------------------------------------
# The latency loop: honour --iterations / --min-seconds; the cap is explicit
# --------------------------------------------------------------------------------------------

def test_latency_loop_honours_what_was_asked(monkeypatch):
    monkeypatch.setattr(validate, "DEFAULT_MAX_SECONDS", 0.05)  # the 30 s default cap, shrunk for the test

    def infer(x):
        time.sleep(0.001)

    x = np.zeros(1)
    default = measure_latency(infer, x, LatencyOptions(warmup=0, iterations=50))
    assert default.capped and default.iterations < 50  # the default run is bounded by the cap
    more = measure_latency(infer, x, LatencyOptions(warmup=0, iterations=80))
    assert not more.capped and more.iterations == 80  # asked for more than the default: all of it
    t0 = time.perf_counter()
    longer = measure_latency(infer, x, LatencyOptions(warmup=0, iterations=1, min_seconds=0.15))
    assert time.perf_counter() - t0 >= 0.15 and not longer.capped  # min_seconds above the default cap
    explicit = measure_latency(infer, x, LatencyOptions(warmup=0, iterations=10 ** 6, max_seconds=0.02))
    assert explicit.capped and explicit.iterations < 10 ** 6 and explicit.to_dict()["capped"] is True
    with pytest.raises(XcitExportError, match=r"--min-seconds 2.0 is above --max-seconds 1.0"):
        LatencyOptions(min_seconds=2.0, max_seconds=1.0).check()


def test_cli_exposes_max_seconds():
    result = CliRunner().invoke(main, ["--model", "xcit_nano_12_p16_224", "-t", "onnxruntime-fp32",
                                       "--min-seconds", "5", "--max-seconds", "1"])
    assert result.exit_code != 0 and "--min-seconds 5.0 is above --max-seconds 1.0" in result.output


# --------------------------------------------------------------------------------------------
# Options that need data refuse to run without it (before any work), and get it in a matrix
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target, options, thresholds, named", [
    ("onnxruntime-int8", {"sensitivity": "true"}, {}, "-O onnxruntime-int8:sensitivity=true"),
    ("onnxruntime-int8", {"max_drop": "0.01"}, {}, "-O onnxruntime-int8:max_drop"),
    ("onnxruntime-int8", {}, {"max_top1_drop": 0.01}, "the recipe's max_top1_drop for onnxruntime-int8"),
    ("openvino-int8", {"max_drop": "0.01"}, {}, "-O openvino-int8:max_drop"),
    ("tensorrt-int8", {"sensitivity": "yes"}, {}, "-O tensorrt-int8:sensitivity=true"),
])
def test_search_without_eval_is_refused(tmp_path, target, options, thresholds, named):
    config = RunConfig(model="xcit_nano_12_p16_224", targets=[target], out_dir=tmp_path, input_size=(64, 64),
                       target_options={target: options},
                       thresholds={target: {"thresholds": thresholds}} if thresholds else {})
    with pytest.raises(XcitExportError) as info:
        run(config)
    message = str(info.value)
    assert message.startswith(named) and "pass --eval" in message and "\n" not in message
    assert not (tmp_path / "onnx").exists()  # refused before any work


def test_sensitivity_off_needs_no_eval():
    assert get_target("onnxruntime-int8").needs_evaluation({"sensitivity": "false"}) is None
    assert get_target("openvino-int8").needs_evaluation({}, max_top1_drop=0.01) is None  # NNCF reads max_drop only


def test_matrix_passes_the_recipe_eval_set(tmp_path, monkeypatch):
    """A recipe with ``[data] eval`` gives its set to a build that searches (it said 'pass --eval');
    without one, the build is refused with the same line as a single run."""
    from xcit_export import pipeline
    from xcit_export.recipe import load_recipe
    from xcit_export.scale.executor import LocalExecutor
    from xcit_export.scale.matrix import _build_model

    seen = {}

    def fake_build(target, config, spec, onnx_path, onnx_key, input_shape, calib, evaluation, threads, progress):
        seen[target.name] = evaluation
        raise XcitExportError("stopped by the test")

    monkeypatch.setattr(pipeline, "prepare_onnx", lambda config, model, spec, progress: (tmp_path / "m.onnx",
                                                                                          {"build_key": "k"}))
    monkeypatch.setattr(pipeline, "build_artifact", fake_build)
    body = ('[model]\nname = "xcit_nano_12_p16_224"\ninput_size = 32\nnum_classes = 10\n'
            '[targets.onnxruntime-int8]\noptions = { sensitivity = true }\n'
            '[targets.openvino-int8]\nthresholds = { max_top1_drop = 0.01 }\n'
            '[targets.onnxruntime-fp32]\nthresholds = { max_top1_drop = 0.01 }\n')
    names = ["onnxruntime-int8", "openvino-int8", "onnxruntime-fp32"]
    with_eval = tmp_path / "with.toml"
    with_eval.write_text(body + '[data]\neval = "demo"\neval_size = 8\ncalib = "demo"\ncalib_size = 8\n')
    built = _build_model(load_recipe(with_eval), "xcit_nano_12_p16_224", names, tmp_path / "a", False, 1,
                         LocalExecutor(), lambda msg: None)
    assert seen["onnxruntime-int8"] is not None and len(seen["onnxruntime-int8"][0]) == 8
    assert seen["openvino-int8"] is None and seen["onnxruntime-fp32"] is None  # they do not search
    assert built["failed"]["onnxruntime-int8"] == "stopped by the test"
    seen.clear()
    without = tmp_path / "without.toml"
    without.write_text(body.split("[targets.openvino-int8]")[0] + '[data]\ncalib = "demo"\ncalib_size = 8\n')
    built = _build_model(load_recipe(without), "xcit_nano_12_p16_224", names[:1], tmp_path / "b", False, 1,
                         LocalExecutor(), lambda msg: None)
    assert "onnxruntime-int8" not in seen
    assert built["failed"]["onnxruntime-int8"].startswith("-O onnxruntime-int8:sensitivity=true measures accuracy")
