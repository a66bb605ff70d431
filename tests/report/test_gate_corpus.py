"""Issue 29: ``gate`` and ``report merge`` on a corpus of fabricated reports (no model, no runner).

A failed target, a target absent from the baseline, a bad second output, a 3x artifact with no
recipe, a built-but-not-run target, a device-check report (today's and an older one), a matrix.json,
a merged comparison, an auto report without a winner: each gated through the CLI (exit status and
one line, never a traceback) and the API (``xcit_export.gate(...).passed`` agrees with
``load_report(...).passed``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import xcit_export
from xcit_export.cli import main
from xcit_export.errors import ReportError
from xcit_export.evaluate.validate import compare_outputs
from xcit_export.report.document import merge_reports, merged_markdown
from xcit_export.report.gate import gate

RNG = np.random.default_rng(7)
LOGITS = RNG.standard_normal((32, 10)).astype(np.float32) * 2
LABELS = LOGITS.argmax(1)


def _acc(out=LOGITS, ref=LOGITS, labels=LABELS) -> dict:
    return compare_outputs(out, ref, labels)


def _entry(name: str, precision: str = "fp32", status: str = "ok", out=LOGITS, **extra) -> dict:
    entry = {"target": name, "backend": name.split("-")[0], "precision": precision, "status": status,
             "latency": {"median_ms": 2.0, "p90_ms": 2.2, "batch": 1, "samples_ms": [2.0, 2.1]},
             "artifact": {"path": f"out/{name}/model.onnx", "size_bytes": 1000}, **extra}
    if status != "failed":
        entry["accuracy"] = _acc(out)
    return entry


def _report(*entries, count: int = 32, output_names=("logits",), **extra) -> dict:
    return {"schema_version": 1, "tool": {"name": "xcit-export", "version": "0"}, "created": "2026-12-01T00:00:00+00:00",
            "model": {"name": "xcit_nano_12_p16_224", "arch": "xcit", "num_classes": 10, "input_size": [64, 64],
                      "preprocessing": {}, "weights": "random", "seed": 0},
            "export": {"batch": 1, "opset": 18, "output_names": list(output_names)},
            "evaluation": {"description": f"{count} seeded random inputs", "count": count, "labelled": True},
            "latency_method": {"warmup": 1, "iterations": 2, "min_seconds": 0, "max_seconds": 30, "threads": 2},
            "device": {"cpu": "host cpu", "cpu_count": 2, "cpu_flags": [], "gpus": [], "os": "linux",
                       "python": "3.11", "libraries": {}},
            "reference": {"latency": {"median_ms": 5.0, "p90_ms": 5.5, "batch": 1, "samples_ms": [5.0]},
                          "accuracy": {"top1": 1.0, "top5": 1.0, "labelled_count": count}},
            "targets": list(entries), **extra}


def _write(tmp_path: Path, name: str, report: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(report))
    return str(path)


def _gate(tmp_path: Path, report: dict, baseline: dict, *extra: str):
    res = CliRunner().invoke(main, ["gate", "--baseline", _write(tmp_path, "base.json", baseline),
                                    _write(tmp_path, "report.json", report), *extra])
    assert "Traceback" not in res.output and not isinstance(res.exception, Exception) or isinstance(
        res.exception, SystemExit), res.output
    return res


def _api_agrees(tmp_path: Path, report: dict, baseline: dict) -> bool:
    path = _write(tmp_path, "api.json", report)
    held = xcit_export.gate(path, _write(tmp_path, "api-base.json", baseline)).passed
    if report.get("kind") in (None, "run"):
        assert held is False or xcit_export.load_report(path).passed is True
    return held


def test_a_failed_target_fails_the_gate_against_itself(tmp_path):
    report = _report(_entry("tensorrt-fp32", status="failed", error="ArtifactError: boom"))
    res = _gate(tmp_path, report, report)
    assert res.exit_code == 1 and "FAIL tensorrt-fp32: status = failed" in res.output and "boom" in res.output
    assert not _api_agrees(tmp_path, report, report)
    assert not xcit_export.load_report(_write(tmp_path, "r.json", report)).passed


def test_a_failed_target_absent_from_the_baseline_fails(tmp_path):
    base = _report(_entry("onnxruntime-fp32"))
    report = _report(_entry("onnxruntime-fp32"), _entry("tensorrt-fp32", status="failed", error="no engine"))
    res = _gate(tmp_path, report, base)
    assert res.exit_code == 1 and [line for line in res.output.splitlines() if line.startswith("FAIL")] == [
        "FAIL tensorrt-fp32: status = failed target did not run (no engine) (limit ok)"]
    assert not _api_agrees(tmp_path, report, base)


def test_a_3x_target_absent_from_the_baseline_gets_the_default_limits(tmp_path):
    base = _report(_entry("onnxruntime-fp32"))
    report = _report(_entry("onnxruntime-fp32"), _entry("openvino-fp32", out=3 * LOGITS))
    res = _gate(tmp_path, report, base)
    assert res.exit_code == 1 and "FAIL openvino-fp32: rel_error_max = 2" in res.output
    assert _gate(tmp_path, base, base).exit_code == 0


def _features(bad: str | None) -> dict:
    names = ["features_s4", "features_s8", "features_s16", "features_s32"]
    outputs = {}
    for name in names:
        ref = RNG.standard_normal((8, 4, 4, 4)).astype(np.float32)
        out = ref + 1e-6 * RNG.standard_normal(ref.shape).astype(np.float32)
        if name == "features_s8" and bad == "far":
            out = RNG.standard_normal(ref.shape).astype(np.float32)
        if name == "features_s8" and bad == "nan":
            out[3, 0, 0, 0] = np.nan
        outputs[name] = compare_outputs(out, ref)
    entry = _entry("onnxruntime-fp32")
    entry.update(accuracy=outputs["features_s4"], outputs=outputs)
    return _report(entry, count=8, output_names=names)


@pytest.mark.parametrize("bad, line", [("far", "FAIL onnxruntime-fp32: cosine_min [features_s8]"),
                                       ("nan", "FAIL onnxruntime-fp32: outputs features_s8 = broken 1 of 8 outputs "
                                               "are not finite")])
def test_a_bad_second_output_fails(tmp_path, bad, line):
    good = _features(None)
    assert _gate(tmp_path, good, good).exit_code == 0
    res = _gate(tmp_path, _features(bad), good)
    assert res.exit_code == 1 and line in res.output, res.output
    # a report that compared only the first of four outputs fails the count
    short = _features(None)
    short["targets"][0]["outputs"] = {"features_s4": short["targets"][0]["outputs"]["features_s4"]}
    res = _gate(tmp_path, short, good)
    assert res.exit_code == 1 and "3 of the reference's 4 outputs" in res.output


def test_a_built_target_is_a_skip_not_a_pass_and_exits_0(tmp_path):
    built = _entry("tensorrt-int8", precision="int8", status="built", note="no engine built: no GPU")
    built.pop("latency")
    report = _report(_entry("onnxruntime-fp32"), built)
    res = _gate(tmp_path, report, report)
    assert res.exit_code == 0 and "SKIP tensorrt-int8: status = built skipped: built, not run here" in res.output
    assert xcit_export.load_report(_write(tmp_path, "r.json", report)).passed
    bad = _report(_entry("onnxruntime-fp32"), {**built, "accuracy": _acc(3 * LOGITS)})
    assert _gate(tmp_path, bad, report).exit_code == 1  # the stand-in's figures are still judged



def test_a_built_target_is_never_shown_as_a_pass(tmp_path):
    """The terminal table and report.html over a run with a built (not run) TensorRT target: its row
    says 'built, not run' even when its stand-in's checks hold, and the HTML banner is no green PASS."""
    from xcit_export.console import results_table
    from xcit_export.report.html import verdict as html_verdict
    from xcit_export.verdict import judge

    built = _entry("tensorrt-int8", precision="int8", status="built", note="no engine built: no GPU")
    built.pop("latency")
    report = _report(_entry("onnxruntime-fp32"), built)
    for entry in report["targets"]:
        judge(entry).apply(entry)
    assert [e["passed"] for e in report["targets"]] == [True, True]
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(results_table(report))
    rows = {line.split()[0]: line for line in console.file.getvalue().splitlines() if line.strip()}
    assert "built, not run" in rows["tensorrt-int8"] and "pass" not in rows["tensorrt-int8"]
    assert "ok, pass" in rows["onnxruntime-fp32"]
    banner = html_verdict(report)
    assert 'class="verdict warn"' in banner and "PASS" not in banner and "run it on the device" in banner
    report["targets"] = report["targets"][:1]
    assert 'class="verdict ok"' in html_verdict(report)

def _device_report(old_format: bool = False, scale: float = 1.0) -> dict:
    acc = _acc(scale * LOGITS[:16], LOGITS[:16], LABELS[:16])
    if old_format:  # written before issue 29: check/threshold/passed, no limits, no precision on the entry
        checks = [{"check": "cosine_min", "value": acc["cosine_min"], "threshold": 0.9999, "passed": True}]
        entry = {"target": "tensorrt-fp32", "status": "ok", "device": "Orin", "accuracy": acc, "latency": {},
                 "checks": checks}
    else:
        from xcit_export.verdict import judge, limits_for

        entry = {"target": "tensorrt-fp32", "precision": "fp32", "status": "ok", "device": "Orin", "accuracy": acc,
                 "latency": {"median_ms": 1.0, "batch": 1}}
        verdict = judge(entry, limits_for("fp32", {"min_cosine": 0.9999}))
        verdict.apply(entry)
        checks = entry["checks"]
    return {"schema_version": 1, "kind": "device-check", "tool": {"name": "xcit-export", "version": "0"},
            "passed": entry.get("passed", True), "model": {"name": "xcit_nano_12_p16_224", "num_classes": 10,
                                                           "input_size": [64, 64]},
            "target": "tensorrt-fp32", "precision": "fp32", "runner": "Orin GPU", "engine": {"status": "built"},
            "device": {"cpu": "ARM", "cpu_count": 8, "cpu_flags": [], "gpus": ["Orin"]},
            "targets": [entry], "golden_count": 16, "checks": checks,
            "latency": {"end_to_end": {"median_ms": 1.0, "batch": 1}, "what": "engine"}}


@pytest.mark.parametrize("old_format", [False, True])
def test_gate_reads_a_device_check_report(tmp_path, old_format):
    device = _device_report(old_format)
    host = _report(_entry("tensorrt-fp32"))
    res = _gate(tmp_path, device, host)  # a device report against the host's: figures are not comparable
    assert res.exit_code == 0, res.output
    assert "SKIP tensorrt-fp32: baseline = None skipped: not comparable: the report was evaluated on 16 golden " \
           "inputs of a device bundle, the baseline on 32 inputs of a run" in res.output
    assert _gate(tmp_path, device, device).exit_code == 0  # against an earlier device-check of the same bundle
    bad = _device_report(old_format, scale=3.0)
    res = _gate(tmp_path, bad, device)
    assert res.exit_code == 1 and "FAIL tensorrt-fp32: rel_error_max" in res.output


def _matrix(scale: float = 1.0, no_winner: bool = False) -> dict:
    cell = {"model": "xcit_nano_12_p16_224", "target": "onnxruntime-fp32", "precision": "fp32", "device_kind": "any",
            "status": "ok", "accuracy": _acc(scale * LOGITS), "latency": {"median_ms": 1.0, "batch": 1}}
    report = {"schema_version": 1, "kind": "matrix", "recipe": "r.toml", "executor": "local", "shards": 1, "nodes": [],
              "models": {"xcit_nano_12_p16_224": {"evaluation": {"count": 32},
                                                  "export": {"output_names": ["logits"]}}},
              "cells": [cell]}
    if no_winner:
        report["recommendations"] = [{"model": "xcit_nano_12_p16_224", "device_kind": "any", "target": None,
                                      "lines": ["No recommendation"], "candidates": []}]
    return report


def test_gate_and_merge_on_a_matrix_json(tmp_path):
    matrix = _matrix()
    res = _gate(tmp_path, matrix, matrix)
    assert res.exit_code == 0 and "gate: " in res.output, res.output
    res = _gate(tmp_path, _matrix(scale=3.0), matrix)
    assert res.exit_code == 1 and "FAIL xcit_nano_12_p16_224/onnxruntime-fp32@any: rel_error_max" in res.output
    assert _gate(tmp_path, _matrix(no_winner=True), matrix).exit_code == 1
    res = _gate(tmp_path, matrix, _report(_entry("onnxruntime-fp32")))
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        "error: the report is a matrix report and the baseline a run report; gate a matrix.json against a "
        "matrix.json, a report.json against a report.json"]
    path = _write(tmp_path, "matrix.json", matrix)
    res = CliRunner().invoke(main, ["report", "merge", path, "--out", str(tmp_path / "m")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines() == [
        f"error: '{path}' is a matrix report (matrix.json): merge takes report.json files of one model from "
        f"several devices; a matrix already compares its cells (matrix.md, matrix.html)"]


def test_gate_refuses_a_merged_comparison_in_one_line(tmp_path):
    merged = merge_reports([_report(_entry("onnxruntime-fp32"))])
    res = _gate(tmp_path, merged, merged)
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1 and "merged comparison" in res.output


def test_an_auto_report_without_a_winner_fails_unless_allowed(tmp_path):
    rec = {"target": None, "lines": ["No recommendation"], "candidates": [], "budget": {}}
    report = _report(_entry("onnxruntime-fp32"), recommendation=rec)
    res = _gate(tmp_path, report, report)
    assert res.exit_code == 1 and "FAIL recommendation: winner = None none: no candidate holds" in res.output
    assert not xcit_export.load_report(_write(tmp_path, "r.json", report)).passed
    allowed = _report(_entry("onnxruntime-fp32"), recommendation={**rec, "allow_no_winner": True})
    assert _gate(tmp_path, allowed, allowed).exit_code == 0
    assert xcit_export.load_report(_write(tmp_path, "a.json", allowed)).passed


def test_merge_shows_counts_and_compares_drops_on_the_same_inputs(tmp_path):
    host = _report(_entry("tensorrt-fp32"), count=1000)
    host["targets"][0]["accuracy"].update(top1=0.80, reference_top1=0.81, labelled_count=1000)
    device = _device_report()
    device["targets"][0]["accuracy"].update(top1=0.5625, reference_top1=0.5625, labelled_count=16)
    text = merged_markdown(merge_reports([host, device], ["host", "jetson"]))
    assert "| host | tensorrt-fp32 | ok | 80.00% of 1000 | +1.0 of 1000 |" in text
    assert "| jetson | tensorrt-fp32 | ok | 56.25% of 16 | +0.0 of 16 |" in text
    assert "- jetson: evaluated on 16 golden inputs of the bundle" in text
    other = copy.deepcopy(host)
    other["model"]["input_size"] = [96, 96]
    with pytest.raises(ReportError, match=r"different models: xcit_nano_12_p16_224 \(10 classes, input 64x64\) and "
                                          r"xcit_nano_12_p16_224 \(10 classes, input 96x96\)"):
        merge_reports([host, other])


def test_merge_reads_an_older_device_check_report_into_every_form(tmp_path):
    from xcit_export.report.document import html_page

    host = _report(_entry("tensorrt-fp32"))
    res = CliRunner().invoke(main, ["report", "merge", _write(tmp_path, "host.json", host),
                                    _write(tmp_path, "dev.json", _device_report(old_format=True)), "--out",
                                    str(tmp_path / "m"), "--label", "host", "--label", "jetson"])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "m" / "merged.html").read_text()
    assert "device-check: xcit_nano_12_p16_224 / tensorrt-fp32" in page and "cosine_min" in page
    merged = json.loads((tmp_path / "m" / "merged.json").read_text())
    assert [t["passed"] for r in merged["reports"] for t in r["targets"]] == [True, True]
    assert "FAIL" in html_page(merge_reports([host, _device_report(scale=3.0)]))
