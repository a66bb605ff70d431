"""Device bundle end to end on this host: bundle, move it, device-check it (onnxruntime CPU stands in
for the engine and says so), and refuse tampered or incomplete bundles before running anything."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from xcit_export.device import bundle as bundle_mod
from xcit_export.device.cli import bundle as bundle_cmd
from xcit_export.device.cli import device_check as device_check_cmd
from xcit_export.errors import ArtifactError, BackendUnavailableError
from xcit_export.targets import Artifact, BuildContext, get_target
from xcit_export.targets import tensorrt as trtmod

import trt_models

TARGET = "tensorrt-fp32"  # fast to build; the flow is the same for fp16/int8 (see test_precision)


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    out = run / TARGET
    out.mkdir()
    x = trt_models.inputs(6, seed=21)
    labels = np.arange(6) % 3
    ctx = BuildContext(spec=trt_models.spec(), onnx_path=trt_models.nano_onnx(), out_dir=out, batch=None,
                       input_shape=(3, 224, 224), evaluation=(x, labels), threads=2,
                       options={"golden_count": 6, "engine": "auto"})
    get_target(TARGET).build(ctx).save_metadata()
    return out


@pytest.fixture()
def made_bundle(artifact_dir, tmp_path):
    return bundle_mod.create_bundle(artifact_dir, tmp_path / "made" / "nano-bundle")


def test_target_without_tensorrt_keeps_the_onnx_and_says_no_engine_was_built(artifact_dir):
    meta = Artifact.from_dir(artifact_dir).metadata
    if trtmod.import_library("tensorrt") is None:
        assert meta["engine"] is None and meta["note"].startswith("no engine built: ")
        assert "tensorrt is not installed" in meta["note"] or "neither tensorrt nor tensorrt_rtx" in meta["note"]
    assert meta["onnx_check"]["top1_agreement"] == 1.0 and meta["onnx_check"]["source"] == "evaluation set"


def test_bundle_moved_elsewhere_passes_device_check(made_bundle, tmp_path):
    files = json.loads((made_bundle / bundle_mod.MANIFEST).read_text())["files"]
    assert set(files) == {"model.fp32.onnx", "golden.npz", "thresholds.json", "calibration.json", "trtexec.txt",
                          "bundle.json", "README.md", "device_check.pyz"}
    assert "--stronglyTyped" in (made_bundle / "trtexec.txt").read_text()
    tarball = made_bundle.parent / "nano-bundle.tar.gz"
    with tarfile.open(tarball) as tar:
        assert sorted(m.name for m in tar.getmembers()) == sorted(
            ["nano-bundle", *(f"nano-bundle/{n}" for n in [*files, "manifest.json"])])

    moved = tmp_path / "elsewhere" / "device"
    moved.parent.mkdir()
    shutil.move(str(made_bundle), moved)
    report = bundle_mod.device_check(moved, warmup=1, iterations=3)
    assert report["passed"] is True
    assert report["engine"]["status"] == "not built" and report["note"].startswith("no engine built: ")
    assert report["accuracy_vs_fp32_reference"]["top1_agreement"] == 1.0
    assert "top1" in report["accuracy_vs_fp32_reference"]  # labels travelled with the golden inputs
    assert "NOT the engine's latency" in report["latency"]["what"]
    entry = report["targets"][0]  # the stand-in's operators are not the engine's: no profile, and why
    assert "op_profile" not in entry and "not the engine" in entry["op_profile_note"]
    assert json.loads((moved / "device-check" / "report.json").read_text())["passed"] is True

    # The tarball, copied on its own to yet another folder, checks too (via the CLI: exit 0).
    other = tmp_path / "usb"
    other.mkdir()
    shutil.copy(tarball, other)
    result = CliRunner().invoke(device_check_cmd, [str(other / tarball.name), "--iterations", "2", "--warmup", "1"])
    assert result.exit_code == 0, result.output  # built, not run: exit 0, and no PASSED banner for an engine that never ran
    assert "BUILT, NOT RUN" in result.output and "PASSED" not in result.output
    assert (other / "nano-bundle.device-check" / "report.json").exists()


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)],
                         ids=["umask-0022", "umask-0077"])
def test_bundle_files_and_tarball_members_follow_the_umask(artifact_dir, tmp_path, mask, file_mode, dir_mode):
    """Under umask 0022 another account on the device can read the bundle; under 0077 nobody else can."""
    old = os.umask(mask)
    try:
        made = bundle_mod.create_bundle(artifact_dir, tmp_path / "nano-bundle")
    finally:
        os.umask(old)
    tarball = tmp_path / "nano-bundle.tar.gz"
    assert stat.S_IMODE(made.stat().st_mode) == dir_mode
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in made.iterdir()}
    assert modes.pop("device_check.pyz") == dir_mode  # an executable: the mode chmod +x gives
    assert set(modes.values()) == {file_mode}
    assert stat.S_IMODE(tarball.stat().st_mode) == file_mode
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
    files = {m.name.rsplit("/", 1)[-1]: m.mode for m in members if m.isfile()}
    assert files.pop("device_check.pyz") == dir_mode and set(files.values()) == {file_mode}
    assert len(members) == len(list(made.iterdir())) + 1  # every file and the folder itself
    assert [m.mode for m in members if m.isdir()] == [dir_mode]


def test_tampered_onnx_is_refused_before_anything_runs(made_bundle):
    onnx_path = made_bundle / "model.fp32.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[-100] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.fp32\.onnx' does not match its manifest .* nothing was run"):
        bundle_mod.device_check(made_bundle)
    assert not (made_bundle / "device-check" / "report.json").exists()
    result = CliRunner().invoke(device_check_cmd, [str(made_bundle)])
    assert result.exit_code == 1 and "does not match its manifest" in result.output


def test_missing_golden_file_is_refused(made_bundle):
    (made_bundle / "golden.npz").unlink()
    with pytest.raises(ArtifactError, match=r"missing golden\.npz listed in its manifest; nothing was run"):
        bundle_mod.device_check(made_bundle)


def test_golden_outputs_3x_the_model_fail_device_check(artifact_dir, tmp_path):
    """Golden reference outputs 3x what the model gives (cosine 1.0, agreement 1.0): the default
    relative-error limit of the precision class fails it; no host figure loosens that limit."""
    folder = tmp_path / TARGET
    shutil.copytree(artifact_dir, folder)
    with np.load(folder / "golden.npz") as data:
        golden = {k: data[k] for k in data.files}
    golden["reference"] = 3 * golden["reference"]
    with open(folder / "golden.npz", "wb") as fh:
        np.savez(fh, **golden)
    made = bundle_mod.create_bundle(folder, tmp_path / "scaled", tarball=False)
    limits = json.loads((made / "thresholds.json").read_text())
    assert limits["max_rel_error"] == 0.01  # fp32's default, whatever the host's ONNX check said
    result = CliRunner().invoke(device_check_cmd, [str(made), "--iterations", "2", "--warmup", "0", "--no-profile"])
    assert result.exit_code == 1 and "FAIL rel_error_max: 0.666667" in result.output and "FAILED" in result.output
    report = json.loads((made / "device-check" / "report.json").read_text())
    assert report["passed"] is False and report["targets"][0]["accuracy"]["cosine_min"] > 0.9999


def test_a_failed_threshold_exits_non_zero(artifact_dir, tmp_path):
    result = CliRunner().invoke(bundle_cmd, [str(artifact_dir.parent), "--target", TARGET, "--out",
                                             str(tmp_path / "strict"), "--min-cosine", "1.5", "--no-tarball"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "strict.tar.gz").exists()
    result = CliRunner().invoke(device_check_cmd, [str(tmp_path / "strict"), "--iterations", "2", "--warmup", "0"])
    assert result.exit_code == 1 and "FAIL cosine_min" in result.output and "FAILED" in result.output
    assert json.loads((tmp_path / "strict" / "device-check" / "report.json").read_text())["passed"] is False


@pytest.mark.skipif(trtmod.import_library("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_requested_but_not_installed(made_bundle, tmp_path):
    with pytest.raises(BackendUnavailableError, match=r"--require-engine\) but tensorrt is not installed"):
        bundle_mod.device_check(made_bundle, require_engine=True)
    ctx = BuildContext(spec=trt_models.spec(), onnx_path=trt_models.nano_onnx(), out_dir=tmp_path,
                       batch=None, input_shape=(3, 224, 224), options={"engine": "required"})
    with pytest.raises(BackendUnavailableError, match=r"engine=required\) but tensorrt is not installed; install"):
        get_target(TARGET).build(ctx)


def test_bundle_of_a_non_tensorrt_folder_is_refused(tmp_path):
    (tmp_path / "artifact.json").write_text(json.dumps({"target": "onnxruntime-fp32", "path": "model.onnx",
                                                        "files": ["model.onnx"]}))
    with pytest.raises(ArtifactError, match="bundles are made from the tensorrt"):
        bundle_mod.create_bundle(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="not a built target folder"):
        bundle_mod.resolve_artifact_dir(tmp_path / "empty")


def test_device_check_needs_no_torch(made_bundle):
    """A Jetson runs device-check without PyTorch (or onnx): the import graph must not pull it in."""
    code = ("import sys; from xcit_export.device.bundle import device_check; "
            f"r = device_check({str(made_bundle)!r}, warmup=0, iterations=1); "
            "assert r['passed']; bad = [m for m in ('torch', 'onnx', 'modelopt') if m in sys.modules]; "
            "assert not bad, bad")
    root = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())  # the repository
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_bundle_records_the_onnx_output_names(made_bundle):
    meta = json.loads((made_bundle / bundle_mod.BUNDLE_META).read_text())
    assert meta["input_name"] == "input" and meta["output_names"] == ["logits"]


def test_truncated_tarball_is_named_as_truncated(made_bundle, tmp_path):
    tarball = made_bundle.parent / "nano-bundle.tar.gz"
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=r"cut\.tar\.gz' is incomplete or truncated .* copy it again"):
        bundle_mod.device_check(cut)
    result = CliRunner().invoke(device_check_cmd, [str(cut)])
    assert result.exit_code == 1 and "Aborted" not in result.output
    assert "is incomplete or truncated" in result.output and len(result.output.strip().splitlines()) <= 2


def test_engine_is_reused_only_for_the_same_onnx_and_profile(tmp_path):
    from xcit_export.io import sha256_file
    from xcit_export.targets.tensorrt.engine import profile_record

    engine, meta_path = tmp_path / "model.engine", tmp_path / "engine.json"
    engine.write_bytes(b"engine")
    wanted = {"onnx_sha256": "abc", "precision": "int8", "workspace_mb": 1024,
              "profile": profile_record("input", {"min": 1, "opt": 1, "max": 16}, [3, 224, 224])}
    meta_path.write_text(json.dumps({**wanted, "engine_sha256": sha256_file(engine)}))
    assert bundle_mod.engine_reusable(engine, meta_path, wanted)
    other = dict(wanted, profile=profile_record("input", {"min": 1, "opt": 8, "max": 32}, [3, 224, 224]))
    assert not bundle_mod.engine_reusable(engine, meta_path, other)
    engine.write_bytes(b"changed")
    assert not bundle_mod.engine_reusable(engine, meta_path, wanted)
    # what device-check asks of engine.json: an engine built before engines carried detailed layer
    # information (no profiling_verbosity recorded) is rebuilt once, then reused
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"onnx")
    bundle_meta = {"precision": "int8", "input_name": "input", "profile": {"min": 1, "opt": 1, "max": 16},
                   "input_shape": [3, 224, 224]}
    asked = bundle_mod.wanted_engine(onnx_path, bundle_meta)
    assert asked["profiling_verbosity"] == "detailed"
    old = {k: v for k, v in asked.items() if k != "profiling_verbosity"}
    meta_path.write_text(json.dumps({**old, "engine_sha256": sha256_file(engine)}))
    assert not bundle_mod.engine_reusable(engine, meta_path, asked)
    meta_path.write_text(json.dumps({**asked, "engine_sha256": sha256_file(engine)}))
    assert bundle_mod.engine_reusable(engine, meta_path, asked)


# --------------------------------------------------------------------------------------------
# device_check.pyz in a fresh virtual environment: numpy (+ onnxruntime), no xcit-export/torch/onnx/click
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def bare_python(tmp_path_factory):
    """A fresh venv (no pip, no system site-packages) and two PYTHONPATH folders of symlinks into the
    test interpreter's site-packages: numpy only, and numpy + onnxruntime (no network, ~1 s)."""
    import importlib.util

    root = tmp_path_factory.mktemp("bare-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    paths = {}
    for name, mods in (("numpy", ["numpy"]), ("numpy+onnxruntime", ["numpy", "onnxruntime"])):
        shim = root / name
        shim.mkdir()
        for mod in mods:
            location = Path(importlib.util.find_spec(mod).submodule_search_locations[0])
            for path in [location, location.parent / f"{mod}.libs"]:
                if path.exists():
                    (shim / path.name).symlink_to(path)
        paths[name] = str(shim)
    python = root / "venv" / "bin" / "python"

    def run(args, pythonpath, cwd):
        env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "PYTHONPATH": paths[pythonpath], "LC_ALL": "C.UTF-8"}
        return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)

    probe = run(["-c", "import importlib.util as u; print([m for m in ('xcit_export', 'torch', 'onnx', 'click', "
                       "'tensorrt', 'cuda') if u.find_spec(m)])"], "numpy+onnxruntime", root)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr  # none of these is there
    return run


def test_device_check_pyz_runs_with_numpy_and_onnxruntime_only(made_bundle, bare_python):
    tarball = made_bundle.parent / "nano-bundle.tar.gz"
    device = made_bundle.parent / "device"
    device.mkdir()
    with tarfile.open(tarball) as tar:
        tar.extractall(device)
    folder = device / "nano-bundle"
    proc = bare_python(["device_check.pyz", ".", "--warmup", "0", "--iterations", "2"], "numpy+onnxruntime", folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BUILT, NOT RUN" in proc.stdout and "no engine built" in proc.stdout
    report = json.loads((folder / "device-check" / "report.json").read_text())
    assert report["passed"] is True and report["engine"]["status"] == "not built"
    assert "standing in for the engine" in report["runner"]
    # the report merges with the host's report.json of the same model (xcit-export report merge)
    from xcit_export.report.gate import read_report
    from xcit_export.report.document import html_page, merge_reports, merged_markdown

    assert report["model"] == {"name": "xcit_nano_12_p16_224", "num_classes": 1000, "input_size": [224, 224]}
    merged = merge_reports([read_report(folder / "device-check" / "report.json")] * 2, ["host", "jetson"])
    assert "| jetson | tensorrt-fp32 | built | " in merged_markdown(merged)
    assert "device-check: xcit_nano_12_p16_224 / tensorrt-fp32" in html_page(merged)

    # tampered: refused before anything runs, today's message, non-zero exit
    golden = folder / "golden.npz"
    golden.write_bytes(golden.read_bytes()[:-10] + b"0123456789")
    proc = bare_python(["device_check.pyz", "."], "numpy+onnxruntime", folder)
    assert proc.returncode == 1 and "golden.npz' does not match its manifest" in proc.stderr, proc.stderr


def test_device_check_pyz_without_any_runtime_names_what_to_install(made_bundle, bare_python):
    proc = bare_python([str(made_bundle / "device_check.pyz"), str(made_bundle)], "numpy", made_bundle.parent)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("error: the bundle matches its manifest, but nothing here can run it")
    assert "sudo apt install python3-libnvinfer" in message and "cuda-python==12.6.*" in message
    assert "pip install onnxruntime" in message and "Traceback" not in proc.stderr


def test_device_check_reports_the_engine_layer_profile_and_survives_a_failing_profiler(made_bundle, monkeypatch,
                                                                                        tmp_path):
    """device_check's profile pass, with the CPU runner dressed as an engine whose layer_profile is
    known numbers (the profiler itself is tested against the TensorRT double in test_trt_runner.py)."""
    from xcit_export.report.gate import read_report
    from xcit_export.evaluate.profiling import breakdown
    from xcit_export.report.document import html_page, merge_reports
    from xcit_export.targets.tensorrt.layer_profile import SOURCE

    meta = json.loads((made_bundle / bundle_mod.BUNDLE_META).read_text())
    node_types = meta["onnx_node_types"]  # recorded at bundle time, for a device without onnx
    assert node_types and set(node_types.values()) >= {"Conv", "MatMul", "Softmax", "LayerNormalization"}
    seen = {}

    class Engine(trtmod.CpuStandInRunner):
        measures_latency = True
        fail = False

        def layer_profile(self, x, node_types=None):
            seen.update(batch=len(x), node_types=node_types, timed=True)
            if self.fail:
                raise RuntimeError("IProfiler exploded\nsecond line")
            runs = [{"CaskGemm": 2.0, "Myelin": 1.0}, {"CaskGemm": 4.0, "Myelin": 1.0}, {"CaskGemm": 3.0, "Myelin": 1.0}]
            return breakdown(SOURCE, runs, [5.0, 5.0, 5.0], len(x))

    def engine_runner(bundle, meta, work, require_engine, threads, cuda_graph, progress):
        return Engine(bundle / meta["onnx"], threads, "test"), {"status": "built", "path": "model.engine"}

    monkeypatch.setattr(bundle_mod, "_engine_runner", engine_runner)
    report = bundle_mod.device_check(made_bundle, warmup=0, iterations=2)
    entry = report["targets"][0]
    assert report["passed"] is True and seen["node_types"] == node_types
    assert seen["batch"] == entry["latency"]["batch"]  # the latency batch, so coverage() compares like with like
    assert [(o["op_type"], o["ms"], o["share"]) for o in entry["op_profile"]["ops"]] == [
        ("CaskGemm", 3.0, 0.75), ("Myelin", 1.0, 0.25)]
    assert "  layer profile: 4.000 ms profiled at batch 1: CaskGemm 75%, Myelin 25%" in bundle_mod.summary_lines(report)
    # what report merge and the HTML page make of it
    saved = read_report(Path(report["report_path"]))
    page = html_page(merge_reports([saved, saved], ["orin", "rtx"]))
    assert page.count("Where the time goes") == 2 and "TensorRT IProfiler" in page and "CaskGemm 75%" in page
    result = CliRunner().invoke(__import__("xcit_export.cli", fromlist=["main"]).main,
                                ["report", "merge", report["report_path"], report["report_path"], "--out",
                                 str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "CaskGemm 75%" in (tmp_path / "m" / "merged.html").read_text()

    Engine.fail = True  # a profiler failure is recorded, never fails the check
    report = bundle_mod.device_check(made_bundle, warmup=0, iterations=2)
    entry = report["targets"][0]
    assert report["passed"] is True and "op_profile" not in entry
    assert entry["op_profile_error"] == "RuntimeError: IProfiler exploded"
    assert "  layer profile failed: RuntimeError: IProfiler exploded" in bundle_mod.summary_lines(report)
    failed = read_report(Path(report["report_path"]))
    assert "the profiler failed (RuntimeError: IProfiler exploded)" in html_page(merge_reports([failed], ["orin"]))
    seen.clear()
    report = bundle_mod.device_check(made_bundle, warmup=0, iterations=2, profile=False)
    assert not seen and not {"op_profile", "op_profile_error"} & set(report["targets"][0])


def test_device_check_runs_the_scenarios_with_power_and_says_when_no_engine_ran(made_bundle, monkeypatch, tmp_path):
    """device_check --scenario: on the onnxruntime stand-in a plain note; on an "engine" (the CPU runner
    dressed as one, its pool a stand-in for targets/tensorrt/pool.py, tested against the TensorRT double in
    test_trt_pool.py) every scenario, with power from a fake tegrastats replaying a JetPack 6 line."""
    import stat

    from test_scenarios import FakePool
    from xcit_export.device import energy
    from xcit_export.evaluate.scenarios import scenario_options
    from xcit_export.targets.tensorrt import pool as trt_pool

    options = scenario_options("all", streams=2, seconds=0.2)
    report = bundle_mod.device_check(made_bundle, warmup=0, iterations=2, profile=False, scenarios=options)
    assert report["targets"][0]["scenarios"]["note"].startswith("no scenarios: no engine ran here")
    assert "conditions" in report and "before" in report["conditions"]

    class Engine(trtmod.CpuStandInRunner):
        measures_latency = True
        min_batch, max_batch, engine_path = 1, 2, made_bundle / "model.engine"

        def layer_profile(self, x, node_types=None):
            raise RuntimeError("not profiled here")

    def engine_runner(bundle, meta, work, require_engine, threads, cuda_graph, progress):
        return Engine(bundle / meta["onnx"], threads, "test"), {"status": "built", "path": "model.engine"}

    class Pool(FakePool):
        def __init__(self, engine_path, library, x, streams=2, cuda_graph=True, output_names=None):
            runner = trtmod.CpuStandInRunner(made_bundle / "model.fp32.onnx", 1, "test")
            super().__init__(streams=streams, batch=len(x), ms=2.0, outputs=runner.infer(x), label="fake TensorRT")
            runner.close()

    fake = tmp_path / "tegrastats"
    line = (Path(__file__).parent / "fixtures/tegrastats/jetpack6_orin_nano.txt").read_text().splitlines()[1]
    fake.write_text(f"#!/bin/sh\nwhile true; do echo '{line}'; sleep 0.01; done\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    real_source = energy.source
    monkeypatch.setattr(bundle_mod, "_engine_runner", engine_runner)
    monkeypatch.setattr(trt_pool, "EnginePool", Pool)
    monkeypatch.setattr(energy, "source", lambda: real_source(tegrastats=str(fake), interval_ms=10))
    report = bundle_mod.device_check(made_bundle, warmup=0, iterations=2, profile=False, scenarios=options)
    sc = report["targets"][0]["scenarios"]
    assert sc["multi_stream"]["streams"] == 2 and sc["multi_stream"]["p99_ms"] >= 2.0
    assert sc["offline"]["images_per_s"] > 0 and {p["batch"] for p in sc["offline"]["search"]} == {1, 2}
    power = sc["multi_stream"]["energy"]
    assert power["source"] == "tegrastats" and power["average_mw"] == 9856 and power["mj_per_image"] > 0
    lines = bundle_mod.summary_lines(report)
    assert any(line.startswith("  multi-stream: p50") and "mJ/image" in line for line in lines)


def test_every_size_goes_through_the_output_rule(tmp_path):
    """device-check's per-size golden data (golden_<H>x<W>.npz) is judged like the export size's: a
    constant or non-finite output fails there too (it was only compared with the thresholds)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    ref = rng.standard_normal((4, 10)).astype(np.float32)
    np.savez(tmp_path / "golden_32x32.npz", x=x, reference=ref, onnx_output=ref)
    meta = {"golden_sizes": {"32x32": {"file": "golden_32x32.npz"}}, "batch": "dynamic", "precision": "fp32",
            "output_names": ["logits"], "target": "tensorrt-fp32"}

    class Runner:
        device, measures_latency = "test", True

        def __init__(self, out):
            self.out = out

        def infer(self, batch):
            return [self.out[:len(batch)]]

    thresholds = {"min_cosine": 0.5}
    ok = bundle_mod._check_sizes(Runner(ref), tmp_path, meta, thresholds, lambda m: None)["32x32"]
    assert ok["status"] == "ok" and ok["passed"]
    const = bundle_mod._check_sizes(Runner(np.tile(ref[:1], (4, 1))), tmp_path, meta, thresholds, lambda m: None)
    assert const["32x32"]["status"] == "failed" and "ignores its input" in const["32x32"]["error"]
    nan = ref.copy()
    nan[1, 1] = np.nan
    bad = bundle_mod._check_sizes(Runner(nan), tmp_path, meta, thresholds, lambda m: None)["32x32"]
    assert bad["status"] == "failed" and bad["error"].startswith("1 of 4 outputs are not finite")
    scaled = bundle_mod._check_sizes(Runner(3 * ref), tmp_path, meta, thresholds, lambda m: None)["32x32"]
    assert scaled["status"] == "ok" and not scaled["passed"]
