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
    # The final line comes when the count reaches the total, before the next stage starts.
    done = lines.index("  done decoding evaluation images: 4,000 in 40.0 s (100.0/s)")
    assert lines[done + 1].endswith(" Reference: PyTorch on 4000 evaluation inputs") and done + 1 == len(lines) - 2
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
    assert row.split() == ["onnxruntime-fp32", "ok", "90.0%", "100%", "0.99999", "1.0e-06", "10.0", "11.0",
                           "4.00x", "12.0"]
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


def _wide_report():
    """Every kind of row the table shows: long names, a failed and a built target, a threshold miss."""
    rep = _report()
    acc = {"top1": 0.8867, "top1_agreement": 0.99667, "cosine_min": 0.9980712, "max_abs_error": 0.0155}
    rep["targets"] += [
        {"target": "onnxruntime-int8@batch1", "status": "ok", "passed": False, "accuracy": dict(acc),
         "latency": {"median_ms": 123.456, "p90_ms": 1234.5}, "speedup_vs_pytorch": 0.324,
         "artifact": {"size_bytes": 3_340_000}},
        {"target": "tensorrt-rtx-int8@batch1", "status": "built", "accuracy": dict(acc),
         "artifact": {"size_bytes": 3_340_000}},
        {"target": "openvino-fp16", "status": "some-new-status", "accuracy": {**acc, "top1_agreement": 0.99999},
         "latency": {"median_ms": 7.0, "p90_ms": 7.5}, "speedup_vs_pytorch": 5.71},
    ]
    return rep


def _figures(rep):
    """Every target name and figure the table must show whole, as the table formats them."""
    from xcit_export.console import fmt_cosine, fmt_ms, fmt_percent, fmt_speedup

    names, figures = ["pytorch-eager"], [fmt_ms(40.0), fmt_ms(42.0)]
    for t in rep["targets"]:
        names.append(t["target"])
        acc, lat = t.get("accuracy") or {}, t.get("latency") or {}
        figures += [fmt_percent(acc.get("top1")), fmt_percent(acc.get("top1_agreement")),
                    fmt_cosine(acc.get("cosine_min")), fmt_ms(lat.get("median_ms")), fmt_ms(lat.get("p90_ms")),
                    fmt_speedup(t.get("speedup_vs_pytorch"))]
        if acc.get("max_abs_error") is not None:
            figures.append(f"{acc['max_abs_error']:.1e}")
        if (t.get("artifact") or {}).get("size_bytes"):
            figures.append(f"{t['artifact']['size_bytes'] / 1e6:.1f}")
    return names, [f for f in figures if f != "-"]


@pytest.mark.parametrize("width", [80, 100, 160, 44])
def test_results_fit_the_width_with_every_name_and_figure_whole(width):
    rep = _wide_report()
    console = Console(width=width, record=True, file=io.StringIO(), force_terminal=True, color_system=None)
    print_report(rep, console)
    text = console.export_text()
    table = text[:text.index("agree: top-1 agreement")]  # the table(s), before the column key
    assert "…" not in text and max(len(line.rstrip()) for line in table.splitlines()) <= width
    cells = set(table.split())
    names, figures = _figures(rep)
    for name in names:
        assert name in cells, (width, name, table)
    for figure in figures:
        assert figure in cells, (width, figure, table)
    for status in ("ok, FAIL", "built", "some-new-status", "failed", "reference"):
        assert status in table
    assert "0.99999" in cells and "99.9%" in cells  # never rounded up to a perfect 1.00000 / 100%


def test_a_log_gets_one_plain_table(monkeypatch):
    """Through a pipe (a CI log): no ANSI codes, one row per target, whatever COLUMNS says."""
    from xcit_export.console import make_console

    monkeypatch.setenv("COLUMNS", "80")
    buf = io.StringIO()
    console = make_console()
    console.file = buf
    assert not console.is_terminal
    print_report(_wide_report(), console)
    text = buf.getvalue()
    assert not ANSI.search(text)
    assert re.search(r"^onnxruntime-int8@batch1 +ok, FAIL +88\.7% +99\.7% +0\.99807 +1\.5e-02 +123 +1,234 +0\.32x +3\.3$",
                     text, re.M), text


def test_sizes_reach_the_terminal():
    rep = _report()
    rep["sizes"] = {"sizes": ["224x224", "384x384"], "patch_size": 16, "slopes": {"pytorch": 1.02, "onnxruntime-fp32": 0.98},
                    "reference": [{"size": "224x224", "tokens": 196, "latency_median_ms": 40.0},
                                  {"size": "384x384", "tokens": 576, "latency_median_ms": 118.0}]}
    rep["targets"][0]["sizes"] = [
        {"size": "224x224", "tokens": 196, "status": "ok", "latency_median_ms": 10.0,
         "accuracy": {"top1_agreement": 1.0, "cosine_min": 0.99999}},
        {"size": "384x384", "tokens": 576, "status": "ok", "latency_median_ms": 29.5,
         "accuracy": {"top1_agreement": 0.995, "cosine_min": 0.9999}}]
    for width in (80, 200):
        console = Console(width=width, record=True, file=io.StringIO(), force_terminal=False)
        print_report(rep, console)
        text = console.export_text()
        assert "at each size (--eval-sizes)" in text
        assert re.search(r"^384x384 +pytorch-eager +118 *$", text, re.M), text  # every row ok: no status column
        assert re.search(r"^ +onnxruntime-fp32 +99\.5% +0\.99990 +29\.5 +4\.00x *$", text, re.M), text
        assert max(len(line.rstrip()) for line in text.splitlines() if "0.9999" in line) <= width
        assert "pytorch 1.02, onnxruntime-fp32 0.98" in text
    rep["targets"][0]["sizes"][1].update(status="failed")  # a failed size: the status column appears
    console = Console(width=80, record=True, file=io.StringIO(), force_terminal=False)
    print_report(rep, console)
    assert re.search(r"^ +onnxruntime-fp32 +failed +99\.5%", console.export_text(), re.M)


def test_noisy_latency_is_said_in_the_terminal_and_the_report():
    from xcit_export.report.document import markdown_table
    from xcit_export.report.noise import P90_OVER_MEDIAN_MAX, latency_noise

    rep = _report()
    rep["device"]["cpu_count"] = 2
    steady = latency_noise(rep, cores=2)
    assert steady["stable"] and steady["reasons"] == [] and {t["timed"] for t in steady["timings"]} == {
        "pytorch-eager", "onnxruntime-fp32"}
    rep["reference"]["latency"].update(median_ms=130.0, p90_ms=130.0 * (P90_OVER_MEDIAN_MAX + 0.1))
    rep["targets"][0]["latency"]["load_avg_1m"] = 7.5
    rep["latency_noise"] = noise = latency_noise(rep, cores=2)
    assert not noise["stable"]
    assert noise["reasons"] == ["p90 over median above 1.5x in 1 of 2 timed loops (worst: pytorch-eager 1.6x)",
                                "load average up to 7.5 on 2 cores while timing 1 of 2 loops"]
    assert [t["noisy"] for t in noise["timings"]] == [True, True]
    console = Console(width=100, record=True, file=io.StringIO())
    print_report(rep, console)
    assert "latency figures are noisy (p90 over median above 1.5x in 1 of 2 timed loops" in console.export_text()
    assert "**Warning: latency figures are noisy" in markdown_table({**rep, "device": {
        **rep["device"], "cpu_count": 2}, "latency_method": {"threads": 2}})


def _phase_lines(text, label):
    return [line for line in text.splitlines() if line.startswith(f"  {label}: ")]


def test_a_1000_image_evaluation_through_a_pipe_tells_one_monotonic_story():
    """The evaluation pass (sharding._counted + evaluate_stream, as the engine drives them) over
    1,000 cheap inputs, to a log: count lines every ten (fake) seconds that only go up, a rate and
    an ETA over the whole phase, one final line, and no "done ... 0 in" line."""
    from xcit_export.evaluate.stream import StreamTarget, evaluate_stream
    from xcit_export.scale.sharding import _counted
    from xcit_export.console import stepper

    label = "evaluation: PyTorch and every target"
    buf = io.StringIO()
    clock = [0.0]

    def batches():
        rng = np.random.default_rng(0)
        for _ in range(0, 1000, 16):
            clock[0] += 0.8  # 20 images a second, steadily
            x = rng.standard_normal((16, 4)).astype(np.float32)
            yield x, None

    def ref(x):
        return [x * 2]

    with TerminalProgress(Console(file=buf, force_terminal=False, width=200), clock=lambda: clock[0]) as progress:
        progress("Evaluation: streaming 1000 inputs")
        counted = _counted(((x[: max(0, min(16, 1000 - i * 16))], y) for i, (x, y) in enumerate(batches())),
                           stepper(progress, label), 1000)
        evaluate_stream(counted, ref, 16, [StreamTarget("t", ref, 16)], ["out"], False, progress=progress, total=1000)
        progress("Latency: PyTorch eager")
    text = buf.getvalue()
    assert not re.search(r"done .*: 0 in", text)
    counts = [int(line.split(": ")[-1].split("/")[0].replace(",", "")) for line in _phase_lines(text, label)]
    assert len(counts) >= 4 and counts == sorted(counts) and len(set(counts)) == len(counts), text
    assert all(", 20.0/s, ETA" in line for line in _phase_lines(text, label)), text  # one rate for the phase
    assert "Evaluation: 1" not in text  # no stage line in the middle of the phase
    assert [line for line in text.splitlines() if line.startswith("  done ")] == [
        f"  done {label}: 1,000 in 50.4 s (19.8/s)"]


def test_heartbeat_during_a_silent_step_and_nothing_for_an_empty_phase():
    buf = io.StringIO()
    clock = [0.0]
    with TerminalProgress(Console(file=buf, force_terminal=False, width=200), clock=lambda: clock[0],
                          heartbeat_every=30) as progress:
        progress("tensorrt-int8: building")
        clock[0] = 20.0
        progress.heartbeat()  # something was printed 20 s ago: quiet
        clock[0] = 31.0
        progress.heartbeat()
        clock[0] = 80.0
        progress.heartbeat()
        progress.step("never counted", 0, 10)
        progress("next stage")
    lines = buf.getvalue().splitlines()
    assert lines[1:3] == ["  still: tensorrt-int8: building (31.0 s)", "  still: tensorrt-int8: building (1 min 20 s)"]
    assert not any("never counted" in line for line in lines)
    # The thread: a real clock and a short interval.
    import time

    buf = io.StringIO()
    with TerminalProgress(Console(file=buf, force_terminal=False, width=200), heartbeat_every=0.2) as progress:
        progress("openvino-int8: building")
        time.sleep(0.7)
    assert "  still: openvino-int8: building (" in buf.getvalue()


def test_a_finished_phase_leaves_the_terminal_at_once():
    """A bar at 4/4 does not sit there while the next step works: its line is printed and the bar goes."""
    buf = io.StringIO()
    with TerminalProgress(Console(file=buf, force_terminal=True, width=120, color_system=None)) as progress:
        progress("onnxruntime-fp32: validating accuracy")
        for done in range(0, 5):
            progress.step("outputs", done, 4)
        assert "done outputs: 4 in" in buf.getvalue()
        assert progress._bars.tasks and all(t.description != "outputs" for t in progress._bars.tasks)


@pytest.mark.parametrize("width", [80, 50, 30])
def test_scenario_tables_fit_the_width_with_every_figure_whole(width):
    """--scenario all --sustain --mlperf-tail with a power meter fills nine columns: at 80 columns the
    tables split (the target's name repeated), narrower a block per target; nothing is cut."""
    from test_html_layout import _scenarios_report

    from xcit_export.report.scenarios import tables

    rep = _scenarios_report()
    console = Console(width=width, record=True, file=io.StringIO(), force_terminal=True, color_system=None)
    print_report(rep, console)
    text = console.export_text()
    part = text[text.index("Single-stream"):]  # the tables, then the notes (wrapped by rich)
    assert "…" not in part and max(len(line.rstrip()) for line in part.splitlines()) <= width
    words = set(part.split())
    for _, _, rows in tables(rep):
        for row in rows:
            for cell in row:
                assert set(cell.split()) <= words, (width, cell, part)
