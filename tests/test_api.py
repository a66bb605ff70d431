"""The Python API: the README's example as written, the Report object, the same errors as the CLI,
a cheap ``import xcit_export``, and mypy on the public modules."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import xcit_export
from xcit_export.errors import (ArtifactError, GateFailure, ReportError, UnknownModelError, UnknownTargetError,
                                UsageError, XcitExportError)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "xcit_nano_12_p16_224"


def readme_example() -> str:
    """The README's one Python block, verbatim."""
    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return code


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """Run the README example in an empty folder, as a user who pasted it would."""
    cwd = tmp_path_factory.mktemp("readme")
    namespace: dict = {}
    printed = io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(readme_example(), str(ROOT / "README.md"), "exec"), namespace)
    finally:
        os.chdir(old)
    return namespace, cwd, printed.getvalue()


def test_readme_example_runs_as_written(readme_run):
    namespace, cwd, printed = readme_run
    report = namespace["report"]
    assert isinstance(report, xcit_export.Report) and report.passed
    status, agreement, median, path = printed.split()
    assert status == "ok" and float(agreement) == 1.0 and float(median) > 0
    assert Path(path) == cwd / "out" / "api-example" / "report.json" == report.json_path
    assert report.json_path.is_file()


def test_report_fields_are_attributes(readme_run):
    report = readme_run[0]["report"]
    on_disk = json.loads(report.json_path.read_text())
    assert report.to_dict() == on_disk  # the same document as report.json
    assert report.model["name"] == MODEL and report.model["input_size"] == [64, 64]
    assert report.schema_version == on_disk["schema_version"] and report.evaluation["count"] == 8
    assert report.reference["latency"]["median_ms"] > 0 and report.device["cpu_count"] >= 1
    (ort,) = report.targets
    assert ort.name == "onnxruntime-fp32" and ort.passed and ort.error is None
    assert ort.accuracy == on_disk["targets"][0]["accuracy"] and ort.latency["median_ms"] > 0
    assert (readme_run[1] / ort.artifact_path).is_file()  # relative to where the run was started
    assert report.recommendation is None and "passed=True" in repr(report)
    with pytest.raises(ReportError, match="has no target 'openvino-fp32'; it has onnxruntime-fp32"):
        report.target("openvino-fp32")
    assert xcit_export.load_report(report.json_path).to_dict() == on_disk


def test_a_failed_target_fails_the_report(readme_run):
    data = readme_run[0]["report"].to_dict()
    data["targets"][0].update(status="failed", error="boom")
    assert not xcit_export.Report(data).passed
    data["targets"][0].update(status="ok", passed=False)  # a missed recipe threshold
    assert not xcit_export.Report(data).passed
    data["targets"][0].update(status="invalid", passed=True)  # a status this version does not know never passes
    assert not xcit_export.Report(data).passed
    data["targets"][0].update(status="ok")
    data["recommendation"] = {"target": "a", "lines": ["a"], "require_winner": {"target": "b", "ok": False}}
    assert not xcit_export.Report(data).passed


def test_gate_and_bundle(readme_run, tmp_path):
    report = readme_run[0]["report"]
    held = xcit_export.gate(report, baseline=report.json_path)
    assert held.passed and held.checks and held.lines()[-1].endswith("0 failed, 0 skipped")
    held.raise_for_failures()
    missed = xcit_export.gate(report, require_winner="openvino-fp32@batch1")
    assert not missed.passed and "FAIL recommendation: winner" in "\n".join(missed.lines())
    with pytest.raises(GateFailure, match="the report is not from --target auto"):
        missed.raise_for_failures()
    with pytest.raises(ArtifactError, match="bundles are made from the tensorrt"):
        xcit_export.bundle(readme_run[1] / "out" / "api-example" / "onnxruntime-fp32")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(model="xcit_nano_12_p16"), UnknownModelError, "Did you mean"),
    (dict(targets="onnxruntime-fp33"), UnknownTargetError, "unknown target 'onnxruntime-fp33'"),
    (dict(targets="auto,onnxruntime-fp32"), UsageError, "give it alone"),
    (dict(max_top1_drop=0.02), UsageError, r"max_top1_drop \(--max-top1-drop\) only applies to --target auto"),
    (dict(input_size="64x"), UsageError, "'64x' is not a size"),
    (dict(input_size=100), XcitExportError, "multiples of the patch size 16"),
    (dict(weights="nope.pth"), XcitExportError, "checkpoint 'nope.pth' does not exist"),
    (dict(targets=[]), UsageError, "no target given"),
])
def test_bad_input_raises_the_cli_errors_before_any_work(tmp_path, kwargs, error, message):
    args = {"model": MODEL, "targets": "onnxruntime-fp32", **kwargs}
    with pytest.raises(error, match=message):
        xcit_export.run(args.pop("model"), args.pop("targets"), out=tmp_path / "o", **args)
    assert not (tmp_path / "o").exists()  # refused before any work: nothing created


def test_recommend_is_auto_over_the_candidates(monkeypatch, tmp_path):
    """recommend() builds the --target auto run: the candidates, the budget, the run options."""
    from xcit_export import api

    seen = {}
    monkeypatch.setattr(api, "_run_plan", lambda plan, progress: seen.update(plan=plan, progress=progress))
    xcit_export.recommend(MODEL, candidates="onnxruntime-fp32,openvino-fp32", max_top1_drop=0.02,
                          require_winner="openvino-fp32@batch1", weights="demo", eval="demo", out=tmp_path,
                          progress=False)
    plan = seen["plan"]  # planned once, here: the run itself gets the plan
    assert plan.auto and plan.targets == ["onnxruntime-fp32", "openvino-fp32"]
    assert (plan.budget.max_top1_drop, plan.budget.min_top1_agreement) == (0.02, 0.97)
    assert plan.options.require_winner == "openvino-fp32@batch1" and plan.options.eval == "demo"
    assert plan.options.weights == "demo" and seen["progress"] is False
    with pytest.raises(XcitExportError, match=r"--max-top1-drop 2.0 is read as a fraction \(200 points\); for 2 points pass 0.02"):
        xcit_export.recommend(MODEL, max_top1_drop=2.0, out=tmp_path)
    with pytest.raises(XcitExportError, match="must be a fraction between 0 and 1"):
        xcit_export.recommend(MODEL, min_top1_agreement=1.5, out=tmp_path)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        xcit_export.run(MODEL, "onnxruntime-fp32", "random")  # type: ignore[misc]


def test_import_is_cheap_and_the_api_is_lazy():
    code = ("import sys, xcit_export; assert 'torch' not in sys.modules and 'xcit_export.api' not in sys.modules; "
            "run = xcit_export.run; from xcit_export import Report, recommend, gate, bundle; "
            "assert 'torch' not in sys.modules, 'api.py imports torch at import time'; "
            "print(run.__module__, Report.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["xcit_export.api", "xcit_export.api"]


def test_public_functions_have_docstrings_and_hints():
    import inspect

    for name in ("run", "run_recipe", "recommend", "gate", "bundle", "load_report"):
        fn = getattr(xcit_export, name)
        assert fn.__doc__ and len(fn.__doc__) > 60, name
        sig = inspect.signature(fn)
        assert sig.return_annotation is not inspect.Signature.empty, name
        assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values()), name


def test_mypy_passes_on_the_api():
    if shutil.which("mypy", path=str(Path(sys.executable).parent)) is None and \
            subprocess.run([sys.executable, "-c", "import mypy"], capture_output=True).returncode:
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    proc = subprocess.run([sys.executable, "-m", "mypy", "xcit_export/api.py", "xcit_export/console.py",
                           "--cache-dir", os.devnull if os.name != "nt" else "nul"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
