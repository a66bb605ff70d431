"""Issue 22, item 1: a broken output never passes.

A corpus of well-formed but broken models, each run through ``-t`` (with and without a recipe
threshold), ``--target auto`` and ``gate``:

* NaN weights in a checkpoint: the run stops before any export, naming the checkpoint;
* a zeroed head (weight 0, bias kept): the reference is constant, agreement means nothing: a
  warning in every report form, and no target passes or is recommended;
* a head scaled so logits exceed FP16's 65504, run by an FP16 ONNX on onnxruntime (a test target,
  really producing inf): that target fails, with a line counting the non-finite outputs;
* a target that permutes the classes: finite, so it runs, but misses every agreement threshold and
  is never recommended.

Plus the rule itself (``validate.output_problems``) on the figures, the sharded counts, and gate
on a report written before the rule (status ``ok`` over NaN figures).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from xcit_export import export as ex
from xcit_export.cli import main
from xcit_export.errors import BrokenReferenceError
from xcit_export.evaluate.auto import Budget, recommend
from xcit_export.evaluate.validate import compare_outputs, output_problems, per_sample_errors
from xcit_export.models.weights import load_model
from xcit_export.models.zoo import get_spec
from xcit_export.options import RunOptions
from xcit_export.pipeline import run
from xcit_export.report.gate import gate, threshold_checks
from xcit_export.evaluate.counts import AccuracyCounts
from xcit_export.targets import TARGETS, Artifact, Target
from xcit_export.targets.onnxruntime import OnnxRuntimeRunner

MODEL = "xcit_nano_12_p16_224"
FAST = dict(warmup=1, iterations=2)
CLASSES = 10


# --------------------------------------------------------------------------------------------
# The rule on plain arrays (no model): fast, and each fails on the code before the fix
# --------------------------------------------------------------------------------------------

def test_cosine_is_never_perfect_for_zero_or_nonfinite_outputs():
    r = np.random.default_rng(0).standard_normal((8, 10)).astype(np.float32)
    zero = compare_outputs(np.zeros_like(r), r)
    assert zero["cosine_min"] == 0.0 and zero["cosine_mean"] == 0.0  # was 1.0
    nan = compare_outputs(np.full_like(r, np.nan), r)
    assert np.isnan(nan["cosine_min"]) and np.isnan(nan["cosine_mean"])  # was 1.0
    assert nan["nonfinite_count"] == 8 and not nan["finite"]
    both_zero = per_sample_errors(np.zeros((2, 3)), np.zeros((2, 3)))[3]
    assert both_zero.tolist() == [1.0, 1.0]  # identical outputs do agree
    inf = r.copy()
    inf[2, 1] = np.inf
    acc = compare_outputs(inf, r)
    assert acc["nonfinite_count"] == 1 and acc["max_abs_error"] == np.inf
    assert output_problems(acc) == ["1 of 8 outputs are not finite (NaN or inf): the artifact is broken (often an "
                                    "FP16 overflow), whatever its agreement figures say"]
    assert output_problems(compare_outputs(r * 1.0001, r)) == []
    # a constant output against an input-dependent reference, and a constant reference
    assert "ignores its input" in output_problems(compare_outputs(np.ones_like(r), r))[0]
    assert "agreement with it means nothing" in output_problems(compare_outputs(r, np.ones_like(r)))[0]


def test_sharded_counts_take_nonfinite_outputs_and_match_one_pass():
    rng = np.random.default_rng(1)
    r = rng.standard_normal((12, 10)).astype(np.float32)
    for bad in (np.nan, np.inf):
        t = r + 1e-3
        t[5, 3] = bad  # Fraction(nan) raised here before
        total = AccuracyCounts()
        for lo, hi in ((0, 4), (4, 8), (8, 12)):
            total = total + AccuracyCounts.of(t[lo:hi], r[lo:hi])
        whole = compare_outputs(t, r)
        shard = total.to_dict()
        for key in ("count", "finite", "nonfinite_count", "constant", "reference_constant", "top1_agreement"):
            assert shard[key] == whole[key], key
        for key in ("max_abs_error", "mean_abs_error", "cosine_mean", "cosine_min"):
            assert np.isnan(shard[key]) == np.isnan(whole[key]) and (np.isnan(whole[key]) or shard[key] == whole[key])
        assert output_problems(shard) and output_problems(shard) == output_problems(whole)
    # constant across shards: decided on the whole set, not per shard
    const = np.tile(r[:1], (12, 1))
    parts = AccuracyCounts.of(const[:6], r[:6]) + AccuracyCounts.of(const[6:], r[6:])
    assert parts.to_dict()["constant"] is True
    split = AccuracyCounts.of(const[:6], r[:6]) + AccuracyCounts.of(r[6:], r[6:])
    assert split.to_dict()["constant"] is False


def test_every_decider_applies_the_rule_to_an_old_report():
    """A report entry that says ``ok`` over NaN figures (written before the rule, or edited) fails
    the recipe thresholds, gate and --target auto alike; min_cosine NaN never holds."""
    nan_entry = {"target": "openvino-fp16", "status": "ok", "latency": {"median_ms": 1.0, "batch": 1},
                 "accuracy": {"count": 4, "finite": False, "top1_agreement": 0.0, "top1": 0.5, "reference_top1": 0.5,
                              "cosine_mean": float("nan"),
                              "cosine_min": float("nan"), "max_abs_error": float("inf")}}
    good = {"target": "onnxruntime-fp32", "status": "ok", "latency": {"median_ms": 3.0, "batch": 1},
            "accuracy": {"count": 4, "finite": True, "nonfinite_count": 0, "top1_agreement": 1.0,
                         "top1": 0.5, "reference_top1": 0.5,
                         "cosine_mean": 1.0, "cosine_min": 1.0, "max_abs_error": 0.0}}
    checks = threshold_checks(nan_entry, {"min_cosine": 0.99}, {})
    assert checks and not any(c.ok for c in checks) and "not finite" in checks[0].why
    # gate with no thresholds at all still fails it
    report = {"model": {}, "targets": [nan_entry, good]}
    failing = [c for c in gate(report, None) if not c.ok]
    assert [c.target for c in failing] == ["openvino-fp16"]
    # --target auto: the fast broken candidate is out, the slower finite one wins
    for labelled in (False, True):
        rec = recommend([nan_entry, good], Budget(), labelled=labelled, classifies=True)
        assert rec["target"] == "onnxruntime-fp32"
        assert "not finite" in next(c["why"] for c in rec["candidates"] if c["target"] == "openvino-fp16")


# --------------------------------------------------------------------------------------------
# The corpus: broken checkpoints and two test-registered targets
# --------------------------------------------------------------------------------------------

class _Fp16Runner(OnnxRuntimeRunner):
    """An FP16 ONNX (inputs and outputs float16) on onnxruntime CPU: what an FP16 deployment
    returns, infinities included, handed back as float32 like every runner's outputs."""

    def infer(self, x):
        return [o.astype(np.float32) for o in super().infer(x.astype(np.float16))]


def _build_fp16(ctx):
    import onnx
    from onnxconverter_common import float16

    dst = ctx.out_dir / "model.fp16.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "truncated to 1e-07" for each tiny weight
        model = float16.convert_float_to_float16(onnx.load(str(ctx.onnx_path)), keep_io_types=False,
                                                 max_finite_val=65504.0)
    onnx.save(model, str(dst))
    return Artifact(target="verdict-fp16", path=dst, files=[dst], metadata={"precision": "fp16"})


class _PermutedRunner(OnnxRuntimeRunner):
    """The FP32 ONNX with its class axis reversed: finite, input-dependent, and wrong."""

    def infer(self, x):
        return [o[:, ::-1].copy() for o in super().infer(x)]


def _build_copy(ctx):
    dst = ctx.out_dir / "model.onnx"
    shutil.copyfile(ctx.onnx_path, dst)
    return Artifact(target="verdict-permuted", path=dst, files=[dst], metadata={"precision": "fp32"})


class _ScaledRunner(OnnxRuntimeRunner):
    """The FP32 ONNX with every output 3x: same classes, same directions (agreement 1.0, cosine 1.0)."""

    def infer(self, x):
        return [3.0 * o for o in super().infer(x)]


class _DroppingRunner(OnnxRuntimeRunner):
    """The FP32 ONNX returning its first output only (a deployment that lost the other outputs)."""

    def infer(self, x):
        return super().infer(x)[:1]


TEST_TARGETS = (
    Target("verdict-fp16", "onnxruntime", "fp16", "test: FP16 ONNX on onnxruntime CPU", _build_fp16,
           lambda artifact, threads=None, **_: _Fp16Runner(artifact.path, threads), requires=("onnxconverter_common",)),
    Target("verdict-permuted", "onnxruntime", "fp32", "test: classes reversed", _build_copy,
           lambda artifact, threads=None, **_: _PermutedRunner(artifact.path, threads)),
    Target("verdict-scaled", "onnxruntime", "fp32", "test: outputs 3x", _build_copy,
           lambda artifact, threads=None, **_: _ScaledRunner(artifact.path, threads)),
    Target("verdict-dropped", "onnxruntime", "fp32", "test: first output only", _build_copy,
           lambda artifact, threads=None, **_: _DroppingRunner(artifact.path, threads)),
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Checkpoints of the nano model (64x64, 10 classes) and the test targets, registered for
    this module only (``--target auto`` elsewhere must not see them)."""
    folder = tmp_path_factory.mktemp("corpus")
    spec = get_spec(MODEL).with_overrides(CLASSES, (64, 64))
    paths = {}
    for name, edit in {"nan": lambda m: m.blocks[3].mlp.fc1.weight.view(-1)[7].fill_(float("nan")),
                       "zero_head": lambda m: m.head.weight.zero_(),
                       "fp16_overflow": lambda m: (m.head.weight.mul_(1e6), m.head.bias.mul_(1e6))}.items():
        model = load_model(spec, "random", 0)
        with torch.no_grad():
            edit(model)
        paths[name] = folder / f"{name}.pth"
        torch.save(model.state_dict(), paths[name])
    for t in TEST_TARGETS:
        TARGETS[t.name] = t
    yield paths
    for t in TEST_TARGETS:
        TARGETS.pop(t.name, None)


def _config(out: Path, weights, targets, auto: bool = False, **kw) -> RunOptions:
    which = dict(targets="auto", candidates=targets) if auto else dict(targets=targets)
    return RunOptions(MODEL, **which, out=out, weights=str(weights), num_classes=CLASSES, input_size=(64, 64),
                      batch=1, eval_count=6, **FAST, profile=False, **kw)


def test_nan_weights_stop_the_run_naming_the_checkpoint(corpus, tmp_path):
    for auto in (False, True):
        with pytest.raises(BrokenReferenceError, match=r"has 1 non-finite weight value.*checkpoint is broken, not "
                                                        r"any export"):
            run(_config(tmp_path, corpus["nan"], ["onnxruntime-fp32"], auto=auto))
    assert not (tmp_path / "report.json").exists()  # nothing for gate to pass
    result = CliRunner().invoke(main, ["--model", MODEL, "-t", "onnxruntime-fp32", "--weights", str(corpus["nan"]),
                                       "--num-classes", str(CLASSES), "--input-size", "64", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "non-finite weight" in result.output and "export is wrong" not in result.output
    # The parity check (library use) looks at the reference before blaming the export.
    x = np.zeros((2, 3, 64, 64), np.float32)
    with pytest.raises(BrokenReferenceError, match=r"the model itself is broken .*not the export"):
        ex.check_parity(Path("unused.onnx"), x, [np.full((2, CLASSES), np.nan, np.float32)])


@pytest.fixture(scope="module")
def overflow_report(corpus, tmp_path_factory):
    """``-t onnxruntime-fp32,verdict-fp16,verdict-permuted`` on the FP16-overflow model with recipe
    thresholds, then ``--target auto`` over the same candidates (reusing the builds)."""
    out = tmp_path_factory.mktemp("overflow")
    limits = {"thresholds": {"min_cosine": 0.99, "min_top1_agreement": 0.9}}
    targets = ["onnxruntime-fp32", "verdict-fp16", "verdict-permuted"]
    report = run(_config(out, corpus["fp16_overflow"], targets, thresholds={t: limits for t in targets}))
    written = {name: (out / name).read_text() for name in ("report.json", "report.md")}
    auto = run(_config(out, corpus["fp16_overflow"], targets, auto=True))  # same folder: builds reused
    return report, auto, written


def test_fp16_overflow_fails_everywhere(overflow_report):
    report, auto, written = overflow_report
    by = {t["target"]: t for t in report["targets"]}
    fp16 = by["verdict-fp16"]
    assert fp16["accuracy"]["nonfinite_count"] == 6 and not fp16["accuracy"]["finite"]  # really inf here
    assert fp16["status"] == "failed" and fp16["error"].startswith("6 of 6 outputs are not finite")
    assert fp16["passed"] is False and "not finite" in fp16["checks"][0]["why"]  # recipe threshold
    assert by["onnxruntime-fp32"]["status"] == "ok" and by["onnxruntime-fp32"]["passed"] is True
    assert "6 of 6 outputs are not finite" in written["report.md"]
    stored = json.loads(written["report.json"])
    failed = {c.target for c in gate(stored, None) if not c.ok}
    assert "verdict-fp16" in failed and "onnxruntime-fp32" not in failed
    rec = auto["recommendation"]
    assert rec["target"] == "onnxruntime-fp32"
    why = {c["target"]: c["why"] for c in rec["candidates"]}
    assert "not finite" in why["verdict-fp16"]


def test_permuted_classes_pass_nothing(overflow_report):
    report, auto, _ = overflow_report
    entry = next(t for t in report["targets"] if t["target"] == "verdict-permuted")
    assert entry["status"] == "ok"  # finite and input-dependent: it ran, and its figures say how wrong it is
    assert entry["accuracy"]["top1_agreement"] == 0.0 and entry["passed"] is False
    assert {c["metric"] for c in entry["checks"] if not c["ok"]} == {"cosine_min", "top1_agreement", "rel_error_max"}
    assert "verdict-permuted" in {c.target for c in gate(report, None) if not c.ok}
    why = {c["target"]: c["why"] for c in auto["recommendation"]["candidates"]}
    assert why["verdict-permuted"].startswith("top-1 agreement 0.0%")


def test_zeroed_head_warns_and_nothing_passes(corpus, tmp_path):
    limits = {"verdict-permuted": {"thresholds": {"min_top1_agreement": 0.5}}}
    report = run(_config(tmp_path, corpus["zero_head"], ["onnxruntime-fp32", "verdict-permuted"], thresholds=limits))
    assert len(report["warnings"]) == 1 and "agreement with it means nothing" in report["warnings"][0]
    for t in report["targets"]:
        assert t["status"] == "failed" and "agreement with it means nothing" in t["error"], t["target"]
    assert "Warning: the PyTorch reference" in (tmp_path / "report.md").read_text()
    assert "Warning: the PyTorch reference" in (tmp_path / "report.html").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["warnings"] == report["warnings"]
    assert {c.target for c in gate(report, None) if not c.ok} == {"onnxruntime-fp32", "verdict-permuted"}
    auto = run(_config(tmp_path, corpus["zero_head"], ["onnxruntime-fp32"], auto=True))  # builds reused
    assert auto["recommendation"]["target"] is None and auto["warnings"]


# --------------------------------------------------------------------------------------------
# Issue 29: no recipe still means limits; every output; the exit status
# --------------------------------------------------------------------------------------------

def test_three_times_the_logits_fails_without_a_recipe(corpus, tmp_path):
    """Logits 3x PyTorch's (agreement 1.0, cosine 1.0) fail the default limits in a single run (exit 1),
    in gate, and are never recommended."""
    report = run(_config(tmp_path, "random", ["onnxruntime-fp32", "verdict-scaled"]))
    by = {t["target"]: t for t in report["targets"]}
    scaled = by["verdict-scaled"]
    assert scaled["accuracy"]["top1_agreement"] == 1.0 and scaled["accuracy"]["cosine_min"] > 0.99999
    assert scaled["accuracy"]["rel_error_max"] == pytest.approx(2.0, rel=1e-4)
    assert scaled["status"] == "ok" and scaled["passed"] is False
    assert [c["metric"] for c in scaled["checks"] if not c["ok"]] == ["rel_error_max"]
    assert scaled["limits"]["source"] == "defaults for fp32"
    assert by["onnxruntime-fp32"]["passed"] is True
    assert {c.target for c in gate(report, None) if not c.ok} == {"verdict-scaled"}
    assert {c.target for c in gate(report, report) if not c.ok} == {"verdict-scaled"}
    auto = run(_config(tmp_path, "random", ["onnxruntime-fp32", "verdict-scaled"], auto=True))
    assert auto["recommendation"]["target"].startswith("onnxruntime-fp32")
    why = {c["target"]: c["why"] for c in auto["recommendation"]["candidates"]}
    assert why["verdict-scaled"].startswith("its own limits: relative error (worst input) 2")
    res = CliRunner().invoke(main, ["--model", MODEL, "-t", "verdict-scaled", "--num-classes", str(CLASSES),
                                    "--input-size", "64", "--batch", "1", "--eval-count", "6", "--warmup", "1",
                                    "--iterations", "2", "--no-profile", "--out", str(tmp_path / "cli"), "-q"])
    assert res.exit_code == 1 and "FAIL verdict-scaled: rel_error_max" in res.output, res.output


def test_a_runner_with_fewer_outputs_fails(corpus, tmp_path):
    """--output features has four outputs; a runner returning one is failed, not compared on the first."""
    report = run(_config(tmp_path, "random", ["onnxruntime-fp32", "verdict-dropped"], output="features"))
    by = {t["target"]: t for t in report["targets"]}
    assert by["onnxruntime-fp32"]["status"] == "ok" and by["onnxruntime-fp32"]["passed"] is True
    assert len(by["onnxruntime-fp32"]["outputs"]) == 4 and by["onnxruntime-fp32"]["worst_output"].startswith("features")
    dropped = by["verdict-dropped"]
    assert dropped["status"] == "failed" and dropped["passed"] is False
    assert "returned 1 output(s) where PyTorch gives 4 (features_s4, features_s8, features_s16, features_s32)" in \
        dropped["error"]
    assert "verdict-dropped" in {c.target for c in gate(report, None) if not c.ok}
