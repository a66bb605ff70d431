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

import re
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
from xcit_export.options import Inputs, RunOptions
from xcit_export.pipeline import run
from xcit_export.targets import all_targets, get_target
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


def test_every_target_shares_the_parsers():
    from xcit_export.targets.base import Boolean, Words

    booleans = {(n, o.name) for n, t in all_targets().items() for o in t.options.values() if isinstance(o.parse, Boolean)}
    assert {("tensorrt-fp32", "cuda_graph"), ("openvino-int8", "fast_bias_correction"),
            ("onnxruntime-int8", "per_channel")} <= booleans
    for name, option in booleans:
        assert get_target(name).parse_options({option: "off"})[option] is False
    assert get_target("tensorrt-fp16").parse_options({"keep_fp32_nodes": "a, b"})["keep_fp32_nodes"] == ["a", "b"]
    assert isinstance(get_target("tensorrt-fp16").options["keep_fp32_nodes"].parse, Words)
    with pytest.raises(XcitExportError, match=r"cuda_graph='garbage' is not a boolean"):  # was silently False
        get_target("tensorrt-fp32").parse_options({"cuda_graph": "garbage"})


def test_every_target_option_is_declared_typed_with_a_valid_example():
    """Each option: a parser that accepts its own output (so a second parse changes nothing), a
    default that is canonical, and an example other than the default (list-targets, test_keys)."""
    for name, target in all_targets().items():
        defaults = target.parse_options({})
        assert target.parse_options(defaults) == defaults, name
        for option in target.options.values():
            assert option.help and option.example is not None, (name, option.name)
            value = option.parse(option.example, option.name)
            assert value != option.default and option.parse(value, option.name) == value, (name, option.name)


def test_tensorrt_int8_methods_are_the_quantizers():
    pytest.importorskip("onnx")
    from xcit_export.quantize.precision import INT8_METHODS

    assert get_target("tensorrt-int8").options["calibration_method"].parse.choices == INT8_METHODS


def test_equivalent_spellings_give_one_build_key(tmp_path):
    """per_channel=yes, per_channel=true (the CLI reads JSON: True) and the default give one key."""
    from xcit_export.pipeline import build_keys

    def key(value):
        options = {"onnxruntime-int8": {"per_channel": value}} if value is not None else {}
        config = RunOptions("xcit_nano_12_p16_224", ["onnxruntime-int8"], out=tmp_path, input_size=(64, 64),
                            target_options=options)
        return build_keys(config, Inputs(calib_data=np.zeros((4, 3, 64, 64), np.float32)))["onnxruntime-int8"]

    assert key("yes") == key("true") == key(True) == key("ON") == key(None) != key("no")


def test_a_bad_target_option_value_is_a_usage_error_before_any_work(tmp_path):
    out = tmp_path / "o"
    t0 = time.perf_counter()
    result = CliRunner().invoke(main, ["-m", "xcit_nano_12_p16_224", "-t", "onnxruntime-int8", "--input-size", "64",
                                       "-O", "onnxruntime-int8:per_channel=maybe", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "per_channel='maybe' is not a boolean" in result.output and "Traceback" not in result.output
    assert time.perf_counter() - t0 < 30 and not out.exists()


def test_openvino_int8_max_drop_is_a_fraction(tmp_path):
    pytest.importorskip("nncf")
    from xcit_export.targets.openvino import _int8_settings

    def settings(max_drop):
        options = get_target("openvino-int8").parse_options({"max_drop": max_drop})
        ctx = BuildContext(spec=None, onnx_path=tmp_path / "unused.onnx", out_dir=tmp_path, batch=1,
                           input_shape=(3, 8, 8), calibration=np.zeros((32, 3, 8, 8), np.float32),
                           evaluation=(np.zeros((4, 3, 8, 8), np.float32), None), options=options)
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
    config = RunOptions("xcit_nano_12_p16_224", [target], out=tmp_path / "o", input_size=(64, 64),
                        target_options={target: options},
                        thresholds={target: {"thresholds": thresholds}} if thresholds else {})
    with pytest.raises(XcitExportError) as info:
        run(config)
    message = str(info.value)
    assert message.startswith(named) and "pass --eval" in message and "\n" not in message
    assert not (tmp_path / "o").exists()  # refused before any work: nothing created


def test_sensitivity_off_needs_no_eval():
    assert get_target("onnxruntime-int8").needs_evaluation({"sensitivity": "false"}) is None
    assert get_target("openvino-int8").needs_evaluation({}, max_top1_drop=0.01) is None  # NNCF reads max_drop only


def test_matrix_passes_the_recipe_eval_set(tmp_path, monkeypatch):
    """A recipe with ``[data] eval`` gives its set to a build that searches (it said 'pass --eval'),
    read whole, and to the others lazily, as a single run does; without one, the run is refused
    before any work with the same line as a single run."""
    from xcit_export.data.sets import LazyRows
    from xcit_export.engine import build as build_mod
    from xcit_export.engine import prepare as prepare_mod
    from xcit_export.recipe import load_recipe
    from xcit_export.scale.executor import LocalExecutor
    from xcit_export.scale.matrix import run_matrix

    seen = {}

    def fake_build(target, plan, prepared, onnx_path, onnx_key, evaluation, progress):
        seen[target.name] = evaluation
        raise XcitExportError("stopped by the test")

    monkeypatch.setattr(prepare_mod, "prepare_onnx", lambda plan, inputs, model, progress: (tmp_path / "m.onnx",
                                                                                             {"build_key": "k"}))
    monkeypatch.setattr(build_mod, "build_artifact", fake_build)
    body = ('[model]\nname = "xcit_nano_12_p16_224"\ninput_size = 32\nnum_classes = 10\n'
            '[targets.onnxruntime-int8]\noptions = { sensitivity = true }\n'
            '[targets.openvino-int8]\nthresholds = { max_top1_drop = 0.01 }\n'
            '[targets.onnxruntime-fp32]\nthresholds = { max_top1_drop = 0.01 }\n')
    with_eval = tmp_path / "with.toml"
    with_eval.write_text(body + '[data]\neval = "demo"\neval_size = 8\ncalib = "demo"\ncalib_size = 8\n')
    report = run_matrix(load_recipe(with_eval), LocalExecutor(), tmp_path / "a")
    assert len(seen["onnxruntime-int8"][0]) == 8 and not isinstance(seen["onnxruntime-int8"][0], LazyRows)
    assert isinstance(seen["openvino-int8"][0], LazyRows) and isinstance(seen["onnxruntime-fp32"][0], LazyRows)
    assert {c["target"]: c["error"] for c in report["cells"]}["onnxruntime-int8"] == "stopped by the test"
    seen.clear()
    without = tmp_path / "without.toml"
    without.write_text(body.split("[targets.openvino-int8]")[0] + '[data]\ncalib = "demo"\ncalib_size = 8\n')
    with pytest.raises(XcitExportError, match=r"^-O onnxruntime-int8:sensitivity=true measures accuracy"):
        run_matrix(load_recipe(without), LocalExecutor(), tmp_path / "b")
    assert not seen and not (tmp_path / "b").exists()


# --------------------------------------------------------------------------------------------
# A run's options, declared once (issue 28): the CLI, the API and recipes are derived from RunOptions
# --------------------------------------------------------------------------------------------

def test_the_cli_the_api_and_recipes_are_derived_from_run_options():
    import inspect

    import xcit_export
    from xcit_export.options import default_of, option_fields, recipe_keys
    from xcit_export.recipe import _schema

    params = {p.name: p for p in main.params}
    for f in option_fields():
        opt = f.metadata["opt"]
        if opt.flag:  # each flag once, with its declared help and default
            assert params[f.name].help.startswith(opt.help.rstrip(".")) and opt.flag in params[f.name].opts, f.name
            if isinstance(params[f.name].default, (bool, int, float, str)) and not params[f.name].multiple:
                assert params[f.name].default == default_of(f.name), f.name
    signature = inspect.signature(xcit_export.run)
    assert list(signature.parameters) == [f.name for f in option_fields()]
    assert all(signature.parameters[f.name].default == default_of(f.name) for f in option_fields()
               if f.name not in ("model", "options", "target_options", "thresholds"))
    assert all(f.name in xcit_export.run.__doc__ for f in option_fields())
    schema = _schema()
    for table, keys in recipe_keys().items():
        assert set(keys) == set(schema[table]) - ({"name"} if table == "model" else set()), table


def test_options_parse_once_into_canonical_values():
    options = RunOptions("xcit_nano_12_p16_224", "onnxruntime-fp32, openvino-fp32", input_size="64", seed="3",
                         eval_sizes="64,96x128", options=("device=CPU", "openvino-fp32:hint=throughput"))
    assert options.targets == ("onnxruntime-fp32", "openvino-fp32") and options.input_size == (64, 64)
    assert options.seed == 3 and options.eval_sizes == ((64, 64), (96, 128))
    assert options.options == {"device": "CPU", "openvino-fp32:hint": "throughput"}
    assert options.replace(seed=4).seed == 4 and options.latency.iterations == 50
    for bad, message in ((dict(eval_count=-3), "--eval-count -3 is out of range"),
                         (dict(calib_size=0), "--calib-size 0 is out of range"),
                         (dict(warmup=-1), "--warmup -1 is out of range"),
                         (dict(max_seconds=0), "--max-seconds 0 is out of range: it must be above 0"),
                         (dict(opset=16), "--opset 16 is out of range: it must be >= 17"),
                         (dict(output="pixels"), "--output 'pixels' is not one of"),
                         (dict(options=("nokey",)), "--option 'nokey' is not KEY=VALUE")):
        with pytest.raises(XcitExportError, match=re.escape(message)):
            RunOptions("xcit_nano_12_p16_224", **bad)
