"""--scenario through the whole pipeline (one small run shared by every test here), the reports that
show it, the options that refuse bad values before any work, and --objective's ranking."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import xcit_export
from xcit_export.cli import main
from xcit_export.errors import RecipeError
from xcit_export.evaluate import auto

KW = dict(input_size=64, batch=1, eval_count=40, profile=False, iterations=3, warmup=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """onnxruntime-fp32 and openvino-fp32 with every scenario (0.2 s each), then the same run again:
    its artifacts and the PyTorch reference come back from disk."""
    pytest.importorskip("openvino")
    out = tmp_path_factory.mktemp("scenarios")
    targets = ["onnxruntime-fp32", "openvino-fp32"]
    first = xcit_export.run("xcit_nano_12_p16_224", targets, out=out, scenarios="all", scenario_seconds=0.2,
                            streams=3, **KW)
    second = xcit_export.run("xcit_nano_12_p16_224", targets, out=out, **KW)
    return {"first": first, "second": second, "out": out}


def test_every_cpu_target_has_all_three_scenarios_in_report_json(runs):
    data = json.loads(json.dumps(runs["first"].to_dict()))  # report.json itself is the second run's now
    for entry in data["targets"]:
        sc = entry["scenarios"]
        assert entry["status"] == "ok", entry
        single, multi, offline = sc["single_stream"], sc["multi_stream"], sc["offline"]
        assert single["p50_ms"] <= single["p90_ms"] <= single["p99_ms"] and single["source"] == "the latency pass"
        assert multi["streams"] == 3 and multi["p99_ms"] >= multi["p50_ms"] > 0 and multi["queries"] >= 1
        assert offline["images_per_s"] > 0 and offline["batch"] == 1 and offline["streams"] >= 1
        assert [p for p in offline["search"] if "error" in p] == []
        assert len({(p["batch"], p["streams"], p["mechanism"]) for p in offline["search"]}) == len(offline["search"])
        assert sc["energy"]["available"] is False and "not available here" in sc["energy"]["reason"]
    assert data["scenario_method"]["streams"] == 3 and data["scenario_method"]["seconds"] == 0.2
    mech = {e["target"]: e["scenarios"]["offline"]["mechanism"] for e in data["targets"]}
    assert "AsyncInferQueue" in mech["openvino-fp32"] and "concurrent run()" in mech["onnxruntime-fp32"]


def test_the_second_run_reads_the_reference_from_its_cache_and_agrees(runs):
    c1 = runs["first"].evaluation["throughput"]["reference_cache"]
    c2 = runs["second"].evaluation["throughput"]["reference_cache"]
    assert c1["hit"] is False and c1["written"] and c2["hit"] is True and c2["rows"] == 40
    assert [t.accuracy for t in runs["first"].targets] == [t.accuracy for t in runs["second"].targets]
    assert all(t.data["reused"] for t in runs["second"].targets)
    assert "scenarios" not in runs["second"].targets[0].data  # not asked for: not run


def test_reports_show_a_table_per_scenario_and_a_plot_per_target(runs):
    out = runs["out"]
    first = runs["first"]
    from xcit_export.report.document import markdown_table
    from xcit_export.report.html import html_page

    md = markdown_table(first.to_dict())
    page = html_page(first.to_dict())
    for title in ("Single-stream", "Multi-stream", "Offline"):
        assert f"## {title}" in md and f"<h3>{title}" in page
    assert page.count('data-plot="scenarios-') == 2 and "Throughput against latency" in page
    from rich.console import Console

    from xcit_export.console import print_report

    console = Console(width=80, record=True, force_terminal=False)
    print_report(first.to_dict(), console)
    text = console.export_text()
    assert "Offline (all images up front" in text and "in flight" in text
    tables = [line for line in text.splitlines() if line.startswith(("target ", "onnxruntime-fp32 ", "openvino-fp32 "))]
    assert len(tables) >= 9 and max(len(line) for line in tables) <= 80  # the scenario tables fit 80 columns
    assert text.count("Energy not available here") == 1
    assert (out / "report.html").is_file()


def test_bad_scenario_options_stop_before_any_work(tmp_path):
    cli = CliRunner()
    base = ["--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32", "--out", str(tmp_path / "o")]
    res = cli.invoke(main, base + ["--scenario", "server"])
    assert res.exit_code == 2 and "unknown scenario(s) server" in res.output
    res = cli.invoke(main, base + ["--objective", "throughput"])
    assert res.exit_code == 2 and "only applies to --target auto" in res.output
    res = cli.invoke(main, base + ["--mlperf-tail", "--scenario", "offline"])
    assert res.exit_code == 2 and "--mlperf-tail" in res.output
    assert not (tmp_path / "o" / "onnx").exists()
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nname = "xcit_nano_12_p16_224"\n[latency]\nscenarios = ["offline", "server"]\n'
                      '[targets.onnxruntime-fp32]\n')
    from xcit_export.recipe import load_recipe

    with pytest.raises(RecipeError, match=r"\[latency\].*unknown scenario\(s\) server"):
        load_recipe(recipe)
    recipe.write_text('[model]\nname = "xcit_nano_12_p16_224"\n[latency]\nscenarios = "all"\nsustain = 30\n'
                      '[targets.onnxruntime-fp32]\n')
    from xcit_export.recipe import to_run_options

    options = to_run_options(load_recipe(recipe), out=tmp_path)
    assert options.scenarios == ("single-stream", "multi-stream", "offline") and options.sustain == 30
    assert options.scenario_options().scenarios == options.scenarios


def _entry(name, median_ms, offline_ips):
    return {"target": name, "status": "ok", "latency": {"median_ms": median_ms, "batch": 1},
            "accuracy": {"top1_agreement": 1.0, "cosine_mean": 1.0, "top1": 0.9, "reference_top1": 0.9},
            "scenarios": {"offline": {"images_per_s": offline_ips}} if offline_ips else {}}


def test_objective_throughput_ranks_by_offline_images_per_second():
    entries = [_entry("fast-alone", 2.0, 400.0), _entry("fast-together", 3.0, 900.0), _entry("untimed", 1.0, None)]
    by_latency = auto.recommend(entries, auto.Budget(), labelled=True)
    by_throughput = auto.recommend(entries, auto.Budget(), labelled=True, objective="throughput")
    assert by_latency["target"] == "untimed" and by_throughput["target"] == "fast-together"
    why = {c["target"]: c["why"] for c in by_throughput["candidates"]}
    assert why["fast-alone"].startswith("2.25x lower offline throughput") and "no offline throughput" in why["untimed"]
    assert by_throughput["lines"][0].startswith("Recommended: fast-together (900 images/s offline")
    assert "offline throughput" in by_throughput["latency_basis"] and by_throughput["objective"] == "throughput"
