"""Reports (JSON, Markdown, HTML), merging, and the accuracy-regression gate."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from xcit_export.cli import main
from xcit_export.errors import ReportError
from xcit_export.report.gate import gate, read_report
from xcit_export.options import RunOptions
from xcit_export.pipeline import run
from xcit_export.report.document import html_page, merge_reports


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep")
    return run(RunOptions("xcit_nano_12_p16_224", ["onnxruntime-fp32"], out=out, input_size=(64, 64),
                          eval_count=6, warmup=1, iterations=5, latency_batches=(1, 2),
                          thresholds={"onnxruntime-fp32": {"thresholds": {"min_cosine": 0.9999},
                                                           "latency_budget": {"median_ms": 1e6}}})), out


def test_report_files_and_schema(real_report):
    report, out = real_report
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["schema_version"] == 1 and on_disk["model"]["name"] == "xcit_nano_12_p16_224"
    entry = on_disk["targets"][0]
    lat = entry["latency"]
    for key in ("min_ms", "median_ms", "mean_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "throughput_ips",
                "first_inference_ms"):
        assert lat[key] > 0
    assert len(lat["samples_ms"]) == lat["iterations"] >= 5
    assert [row["batch"] for row in entry["latency_sweep"]] == [1, 2]
    # the recipe's min_cosine over the fp32 defaults (verdict.DEFAULT_LIMITS: the relative error stays)
    assert entry["passed"] is True and {c["metric"] for c in entry["checks"]} == {"cosine_min", "rel_error_max",
                                                                                  "latency median_ms"}
    assert entry["limits"]["thresholds"]["min_cosine"] == 0.9999 and entry["limits"]["required"] == ["min_cosine"]
    assert entry["load_ms"] > 0 and "memory_mb" in entry
    dev = on_disk["device"]
    assert {"cpu", "cpu_flags", "os", "libraries", "gpus"} <= set(dev) and "onnxruntime" in dev["libraries"]
    assert "| onnxruntime-fp32 | ok |" in (out / "report.md").read_text()


def test_html_is_self_contained(real_report):
    report, out = real_report
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 2  # latency, op profile (one target: no
    # accuracy-vs-latency plot, its one point is in the table)
    # No external fetches: only in-page references (SVG marker ids), no scripts, a CSP that forbids loading.
    assert not re.search(r'(src|href)\s*=\s*"(?!#)', page) and "<script" not in page
    assert "default-src 'none'" in page
    assert "onnxruntime-fp32" in page and "pytorch-eager" in page


def test_merge_two_devices(tmp_path, real_report):
    report, out = real_report
    other = copy.deepcopy(report)
    other["device"]["cpu"] = "Jetson Orin (ARM Cortex-A78AE)"
    other_path = tmp_path / "orin.json"
    other_path.write_text(json.dumps(other))
    res = CliRunner().invoke(main, ["report", "merge", str(out / "report.json"), str(other_path), "--out",
                                    str(tmp_path / "m"), "--label", "host", "--label", "orin"])
    assert res.exit_code == 0, res.output
    merged = json.loads((tmp_path / "m" / "merged.json").read_text())
    assert [r["device_label"] for r in merged["reports"]] == ["host", "orin"]
    assert "| orin | onnxruntime-fp32 | ok |" in (tmp_path / "m" / "merged.md").read_text()
    assert "Device: orin" in (tmp_path / "m" / "merged.html").read_text()
    vit = copy.deepcopy(report)
    vit["model"]["name"] = "vit_small_patch16_224"
    with pytest.raises(ReportError, match="different models"):
        merge_reports([report, vit])


def _degrade(report, **acc):
    worse = copy.deepcopy(report)
    worse["targets"][0]["accuracy"].update(acc)
    return worse


def test_gate_passes_clean_and_fails_regressions(real_report):
    report, _ = real_report
    assert all(c.ok for c in gate(report, report))
    failed = [c for c in gate(_degrade(report, top1_agreement=0.5, cosine_mean=0.9), report) if not c.ok]
    assert {c.metric for c in failed} == {"top1_agreement", "cosine_mean"}
    missing = copy.deepcopy(report)
    missing["targets"] = []
    assert [c.why for c in gate(missing, report) if not c.ok] == ["in the baseline but not in the report"]
    broken = copy.deepcopy(report)
    broken["targets"][0].update(status="failed", error="boom", checks=[])
    assert [(c.metric, c.ok) for c in gate(broken, report)] == [("status", False)]


def test_gate_cli(tmp_path, real_report):
    report, out = real_report
    base = tmp_path / "baseline.json"
    runner = CliRunner()
    res = runner.invoke(main, ["gate", "--baseline", str(base), str(out / "report.json"), "--update-baseline"])
    assert res.exit_code == 0 and base.exists()
    res = runner.invoke(main, ["gate", "--baseline", str(base), str(out / "report.json")])
    assert res.exit_code == 0 and "0 failed" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_degrade(report, top1_agreement=0.2)))
    res = runner.invoke(main, ["gate", "--baseline", str(base), str(bad)])
    assert res.exit_code == 1
    assert [line for line in res.output.splitlines() if line.startswith("FAIL")] == [
        "FAIL onnxruntime-fp32: top1_agreement = 0.2 dropped from baseline 1 by more than 0.01 (limit 0.99)"]


def test_gate_refuses_other_model_and_newer_schema(tmp_path, real_report):
    report, _ = real_report
    other = copy.deepcopy(report)
    other["model"]["num_classes"] = 10
    with pytest.raises(ReportError, match="baseline is for model xcit_nano_12_p16_224 .10 classes"):
        gate(report, other)
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**report, "schema_version": 99}))
    with pytest.raises(ReportError, match="schema version 99, newer than this xcit-export reads"):
        read_report(newer)
    with pytest.raises(ReportError, match="not an xcit-export report"):
        (tmp_path / "x.json").write_text("{}")
        read_report(tmp_path / "x.json")


def test_budget_without_measurement_is_skipped_not_passed(real_report):
    from xcit_export.report.gate import threshold_checks

    report, _ = real_report
    entry = copy.deepcopy(report["targets"][0])
    entry.pop("latency")
    entry["device"] = "CPU (onnxruntime stand-in)"
    (check,) = [c for c in threshold_checks(entry, {}, {"median_ms": 5.0}) if c.metric.startswith("latency")]
    assert check.ok and check.skipped and "not measured on this device" in check.why
