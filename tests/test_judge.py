"""Issue 29, item 1: the one verdict function (``xcit_export/verdict.py: judge``), on fabricated
entries and on figures computed from arrays. Pure and fast: no model, no runner."""

from __future__ import annotations

import numpy as np
import pytest

from xcit_export.evaluate.validate import compare_outputs
from xcit_export.evaluate.counts import AccuracyCounts
from xcit_export.verdict import (DEFAULT_LIMITS, Limits, describe, entry_limits, judge, limits_for, precision_class,
                                 worst_output)

RNG = np.random.default_rng(0)
LOGITS = RNG.standard_normal((16, 10)).astype(np.float32) * 3


def _entry(target=LOGITS, reference=LOGITS, precision="fp32", status="ok", **extra) -> dict:
    return {"target": "t", "precision": precision, "status": status, "accuracy": compare_outputs(target, reference),
            "latency": {"median_ms": 2.0, "batch": 1}, **extra}


def _features(cos_second: float | None = None, nan_second: bool = False) -> dict:
    maps = {f"features_s{s}": RNG.standard_normal((6, 8, 4, 4)).astype(np.float32) for s in (4, 8, 16, 32)}
    outputs = {}
    for name, ref in maps.items():
        out = ref + 1e-5 * RNG.standard_normal(ref.shape).astype(np.float32)
        if name == "features_s8" and cos_second is not None:
            out = RNG.standard_normal(ref.shape).astype(np.float32)  # unrelated to the reference
        if name == "features_s8" and nan_second:
            out[2, 0, 0, 0] = np.nan
        outputs[name] = compare_outputs(out, ref)
    return {"target": "t", "precision": "fp32", "status": "ok", "outputs": outputs,
            "accuracy": outputs["features_s4"], "latency": {"median_ms": 1.0}}


def test_three_times_the_logits_fails_every_precision_class_without_a_recipe():
    entry = _entry(LOGITS * 3)
    acc = entry["accuracy"]
    assert acc["top1_agreement"] == 1.0 and acc["cosine_min"] > 0.99999  # what passed before
    assert acc["rel_error_max"] == pytest.approx(2.0) and acc["rel_error_mean"] == pytest.approx(2.0)
    for precision in ("fp32", "fp16", "bf16", "int8"):
        v = judge({**entry, "precision": precision})
        assert v.status == "ok" and not v.passed, precision
        assert {c.metric for c in v.failures} == {"rel_error_max"} | ({"rel_error_mean"} if precision != "fp32" else set())
    # a shift of every logit is seen as well, and so is a permutation of the classes
    assert not judge(_entry(LOGITS + 3.0)).passed
    assert not judge(_entry(LOGITS[:, ::-1].copy())).passed
    # the same figures from sharded counts
    counts = (AccuracyCounts.of(LOGITS[:8] * 3, LOGITS[:8]) + AccuracyCounts.of(LOGITS[8:] * 3, LOGITS[8:])).to_dict()
    assert not judge({**entry, "accuracy": counts}).passed


def test_faithful_outputs_pass_their_class_defaults():
    noise = {"fp32": 1e-6, "fp16": 1e-3, "int8": 0.05}
    for precision, scale in noise.items():
        out = LOGITS + scale * np.abs(LOGITS).mean() * RNG.standard_normal(LOGITS.shape).astype(np.float32)
        v = judge(_entry(out, precision=precision))
        assert v.passed and v.status == "ok", (precision, [c.line() for c in v.failures])
        assert {c.metric for c in v.checks} == ({"rel_error_max", "cosine_min"} if precision == "fp32" else
                                                {"rel_error_max", "rel_error_mean", "cosine_mean"})
    # an INT8-sized error fails the fp32 class
    out = LOGITS + 0.05 * np.abs(LOGITS).mean() * RNG.standard_normal(LOGITS.shape).astype(np.float32)
    assert not judge(_entry(out, precision="fp32")).passed


def test_the_output_rule_comes_first_and_fails_the_status():
    bad = LOGITS.copy()
    bad[3, 2] = np.inf
    v = judge(_entry(bad), Limits({"min_top1_agreement": 0.0}))
    assert v.status == "failed" and not v.passed
    assert v.error.startswith("1 of 16 outputs are not finite") and [c.metric for c in v.checks] == ["outputs"]
    const = judge(_entry(np.tile(LOGITS[:1], (16, 1))))
    assert const.status == "failed" and "ignores its input" in const.error
    # a report entry written before the rule: status ok over NaN figures
    old = {"target": "t", "status": "ok", "accuracy": {"count": 4, "finite": False, "cosine_min": float("nan")}}
    assert judge(old).status == "failed"


def test_every_output_is_held():
    assert judge(_features()).passed
    far = judge(_features(cos_second=0.05))
    assert far.status == "ok" and not far.passed
    assert {c.metric for c in far.failures} == {"cosine_min [features_s8]", "rel_error_max [features_s8]"}
    nan = judge(_features(nan_second=True))
    assert nan.status == "failed" and nan.error.startswith("features_s8: 1 of 6 outputs are not finite")
    # the table shows the worst output
    assert worst_output(_features(cos_second=0.05)["outputs"]) == "features_s8"
    assert worst_output(_features(nan_second=True)["outputs"]) == "features_s8"


def test_a_wrong_output_count_fails():
    names = ["features_s4", "features_s8", "features_s16", "features_s32"]
    entry = _features()
    entry["outputs"] = {k: entry["outputs"][k] for k in names[:1]}
    v = judge(entry, outputs=names)
    assert v.status == "failed" and "3 of the reference's 4 outputs" in v.error and "features_s8" in v.error
    only_accuracy = {k: v for k, v in _features().items() if k != "outputs"}
    assert judge(only_accuracy, outputs=names).status == "failed"
    assert judge(_features(), outputs=names).passed
    assert judge(_entry(), outputs=["logits"]).passed


def test_a_recipe_overrides_a_default_key_by_key_and_its_figures_are_required():
    entry = _entry(LOGITS * 3)
    loose = limits_for("fp32", {"max_rel_error": 5.0, "min_top1_agreement": 0.99})
    assert loose.thresholds == {**DEFAULT_LIMITS["fp32"], "max_rel_error": 5.0, "min_top1_agreement": 0.99}
    assert judge(entry, loose).passed
    # a recipe naming other figures keeps the defaults: the 3x artifact still fails
    assert not judge(entry, limits_for("int8", {"max_top1_drop": 0.01, "min_top1_agreement": 0.97})).passed
    # a required figure missing from the entry fails; a default one is not applied
    missing = judge(_entry(), limits_for("fp32", {"min_top1": 0.5}))
    assert [(c.metric, c.why) for c in missing.failures] == [("top1", "missing from report")]
    old = {"target": "t", "status": "ok", "precision": "fp32",
           "accuracy": {k: v for k, v in compare_outputs(LOGITS, LOGITS).items() if not k.startswith("rel")}}
    assert judge(old).passed  # a report written before rel_error existed
    with pytest.raises(ValueError, match="unknown limit"):
        limits_for("fp32", {"min_cosin": 0.9})


def test_statuses_failed_built_and_missing():
    failed = judge({"target": "t", "status": "failed", "error": "ArtifactError: boom"})
    assert failed.status == "failed" and failed.checks[0].metric == "status" and "boom" in failed.checks[0].why
    assert judge({"target": "t", "accuracy": {"count": 2}}).status == "failed"  # no status recorded
    assert judge({"target": "t", "status": "skipped"}).status == "failed"
    built = judge({**_entry(), "status": "built", "latency": None}, limits_for("fp32", latency_budget={"median_ms": 5}))
    assert built.status == "built" and built.passed
    assert [c.skipped for c in built.checks if c.metric.startswith("latency")] == [True]
    nothing = judge({"target": "t", "status": "built", "note": "node cannot run it"})
    assert nothing.status == "built" and nothing.passed and nothing.checks[0].skipped
    assert judge({"target": "t", "status": "ok"}).status == "failed"  # ok, but nothing compared
    bad_built = judge({**_entry(LOGITS * 3), "status": "built"})
    assert bad_built.status == "built" and not bad_built.passed


def test_latency_budget():
    over = judge(_entry(), limits_for("fp32", latency_budget={"median_ms": 1.0}))
    assert not over.passed and over.failures[0].why == "over budget"
    assert judge(_entry(), limits_for("fp32", latency_budget={"median_ms": 3.0})).passed


def test_precision_class_and_entry_limits():
    assert precision_class("fp32") == "fp32" and precision_class("fp32", "bf16") == "fp16"
    assert precision_class("int8", "bf16") == "int8" and precision_class("fp16", "f32") == "fp16"
    assert precision_class(None) == "fp32"
    entry = _entry(precision="fp32", inference_precision="bf16")
    assert entry_limits(entry).thresholds == DEFAULT_LIMITS["fp16"]
    recorded = {**entry, "limits": limits_for("fp32", {"max_rel_error": 9.0}).to_dict()}
    assert entry_limits(recorded).thresholds["max_rel_error"] == 9.0
    assert entry_limits(recorded, {"thresholds": {"min_cosine": 0.5}}).thresholds["max_rel_error"] == DEFAULT_LIMITS["fp16"]["max_rel_error"]


def test_apply_and_describe():
    entry = _entry(LOGITS * 3)
    v = judge(entry, limits_for("fp32", {"min_top1_agreement": 0.97}))
    v.apply(entry)
    assert entry["status"] == "ok" and entry["passed"] is False and entry["limits"]["source"].startswith("recipe")
    assert {c["metric"] for c in entry["checks"]} == {"rel_error_max", "cosine_min", "top1_agreement"}
    (rel,) = v.failures
    assert describe(rel) == "relative error (worst input) 2 > 0.01"
    drop = judge({"target": "t", "status": "ok", "accuracy": {"count": 10, "top1": 0.5, "reference_top1": 0.531}},
                 Limits({"max_top1_drop": 0.01}, required=frozenset({"max_top1_drop"})))
    assert describe(drop.failures[0], "the budget") == "2.1 pt over the budget (top-1 drop 3.1 pt > 1.0 pt)"
    assert describe(drop.failures[0]) == "2.1 pt over the limit (top-1 drop 3.1 pt > 1.0 pt)"
    agree = judge({"target": "t", "status": "ok", "accuracy": {"count": 10, "top1_agreement": 0.95}},
                  Limits({"min_top1_agreement": 0.97}, required=frozenset({"min_top1_agreement"})))
    assert describe(agree.failures[0]) == "top-1 agreement 95.0% < 97.0%"
    none = judge({"target": "t", "status": "ok", "accuracy": {"count": 10}},
                 Limits({"min_cosine_mean": 0.99}, required=frozenset({"min_cosine_mean"})))
    assert describe(none.failures[0]) == "no mean cosine in the report"


def test_every_recipe_threshold_is_a_verdict_limit():
    from xcit_export.recipe import THRESHOLD_KEYS
    from xcit_export.verdict import LIMIT_KEYS

    assert set(THRESHOLD_KEYS) <= set(LIMIT_KEYS)
    for cls in DEFAULT_LIMITS.values():
        assert set(cls) <= set(THRESHOLD_KEYS)
