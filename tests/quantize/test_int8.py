"""INT8 on the CPU that runs the tests: ISA detection, the format choice, every format's accuracy on
the trained fixture, per-group sensitivity and the accuracy-budget search (issue 11)."""

from __future__ import annotations

import json
import platform

import numpy as np
import onnx
import pytest

from xcit_export.data.sets import representative_subset
from xcit_export.quantize import sensitivity as sens
from xcit_export.errors import XcitExportError
from xcit_export.fingerprint import CPU_FLAGS, CpuCapabilities, cpu_capabilities, device_fingerprint
from xcit_export.options import Inputs, RunOptions
from xcit_export.pipeline import run
from xcit_export.report.document import html_page, markdown_table
from xcit_export.quantize.ort_int8 import AVX2_FORMAT, FORMATS, choose_format, quantize
FAST = dict(warmup=1, iterations=3)


def eval_data(config):
    """The run's evaluation set as arrays (the run itself streams it and keeps none)."""
    from xcit_export.data.sets import evaluation_set
    from xcit_export.models.zoo import get_spec

    return evaluation_set(config.eval, get_spec(config.model).preprocessing, config.eval_size, config.seed).load()
SEARCH_IMAGES = 32


def test_capabilities_are_read_once_and_reported():
    caps = cpu_capabilities()
    assert caps is cpu_capabilities()  # cached
    assert set(caps.flags) <= set(CPU_FLAGS)
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert caps.source == "cpuid"  # what onnxruntime's MLAS reads, also under an emulator
        assert "avx2" in caps.flags or caps.isa_class == "x86"
    dev = device_fingerprint()
    assert dev["cpu_flags"] == list(caps.flags) and dev["isa_class"] == caps.isa_class


@pytest.mark.parametrize("flags,expected", [
    (("avx2", "avx512f", "avx512_vnni"), "u8s8"),
    (("avx2", "avx_vnni"), "u8s8"),
    (("avx2",), AVX2_FORMAT),
    (("avx2", "avx512f"), AVX2_FORMAT),  # Skylake-X: AVX-512 without VNNI saturates like AVX2
])
def test_format_follows_the_isa(flags, expected):
    fmt, reason = choose_format(CpuCapabilities("x86_64", flags, "cpuid"))
    assert fmt.name == expected and reason.startswith(CpuCapabilities("x86_64", flags, "cpuid").isa_class)


def test_format_on_this_cpu_and_forced():
    fmt, reason = choose_format()
    caps = cpu_capabilities()
    if caps.isa_class == "x86-vnni":
        assert fmt.name == "u8s8" and "VNNI" in reason
    elif caps.isa_class.startswith("x86"):
        assert fmt.name == AVX2_FORMAT and "no VNNI" in reason
    assert choose_format(forced="S8S8")[0].name == "s8s8"
    with pytest.raises(XcitExportError, match="format='u4u4' is unknown"):
        choose_format(forced="u4u4")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """onnxruntime-int8 on the fixture (dynamic batch: batched evaluation is quicker) with sensitivity
    and the issue's budget, max_drop=0.002, searched on 32 evaluation images (a seeded, class-stratified draw)."""
    out = tmp_path_factory.mktemp("int8")
    config = RunOptions("xcit_nano_12_p16_224", ["onnxruntime-fp32", "onnxruntime-int8"], weights="demo",
                        out=out, eval="demo", eval_size=100, calib="demo", calib_size=64, **FAST,
                        target_options={"onnxruntime-int8": {"sensitivity": "true", "max_drop": 0.002,
                                                             "search_images": SEARCH_IMAGES}})
    inputs = Inputs()  # the run loads its calibration set here
    return run(config, inputs), config, inputs


def _searched_images(config):
    """The evaluation images the search ran on: data.sets.representative_subset, as recorded."""
    x, labels = eval_data(config)
    idx, _ = representative_subset(len(x), SEARCH_IMAGES, labels, config.seed)
    return x[idx], labels[idx]


def test_search_images_are_a_stratified_draw_recorded_in_the_artifact(searched):
    report, config, inputs = searched
    selection = _int8(report)["artifact"]["search_selection"]
    x, labels = eval_data(config)
    assert selection == representative_subset(len(x), SEARCH_IMAGES, labels, config.seed)[1]
    assert selection["method"] == "stratified" and selection["classes"]["covered"] == 10


def _int8(report):
    return next(t for t in report["targets"] if t["target"] == "onnxruntime-int8")


def test_artifact_records_the_format_and_sensitivity(searched):
    report, config, inputs = searched
    entry = _int8(report)
    assert entry["status"] == "ok", entry.get("error")
    art = entry["artifact"]
    assert art["format"] == choose_format()[0].name and art["format_reason"]
    meta = json.loads((config.out_dir / "onnxruntime-int8" / "artifact.json").read_text())
    assert meta["format"] == art["format"]
    rows = art["sensitivity"]["rows"]
    groups = [r["group"] for r in rows]
    assert len(groups) == 1 + 12 * 3 + 1 + 1 and {"patch_embed", "head", "class_attention", "block0.lpi"} <= set(groups)
    keys = [(r["top1_agreement"], r["cosine_mean"]) for r in rows]
    assert keys == sorted(keys) and art["sensitivity"]["most_damaging"] == groups[0]
    md = markdown_table(report)
    assert "INT8 sensitivity by layer group" in md and f"format **{art['format']}**" in md
    assert "<svg" in html_page(report).split("INT8 on this device</h2>")[1]


def test_max_drop_0002_is_met_with_its_groups_listed_or_refused(searched):
    report, _, _ = searched
    entry = _int8(report)
    if entry["status"] == "failed":  # said plainly, naming the budget
        assert "max_drop=0.002 cannot be met" in entry["error"]
        return
    search = entry["artifact"]["budget_search"]
    assert search["met"] and search["steps"][-1]["top1_drop"] <= 0.002
    assert search["steps"][-1]["excluded"] == search["excluded_groups"]
    assert "accuracy-budget search (max drop 0.002" in markdown_table(report)


def test_sparing_the_most_damaging_group_beats_quantizing_everything(searched, formats):
    report, config, inputs = searched
    worst = _int8(report)["artifact"]["sensitivity"]["most_damaging"]
    model = onnx.load(str(formats["_dir"] / f"{choose_format()[0].name}.onnx"))
    x = _searched_images(config)[0]
    evaluator = sens.Evaluator(config.out_dir / "onnx" / "model.onnx", x, None, None, 2, time_steps=False)
    everything = evaluator.measure(model)
    spared = evaluator.measure(sens.dequantize_groups(model, {worst}))
    assert spared["cosine_mean"] > everything["cosine_mean"]
    assert 1 - spared["cosine_mean"] < 0.97 * (1 - everything["cosine_mean"])  # measurably, not by rounding
    float_model = onnx.load(str(formats["_dir"] / "prepared.onnx"))  # FP32 weights by node name
    nothing = evaluator.measure(sens.dequantize_groups(model, set(sens.quantized_groups(model)), float_model))
    assert nothing["cosine_min"] > 0.99999  # every Q/DQ pair removed: the FP32 graph again


@pytest.mark.parametrize("budget", [0.0])
def test_budget_search_meets_the_budget_or_says_it_cannot(searched, formats, budget):
    report, config, inputs = searched
    model = onnx.load(str(formats["_dir"] / f"{choose_format()[0].name}.onnx"))
    x, labels = eval_data(config)
    # Without labels the budget is on top-1 agreement: 0.0 allows no flip at all, which the all-INT8
    # model misses on most CPUs, so the search runs its steps.
    evaluator = sens.Evaluator(config.out_dir / "onnx" / "model.onnx", _searched_images(config)[0], None, 8, 2,
                               time_steps=True)
    ranking = _int8(report)["artifact"]["sensitivity"]["rows"]
    try:
        final, record = sens.budget_search(model, evaluator, budget, ranking=ranking)
    except XcitExportError as exc:
        assert f"max_drop={budget} cannot be met" in str(exc)
        return
    assert record["met"] and record["steps"][-1]["top1_drop"] <= budget
    assert record["steps"][-1]["excluded"] == record["excluded_groups"]
    assert record["excluded_groups"] == [r["group"] for r in ranking[:len(record["excluded_groups"])]]
    assert all("median_ms" in s for s in record["steps"])
    lines = sens.sensitivity_markdown("onnxruntime-int8", {"budget_search": record})
    assert any("accuracy-budget search" in line for line in lines)


def test_max_drop_is_a_fraction():
    assert sens.parse_budget("0.01") == 0.01
    with pytest.raises(XcitExportError, match="fraction"):
        sens.parse_budget(1.5)


@pytest.fixture(scope="module")
def formats(searched, tmp_path_factory):
    """Every format quantized from the same prepared fixture ONNX, calibrated once."""
    from onnxruntime.quantization import quant_pre_process

    from xcit_export.targets.onnxruntime import _activation_matmuls

    _, config, inputs = searched
    tmp = tmp_path_factory.mktemp("formats")
    prepared = tmp / "prepared.onnx"
    quant_pre_process(str(config.out_dir / "onnx" / "model.onnx"), str(prepared), skip_symbolic_shape=True)
    exclude = _activation_matmuls(prepared)
    x, labels = eval_data(config)
    evaluator = sens.Evaluator(config.out_dir / "onnx" / "model.onnx", x[:64], labels[:64], None, 2,
                               time_steps=False)
    out = {"_dir": tmp}
    for name, fmt in FORMATS.items():
        quantize(prepared, tmp / f"{name}.onnx", inputs.calib_data, fmt, step=None, exclude_nodes=exclude,
                 cache=tmp / "ranges.json")
        out[name] = evaluator.measure(onnx.load(str(tmp / f"{name}.onnx")))
    return out


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_runs_with_its_expected_accuracy(formats, name):
    row = formats[name]
    exact = cpu_capabilities().vnni or name != "u8s8" or not cpu_capabilities().isa_class.startswith("x86")
    if exact:
        # Exact formats hold the mean cosine; a saturating U8S8 fell to 0.944 under AVX2 (BENCHMARKS.md).
        assert row["cosine_mean"] > 0.995, row
        assert row["top1_agreement"] >= 0.92 and row["top1_drop"] <= 0.03, row
    else:  # U8S8 without VNNI: int16 saturation (issue 11 measured 93.5% agreement on Zen 3)
        assert np.isfinite(row["cosine_mean"]) and row["top1_agreement"] >= 0.8, row


def test_the_report_says_when_int8_buys_no_speed():
    from xcit_export.report.int8 import int8_gain_lines

    def report(int8_ms, flags):
        return {"device": {"cpu_flags": flags}, "targets": [
            {"target": "onnxruntime-fp32", "latency": {"median_ms": 28.3}},
            {"target": "onnxruntime-int8", "latency": {"median_ms": int8_ms}}]}

    (line,) = int8_gain_lines(report(27.5, ["avx2"]))  # the Zen 3 figures
    assert "onnxruntime-int8 buys no speed here" in line and "no VNNI on this CPU" in line
    assert "VNNI (avx512_vnni)" in int8_gain_lines(report(30.0, ["avx2", "avx512f", "avx512_vnni"]))[0]
    assert int8_gain_lines(report(20.0, ["avx2"])) == []
