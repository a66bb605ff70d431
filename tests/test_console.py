"""Terminal output: counts reach the display, logs get plain text, the results are a table, not Markdown."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from rich.console import Console

from xcit_export.console import (Progress, TerminalProgress, counting, latency_runs, print_report, renamed, stepper,
                                 top_ops_line, track)
from xcit_export.evaluate.validate import LatencyOptions, measure_latency, run_in_batches

ANSI = re.compile(r"\x1b\[")
MODEL = "xcit_nano_12_p16_224"


class Recorder:
    """A Progress that keeps what it was told."""

    def __init__(self):
        self.messages, self.steps = [], []

    def __call__(self, message):
        self.messages.append(message)

    def step(self, label, done, total):
        self.steps.append((label, done, total))


def test_plain_callables_get_no_wrapper_and_step_objects_get_counts():
    def plain(_msg):
        return None

    def infer(x):
        return [x * 2]

    assert counting(plain, "x", infer, 10) is infer and stepper(plain, "x") is None
    assert list(track(plain, "x", [1, 2], 2)) == [1, 2]
    rec = Recorder()
    assert isinstance(rec, Progress) and not isinstance(plain, Progress)
    x = np.zeros((7, 3), np.float32)
    out = run_in_batches(counting(rec, "eval", infer, len(x)), x, 3)  # batches 3, 3, 1 padded to 3
    assert out[0].shape == (7, 3)
    assert rec.steps == [("eval", 0, 7), ("eval", 3, 7), ("eval", 6, 7), ("eval", 7, 7)]  # never past the items
    rec.steps.clear()
    opts = LatencyOptions(warmup=2, iterations=5)
    measure_latency(latency_runs(rec, "lat", infer, opts), x[:1], opts)
    assert rec.steps[0] == ("lat", 0, 8) and rec.steps[-1] == ("lat", 8, 8)  # first + warm-up + timed runs
    rec.steps.clear()
    assert list(track(rec, "t", "abc", 3)) == ["a", "b", "c"] and rec.steps[-1] == ("t", 3, 3)
    named = renamed(rec, "onnxruntime-fp32", "onnxruntime-fp32@batch1")
    named("onnxruntime-fp32: building")
    named.step("onnxruntime-fp32: outputs", 1, 2)
    assert rec.messages[-1] == "onnxruntime-fp32@batch1: building"
    assert rec.steps[-1] == ("onnxruntime-fp32@batch1: outputs", 1, 2)


def test_log_output_is_plain_with_counts_rate_and_eta():
    buf = io.StringIO()
    clock = [100.0]
    with TerminalProgress(Console(file=buf, force_terminal=False, width=200), clock=lambda: clock[0],
                          log_every=10) as progress:
        progress("Data: preprocessing 4000 evaluation images")
        progress.step("decoding evaluation images", 0, 4000)
        for done in range(100, 4001, 100):
            clock[0] += 1.0  # 100 images a second
            progress.step("decoding evaluation images", done, 4000)
        progress("Reference: PyTorch on 4000 evaluation inputs")
        import warnings

        warnings.warn("--calib-size 32 is small", UserWarning)
    text = buf.getvalue()
    assert not ANSI.search(text), text
    lines = text.splitlines()
    assert lines[0].endswith(" Data: preprocessing 4000 evaluation images")
    counts = [line for line in lines if line.startswith("  decoding evaluation images:")]
    assert counts[0] == "  decoding evaluation images: 1,000/4,000, 100.0/s, ETA 30.0 s"
    assert len(counts) == 3  # one line every ten seconds, none once finished
    assert "  done decoding evaluation images: 4,000 in 40.0 s (100.0/s)" in lines
    assert lines[-2].endswith(" Reference: PyTorch on 4000 evaluation inputs")
    assert lines[-1] == "warning: --calib-size 32 is small"  # one line, not Python's file:line form


def test_terminal_gets_bars_and_quiet_gets_nothing():
    buf = io.StringIO()
    with TerminalProgress(Console(file=buf, force_terminal=True, width=120, color_system="standard")) as progress:
        assert progress.live
        progress("onnxruntime-fp32: validating accuracy")
        for done in range(0, 33, 8):
            progress.step("onnxruntime-fp32: outputs", done, 32)
    text = buf.getvalue()
    assert ANSI.search(text)
    assert "done onnxruntime-fp32: outputs: 32 in" in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    buf = io.StringIO()
    with TerminalProgress(Console(file=buf, force_terminal=True), quiet=True) as progress:
        progress("stage")
        progress.step("loop", 1, 2)
    assert buf.getvalue() == ""


def _report():
    """A report with what the terminal shows: a recommendation, a failed target, a profile."""
    ops = [{"op_type": t, "ms": s * 10, "share": s} for t, s in
           [("MatMul", 0.41), ("LayerNormalization", 0.12), ("Gelu", 0.09), ("Add", 0.05)]]
    return {
        "model": {"name": MODEL, "weights": "demo", "num_classes": 10, "input_size": [224, 224]},
        "export": {"batch": "dynamic"}, "latency_method": {"threads": 2},
        "evaluation": {"description": "demo (0123456789ab)", "count": 300},
        "device": {"cpu": "Test CPU", "cpu_flags": []},
        "reference": {"latency": {"median_ms": 40.0, "p90_ms": 42.0, "batch": 1}, "accuracy": {"top1": 0.9}},
        "recommendation": {"target": "onnxruntime-fp32", "artifact": "out/m/onnxruntime-fp32/model.onnx",
                           "lines": ["Recommended: onnxruntime-fp32 (10.00 ms)", "openvino-fp32: 1.20x slower"]},
        "targets": [
            {"target": "onnxruntime-fp32", "status": "ok", "accuracy": {"top1": 0.9, "top1_agreement": 1.0,
                                                                      "cosine_min": 0.999999, "max_abs_error": 1e-6},
             "latency": {"median_ms": 10.0, "p90_ms": 11.0, "batch": 1}, "speedup_vs_pytorch": 4.0,
             "artifact": {"size_bytes": 12_000_000},
             "op_profile": {"source": "onnxruntime", "total_ms": 9.0, "wall_ms": 12.0, "batch": 1, "ops": ops,
                            "node_cost_us": 3.5, "nodes": 600, "raw_total_ms": 11.1, "unprofiled_ms": 9.5}},
            {"target": "openvino-int8", "status": "failed", "error": "NNCF failed: out of memory"},
        ],
    }


def test_results_are_a_table_with_the_recommendation_on_top():
    buf = io.StringIO()
    print_report(_report(), Console(file=buf, force_terminal=False, width=200), json_path="out/m/report.json")
    text = buf.getvalue()
    assert not ANSI.search(text) and "|---" not in text and "**" not in text
    lines = text.splitlines()
    assert lines[0] == "Recommended: onnxruntime-fp32 (10.00 ms)"
    row = next(line for line in lines if line.startswith("onnxruntime-fp32 "))
    assert row.split() == ["onnxruntime-fp32", "ok", "90.00%", "100.00%", "0.999999", "1.00e-06", "10.00", "11.00",
                           "4.00x", "12.00"]
    assert next(line for line in lines if line.startswith("openvino-int8 ")).split()[:2] == ["openvino-int8", "failed"]
    assert "openvino-int8: NNCF failed: out of memory" in lines
    # The per-op profile: one short line, three op types; the correction story only with --verbose.
    assert "  onnxruntime-fp32: MatMul 41%, LayerNormalization 12%, Gelu 9%" in lines
    assert "profiler's own" not in text
    assert lines[-1] == "report: out/m/report.json (also report.md, report.html)"
    buf = io.StringIO()
    print_report(_report(), Console(file=buf, force_terminal=False, width=200), verbose=True)
    assert "after removing the profiler's own 3.5 us from each of 600 nodes" in buf.getvalue()
    assert "Add 5%" in buf.getvalue()
    assert top_ops_line({"target": "t", "op_profile_error": "RuntimeError: x"}) == "t: no per-op profile (RuntimeError: x)"
    buf = io.StringIO()
    print_report(_report(), Console(file=buf, force_terminal=True, color_system="standard", width=200))
    assert "\x1b[1;31mfailed" in buf.getvalue() and "\x1b[32mok" in buf.getvalue()  # colour on a terminal


def test_decoding_reports_every_image(tmp_path):
    """ImageSet.load(on_decoded=...) counts up to every selected image, unreadable ones skipped included."""
    from PIL import Image

    from xcit_export.data.sets import evaluation_set
    from xcit_export.models.zoo import get_spec

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 40), (i * 90, 0, 0)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    pp = get_spec(MODEL).with_overrides(input_size=(32, 32)).preprocessing
    rec = Recorder()
    images = evaluation_set(str(tmp_path), pp, on_bad_image="skip")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        x, y = images.load(on_decoded=stepper(rec, "decoding evaluation images"))
    counts = [s[1:] for s in rec.steps]  # per decoded batch, every image (skipped ones too) counted by the end
    assert len(x) == 4 and counts[0] == (0, 5) and counts[-1] == (5, 5)
    assert [d for d, _ in counts] == sorted(d for d, _ in counts)
