"""On the trained fixture, a clean run passes the gate and deliberately broken ones trip it."""

from __future__ import annotations

import numpy as np
import pytest

from xcit_export.data.sets import demo_dataset
from xcit_export.report.gate import gate
from xcit_export.options import Inputs, RunOptions
from xcit_export.pipeline import run
from xcit_export.models.zoo import IMAGENET_MEAN, IMAGENET_STD

FAST = dict(warmup=1, iterations=3)


def eval_data(config):
    """The run's evaluation set as arrays (the run itself streams it and keeps none)."""
    from xcit_export.data.sets import evaluation_set
    from xcit_export.models.zoo import get_spec

    return evaluation_set(config.eval, get_spec(config.model).preprocessing, config.eval_size, config.seed).load()


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    config = RunOptions("xcit_nano_12_p16_224", ["onnxruntime-fp32", "tensorrt-int8"], weights="demo",
                        out=out, eval="demo", eval_size=200, calib="demo", calib_size=64, batch=1, **FAST,
                        thresholds={"tensorrt-int8": {"thresholds": {"max_top1_drop": 0.01}}})
    inputs = Inputs()  # the run loads its calibration set here
    return run(config, inputs), config, inputs


def test_clean_run_passes(clean):
    report, _, _ = clean
    assert report["reference"]["accuracy"]["top1"] >= 0.85  # the fixture really classifies
    # tensorrt-int8 on a host: its precision-ready ONNX ran on a stand-in, no engine: built, judged, not run
    assert [(t["target"], t["status"], t["passed"]) for t in report["targets"]] == [
        ("onnxruntime-fp32", "ok", True), ("tensorrt-int8", "built", True)]
    checks = gate(report, report)
    assert checks and all(c.ok for c in checks)
    (skip,) = [c for c in checks if c.skipped and c.metric == "status"]
    assert skip.target == "tensorrt-int8" and skip.why.startswith("skipped: built, not run here (no engine built")


def test_wrong_normalisation_trips_the_gate(clean, tmp_path):
    report, config, _ = clean
    x, labels = eval_data(config)
    # The classic deployment bug: feeding [0, 1] pixels to a model that expects mean/std-normalised input.
    mean, std = np.array(IMAGENET_MEAN, np.float32)[:, None, None], np.array(IMAGENET_STD, np.float32)[:, None, None]
    broken = run(RunOptions("xcit_nano_12_p16_224", ["onnxruntime-fp32"], weights="demo", out=tmp_path, batch=1,
                            **FAST), Inputs(eval_data=(x * std + mean, labels)))
    failed = [c for c in gate(broken, report) if not c.ok]
    assert any(c.target == "onnxruntime-fp32" and c.metric == "top1" for c in failed)
    assert any(c.target == "tensorrt-int8" and c.metric == "present" for c in failed)


def test_int8_without_exclusions_trips_the_threshold(clean, tmp_path):
    _, config, inputs = clean
    # ModelOpt's default quantizes XCiT's residual Adds; our default keeps them unquantized.
    broken = run(RunOptions("xcit_nano_12_p16_224", ["tensorrt-int8"], weights="demo", out=tmp_path, batch=1, **FAST,
                            target_options={"tensorrt-int8": {"exclude_op_types": "none"}},
                            thresholds={"tensorrt-int8": {"thresholds": {"max_top1_drop": 0.01}}}),
                 Inputs(eval_data=eval_data(config), calib_data=inputs.calib_data))
    (entry,) = broken["targets"]
    assert entry["status"] == "built" and entry["passed"] is False
    # the recipe's drop, and the int8 default limits too (relative error mean 1.03, worst 1.87 when measured)
    assert {c["metric"] for c in entry["checks"] if not c["ok"]} >= {"rel_error_mean", "rel_error_max",
                                                                    "top1 drop vs PyTorch"}


def test_demo_eval_split_is_labelled_and_disjoint_from_calib():
    ev, cal = demo_dataset("eval"), demo_dataset("calib", option="--calib")
    assert ev.labelled and len(ev) >= 1000 and len(cal) >= 256
    assert not set(ev.item_hashes()) & set(cal.item_hashes())
