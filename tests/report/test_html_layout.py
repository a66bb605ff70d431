"""report.html and matrix.html read at a glance: the answer first, nothing wider than the page at
1,280 and 800 px (tests/html_width.py), plots whose axes fit the data, PyTorch in no latency plot,
and none of the small untruths (an empty header row, "1 targets", "0.0 s"). Fabricated reports:
no builds, a fraction of a second per test."""

from __future__ import annotations

import functools
import re

import pytest

from html_width import too_wide
from xcit_export.report.html import html_page
from xcit_export.report.matrix_html import matrix_page
from xcit_export.report.noise import latency_noise

NAMES = ["onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-fp16", "openvino-int8",
         "tensorrt-rtx-int8"]


def _target(name: str, median: float | None, top1: float = 0.9, **extra) -> dict:
    entry = {"target": name, "status": "ok", "export_batch": 1 if "@batch1" in name else "dynamic",
             "artifact": {"path": f"out/m/{name}/model.onnx", "size_bytes": 12_345_678},
             "accuracy": {"count": 300, "top1": top1, "reference_top1": 0.9, "top1_agreement": 0.99667,
                          "cosine_mean": 0.9999, "cosine_min": 0.998712, "max_abs_error": 0.0123}}
    if median is not None:
        entry["latency"] = {"median_ms": median, "p90_ms": median * 1.1, "batch": 1,
                            "samples_ms": [median * (0.95 + 0.01 * i) for i in range(12)], "load_avg_1m": 0.5}
        entry["speedup_vs_pytorch"] = round(130.0 / median, 3)
    entry.update(extra)
    return entry


def _report(targets: list[dict], **extra) -> dict:
    rep = {"model": {"name": "xcit_nano_12_p16_224", "weights": "demo", "num_classes": 10, "input_size": [224, 224]},
           "export": {"batch": "dynamic"}, "created": "2026-12-02T08:00:00+00:00",
           "evaluation": {"description": "demo (0123456789ab)", "count": 300, "labelled": True},
           "device": {"cpu": "AMD EPYC 9R14", "cpu_count": 2, "cpu_flags": ["avx2", "avx512f"], "gpus": [],
                      "os": "Linux", "python": "3.11.7", "libraries": {"torch": "2.13.0", "onnxruntime": "1.23.2"}},
           "latency_method": {"warmup": 10, "iterations": 50, "min_seconds": 0.0, "max_seconds": 30.0, "threads": 2},
           "reference": {"latency": {"median_ms": 130.0, "p90_ms": 2300.0, "batch": 1,
                                     "samples_ms": [130.0] * 10 + [2300.0]}, "accuracy": {"top1": 0.9}},
           "targets": targets}
    rep.update(extra)
    rep["latency_noise"] = latency_noise(rep, cores=2)
    return rep


def _auto_report() -> dict:
    """--target auto on a device where eight candidates share one accuracy (the plot's hard case)."""
    names = NAMES + [f"{n}@batch1" for n in NAMES]
    targets = [_target(n, None if n.startswith("tensorrt") else 7.0 + i * 0.3, top1=0.9 if i % 5 else 0.88)
               for i, n in enumerate(names)]
    candidates = [{"target": t["target"], "median_ms": (t.get("latency") or {}).get("median_ms"),
                   "verdict": "not run" if "latency" not in t else "out" if t["accuracy"]["top1"] < 0.89 else "slower",
                   "why": "cannot run here: no CUDA GPU here (tensorrt_rtx 1.7.1.116 is installed)" if "latency" not in t
                   else "top-1 drop 2.0 pt > 1.0 pt" if t["accuracy"]["top1"] < 0.89 else "1.04x slower"}
                  for t in targets]
    candidates[1]["verdict"] = "chosen"
    rec = {"target": names[1], "artifact": "out/m/onnxruntime-int8/model.onnx",
           "lines": [f"Recommended: {names[1]} (7.30 ms median at batch 1)", "others: slower or outside the budget"],
           "budget": {"max_top1_drop": 0.01, "min_top1_agreement": 0.97, "basis": "labelled top-1 drop"},
           "candidates": candidates}
    return _report(targets, recommendation=rec)


def _sizes_report() -> dict:
    targets = [_target("onnxruntime-fp32", 10.0), _target("openvino-fp32", 8.0)]
    sizes = ["224x224", "384x384", "512x768", "800x1344"]
    tokens = [196, 576, 1536, 4200]
    for t in targets:
        t["sizes"] = [{"size": s, "tokens": n, "status": "ok", "latency_median_ms": n / 20,
                       "latency": {"median_ms": n / 20, "p90_ms": n / 19},
                       "accuracy": {"top1_agreement": 1.0, "cosine_min": 0.99999}} for s, n in zip(sizes, tokens)]
    return _report(targets, sizes={"sizes": sizes, "patch_size": 16, "slopes": {"pytorch": 1.1, "onnxruntime-fp32": 1.0,
                                                                                 "openvino-fp32": 1.0},
                                   "reference": [{"size": s, "tokens": n, "latency_median_ms": n / 2}
                                                 for s, n in zip(sizes, tokens)]})


def _scenarios_report() -> dict:
    """--scenario all --sustain --mlperf-tail on a device with a power meter: every scenario column filled."""
    stable = {"verdict": "drifting", "drift": 0.123, "reason": "last third 12% slower than the first (10% allowed)"}
    energy = {"available": True, "mj_per_image": 123.4, "avg_power_w": 11.2}
    targets = []
    for i, name in enumerate(NAMES[:5]):
        ms = 3.0 + i
        targets.append(_target(name, ms, scenarios={
            "single_stream": {"batch": 1, "p50_ms": ms, "p90_ms": ms * 1.1, "p99_ms": ms * 1.3, "images_per_s": 1e3 / ms,
                              "seconds": 60.0, "stability": stable, "energy": energy,
                              "early_stopping": {"estimate_ms": ms * 1.12, "min_duration_met": False,
                                                 "min_duration_s": 600}},
            "multi_stream": {"streams": 4, "batch": 1, "p50_ms": ms * 3, "p99_ms": ms * 4.2, "images_per_s": 4e3 / ms / 3,
                             "seconds": 60.0, "stability": stable, "energy": energy, "mechanism": "OpenVINO AsyncInferQueue",
                             "early_stopping": {"estimate_ms": ms * 4.5, "min_duration_met": True, "min_duration_s": 600}},
            "offline": {"images_per_s": 12345.6 / ms, "batch": 8, "streams": 4, "p50_ms": ms * 8, "stability": stable,
                        "energy": energy, "search": [{"batch": b, "streams": n, "p50_ms": ms * b * n / 2,
                                                      "images_per_s": 1e3 * b / ms} for b in (1, 8) for n in (1, 2, 4)]},
            "energy": {"available": True, "source": "RAPL"}}))
    return _report(targets, scenario_method={"scenarios": ["single-stream", "multi-stream", "offline"], "streams": 4})


@functools.cache
def _page(make) -> str:
    return html_page(make())


def _svg(page: str, name: str) -> str:
    at = page.index(f'data-plot="{name}"')
    return page[at:page.index("</svg>", at)]


@pytest.mark.parametrize("make", [_auto_report, _sizes_report, _scenarios_report])
def test_report_fits_1280_and_800_and_answers_first(make):
    page = _page(make)
    for viewport in (1280, 800):
        assert not too_wide(page, viewport), too_wide(page, viewport)
    headings = re.findall(r"<h2[^>]*>(.*?)</h2>", page)
    assert headings[0] == "Results" and headings[-1] == "Device and method"
    assert page.index('id="noise"') < page.index('id="verdict"') < page.index("<h2>Results</h2>")
    if "Sizes" in headings:
        assert headings.index("Sizes") == 1  # right after the results, before thresholds and plots
    assert "<th></th>" not in page and "<thead><tr></tr></thead>" not in page
    assert "0.0 s" not in page and not re.search(r"\b1 (targets|threads|cores)\b", page)
    assert "…" not in page and "..." not in page


def test_pytorch_is_in_no_latency_plot():
    for make in (_auto_report, _sizes_report):
        page = _page(make)
        assert "pytorch" not in _svg(page, "latency").lower()
        assert "PyTorch eager (median 130 ms) is in the table, not in the plot" in page
    page = _page(_sizes_report)
    assert "pytorch" not in _svg(page, "tokens").lower() and "PyTorch eager's slope: 1.10" in page


def test_a_report_with_nothing_timed_says_so():
    page = html_page(_report([_target("tensorrt-int8", None)]))
    assert 'data-plot="latency"' not in page and 'data-plot="accuracy"' not in page
    assert "No target was timed on this machine. TensorRT engines are timed on the device" in page


def test_accuracy_plot_axis_fits_and_points_are_numbered():
    page = _page(_auto_report)
    svg = _svg(page, "accuracy")
    ticks = [float(t) for t in re.findall(r">(\d+(?:\.\d+)?)%<", svg)]
    assert ticks and max(ticks) <= 100.0 and min(ticks) >= 85.0
    labels = re.findall(r">(\d+)<", svg)
    timed = [t for t in _auto_report()["targets"] if t.get("latency")]
    assert {str(i) for i in range(1, len(timed) + 1)} <= set(labels)  # one number per timed target
    key = page[page.index('class="key"'):]
    key = key[:key.index("</table>")]
    for i, t in enumerate(timed, 1):  # ... and the key table beside the plot names each
        assert re.search(rf"<b>{i}</b></td><td[^>]*><span class=\"nm\">{re.escape(t['target'])}</span>", key)
    # All at 100% agreement: the axis ends at 100% (no 99.8-100.2% around one value); one target: no plot.
    two = _report([_target("onnxruntime-fp32", 10.0), _target("openvino-fp32", 12.0)])
    two["evaluation"]["labelled"] = False
    for t in two["targets"]:
        t["accuracy"].update(top1=None, top1_agreement=1.0)
    ticks = [float(t) for t in re.findall(r">(\d+(?:\.\d+)?)%<", _svg(html_page(two), "accuracy"))]
    assert ticks and max(ticks) == 100.0 and min(ticks) >= 99.0
    two["targets"].pop()
    assert 'data-plot="accuracy"' not in html_page(two)


def test_label_placement_never_overlaps():
    from xcit_export.report.plots import _overlap, place_labels

    anchors = [(100.0, 100.0)] * 8 + [(104.0, 100.0), (300.0, 50.0)]  # eight points on one spot
    sizes = [(12.0, 10.0)] * 10
    markers = [(x - 5, y - 5, x + 5, y + 5) for x, y in anchors]
    placed = place_labels(anchors, sizes, (0.0, 0.0, 400.0, 300.0), markers)
    boxes = [(x - w / 2, y - h / 2, x + w / 2, y + h / 2) for (x, y), (w, h) in zip(placed, sizes)]
    assert all(_overlap(a, b) == 0 for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert all(_overlap(b, m) == 0 for b in boxes for m in markers)
    assert all(0 <= b[0] and b[2] <= 400 and 0 <= b[1] and b[3] <= 300 for b in boxes)


def test_method_sentence_and_plurals():
    rep = _report([_target("onnxruntime-fp32", 10.0)])
    page = html_page(rep)
    assert ("10 untimed warm-ups, then at least 50 timed inferences, stopped after 30 s at most, one request at a "
            "time, 2 threads") in page
    assert "PASS: 1 target ran here and holds its thresholds" in page
    rep["latency_method"]["min_seconds"] = 5.0
    assert "at least 50 timed inferences and 5 s" in html_page(rep)


def test_matrix_page_fits_and_keeps_reasons_whole(tmp_path):
    from test_matrix_report import _report as matrix_report

    rep = matrix_report(tmp_path)
    fix = "pass more with --calib / --calib-size 300 (the fix is named here, at the end)"
    rep["cells"][4]["error"] = f"cell xcit_nano_12_p8_224 x onnxruntime-fp32 x kind-b: {'x' * 40} " + fix
    page = matrix_page(rep)
    for viewport in (1280, 800):
        assert not too_wide(page, viewport), too_wide(page, viewport)
    assert page.count(fix) >= 2  # in the grid and the details, whole
    details = page[page.index("Cell details"):]
    assert "cell xcit_nano_12_p8_224 x onnxruntime-fp32 x kind-b:" not in details  # the heading names the cell
    assert "Ray node" in page
    rep["executor"] = "local"
    local = matrix_page(rep)
    assert "Ray" not in local.replace("ray executor", "") and "Every cell ran here" in local


def test_scenario_plots_share_rows_and_say_what_they_show():
    page = _page(_scenarios_report)
    section = page[page.index("<h3>Throughput against latency"):]
    assert section.count("<div><svg") == 5  # each plot a flex item: two or three to a row at 1,280 px
    assert "star: the configuration chosen" in section
    for title in ("Single-stream", "Multi-stream", "Offline"):
        table = page[page.index(f"<h3>{title}"):]
        table = table[:table.index("</table>")]
        assert "123.4" in table and "drifting (+12%)" in table  # mJ/image and the verdict, every scenario
