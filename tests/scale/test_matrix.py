"""Recipe matrices on the local and Ray executors, sharded evaluation, retries (docs/ray.md).

One small matrix is built once (2 models x 3 targets at 32x32, random weights, 64 demo images);
the Ray tests run on the session's one local Ray cluster of 2 CPUs (conftest.ray_executor).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from xcit_export.errors import BackendUnavailableError, RecipeError
from xcit_export.scale.executor import LocalExecutor, Task
from xcit_export.scale.matrix import run_matrix
from xcit_export.recipe import load_recipe, to_run_options
from xcit_export.evaluate.counts import AccuracyCounts
from xcit_export.scale.sharding import shard_ranges
from xcit_export.evaluate.validate import compare_outputs

MODELS = ("xcit_nano_12_p16_224", "xcit_nano_12_p8_224")
TARGETS = ("onnxruntime-fp32", "openvino-fp32", "openvino-fp16")  # no calibration: cheap builds
MATRIX = f"""
[model]
name = {list(MODELS)!r}
input_size = 32
num_classes = 10
weights = "random"

[data]
eval = "demo"
eval_size = 64

[latency]
warmup = 1
iterations = 3
profile = false
scenarios = ["offline"]
scenario_seconds = 0.1

[targets.onnxruntime-fp32]
device = ["local", "jetson-orin"]
thresholds = {{ min_top1_agreement = 0.99 }}

[targets.openvino-fp32]

[targets.openvino-fp16]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# Recipes and placement (no cluster)
# --------------------------------------------------------------------------------------------

def test_recipe_lists_models_and_device_kinds(tmp_path):
    recipe = load_recipe(write(tmp_path, MATRIX))
    assert recipe.is_matrix and recipe.models() == list(MODELS)
    assert recipe.targets[0].devices == ["local", "jetson-orin"] and recipe.targets[1].devices == [None]
    with pytest.raises(RecipeError, match="lists 2 models: run the recipe as a matrix"):
        to_run_options(recipe)
    assert to_run_options(recipe, model_name=MODELS[1]).model == MODELS[1]


@pytest.mark.parametrize("line, message", [
    ('device = "GPU"', "resource Ray reserves"),
    ('device = 3', "must be a device kind"),
    ('device = "jetson orin"', "is not a name"),
    ('device = ["a", "a"]', "distinct kinds"),
])
def test_bad_device_kinds_name_the_key(tmp_path, line, message):
    path = write(tmp_path, f'[model]\nname = "xcit_nano_12_p16_224"\n[targets.onnxruntime-fp32]\n{line}\n')
    with pytest.raises(RecipeError, match=message) as info:
        load_recipe(path)
    assert "[targets.onnxruntime-fp32] device" in str(info.value)


def test_unknown_model_in_list(tmp_path):
    with pytest.raises(RecipeError, match=r"\[model\] name.*xcit_nano_12_p16_22"):
        load_recipe(write(tmp_path, '[model]\nname = ["xcit_nano_12_p16_224", "xcit_nano_12_p16_22"]\n'
                                    '[targets.onnxruntime-fp32]\n'))


def test_matrix_no_node_can_run_is_rejected_before_work(tmp_path):
    path = write(tmp_path, '[model]\nname = "xcit_nano_12_p16_224"\n[targets.onnxruntime-fp32]\n'
                           'device = "jetson-orin"\n')
    with pytest.raises(RecipeError, match=r"no cell of the matrix can run: cell xcit_nano_12_p16_224 x "
                                          r"onnxruntime-fp32 x jetson-orin: no node advertises device kind"):
        run_matrix(load_recipe(path), LocalExecutor(), tmp_path / "out")
    assert not (tmp_path / "out" / "xcit_nano_12_p16_224").exists()  # nothing was built


def test_matrix_with_bad_data_is_one_error_before_any_export(tmp_path):
    from xcit_export.errors import DataError

    path = write(tmp_path, MATRIX.replace('eval = "demo"', 'eval = "missing-folder"'))
    with pytest.raises(DataError, match="--eval '.*missing-folder' does not exist"):
        run_matrix(load_recipe(path), LocalExecutor(), tmp_path / "out")
    assert not (tmp_path / "out" / MODELS[0] / "onnx").exists()


def test_executor_ray_without_ray_is_one_sentence(tmp_path, monkeypatch):
    from xcit_export.cli import main
    from xcit_export.scale.executor import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    with pytest.raises(BackendUnavailableError, match=r"pip install -e '\.\[ray\]'"):
        RayExecutor()
    result = CliRunner().invoke(main, ["--recipe", str(write(tmp_path, MATRIX)), "--executor", "ray",
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "needs Ray, which is not installed" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o" / MODELS[0]).exists()


def test_unreachable_ray_address_is_one_sentence():
    import socket

    from xcit_export.errors import XcitExportError
    from xcit_export.scale.executor import _check_reachable

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(XcitExportError, match=f"--ray-address 127.0.0.1:{port}: no Ray head answers there"):
        _check_reachable(f"127.0.0.1:{port}")


# --------------------------------------------------------------------------------------------
# Counting (no cluster)
# --------------------------------------------------------------------------------------------

def test_shards_start_on_batch_boundaries():
    for count, shards, batch in [(1000, 4, 16), (64, 3, 16), (5, 8, 2), (1, 4, 16), (100, 1, 7)]:
        ranges = shard_ranges(count, shards, batch)
        assert ranges[0][0] == 0 and ranges[-1][1] == count and len(ranges) <= shards
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert all(lo % batch == 0 and hi > lo for lo, hi in ranges)


def test_counts_add_up_to_the_unsharded_comparison():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((301, 10)).astype(np.float32)
    tgt = ref + rng.standard_normal(ref.shape).astype(np.float32) * 0.3  # some top-1 flips
    labels = rng.integers(0, 10, 301)
    whole = compare_outputs(tgt, ref, labels)
    for cuts in ([301], [1, 301], [100, 200, 301], [7, 8, 150, 299, 301]):
        total, lo = AccuracyCounts(), 0
        for hi in cuts:
            total = total + AccuracyCounts.of(tgt[lo:hi], ref[lo:hi], labels[lo:hi])
            lo = hi
        got = total.to_dict()
        for key in ("count", "top1", "top5", "top1_agreement", "top5_agreement", "reference_top1",
                    "reference_top5", "max_abs_error", "cosine_min", "labelled_count"):
            assert got[key] == whole[key], key
        assert got["cosine_mean"] == pytest.approx(whole["cosine_mean"], abs=1e-12)
        assert got["mean_abs_error"] == pytest.approx(whole["mean_abs_error"], rel=1e-12)
        assert 0 < got["top1_agreement"] < 1  # the test data really disagrees somewhere


def test_local_executor_retries_once_then_reports(tmp_path):
    marker = tmp_path / "tried"

    def flaky():
        if not marker.exists():
            marker.touch()
            raise RuntimeError("transient")
        return "second time lucky"

    def broken():
        raise ValueError("always")

    ok, failed, placed = LocalExecutor().run([Task(flaky, (), "flaky"), Task(broken, (), "broken"),
                                               Task(abs, (-1,), "jetson", kind="jetson-orin")])
    assert ok.ok and ok.value == "second time lucky"
    assert not failed.ok and failed.error == "failed twice (retried once): ValueError: always"
    assert not placed.ok and "no node advertises device kind 'jetson-orin'" in placed.error


# --------------------------------------------------------------------------------------------
# The matrix, local and on Ray
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The matrix run serially (``--executor local``): builds every artifact once."""
    os.environ["XCIT_EXPORT_CACHE"] = str(tmp_path_factory.getbasetemp() / "xcit-export-cache")
    root = tmp_path_factory.mktemp("matrix")
    recipe = load_recipe(write(root, MATRIX))
    report = run_matrix(recipe, LocalExecutor(), root / "out")
    return recipe, root / "out", report


def _cells(report):
    return {(c["model"], c["target"], c["device_kind"]): c for c in report["cells"]}


def test_local_matrix(built):
    _, out, report = built
    cells = _cells(report)
    assert len(cells) == 2 * 4  # 2 models x (3 targets + one extra device kind)
    for model in MODELS:
        missing = cells[(model, "onnxruntime-fp32", "jetson-orin")]
        assert missing["status"] == "failed" and "no node advertises device kind 'jetson-orin'" in missing["error"]
        for target, kind in [("onnxruntime-fp32", "local"), ("openvino-fp32", "any"), ("openvino-fp16", "any")]:
            cell = cells[(model, target, kind)]
            assert cell["status"] == "ok", cell.get("error")
            assert cell["accuracy"]["count"] == 64 and cell["accuracy"]["top1_agreement"] >= 0.9
            assert cell["latency"]["median_ms"] > 0
            assert cell["scenarios"]["offline"]["images_per_s"] > 0, cell["scenarios"]  # measured in the cell
    assert (out / "matrix.json").exists() and "jetson-orin" in (out / "matrix.md").read_text()
    assert "## Offline" in (out / "matrix.md").read_text() and "<h3>Offline" in (out / "matrix.html").read_text()


def test_ray_matrix_equals_local(built, ray_executor):
    recipe, out, local = built
    report = run_matrix(recipe, ray_executor, out, shards=3)  # reuses the artifacts built above
    assert report["executor"] == "ray" and report["shards"] == 3
    ray_cells, local_cells = _cells(report), _cells(local)
    assert ray_cells.keys() == local_cells.keys()
    for key, cell in ray_cells.items():
        assert cell["status"] == local_cells[key]["status"], (key, cell.get("error"))
        if cell["status"] == "ok":
            assert cell["reused"] is True
            assert cell["accuracy"] == local_cells[key]["accuracy"], key  # identical, not close
            assert cell["latency"]["median_ms"] > 0 and cell["latency"]["iterations"] >= 3
            assert cell["scenarios"]["offline"]["images_per_s"] > 0  # on the Ray worker that timed it
        else:
            assert "no node advertises device kind 'jetson-orin'" in cell["error"]
            assert "ray start --address HEAD:6379 --resources '{\"jetson-orin\": 1}'" in cell["error"]


def test_1000_demo_images_in_4_shards_equal_unsharded(built, ray_executor):
    """Sharded on Ray through the engine's own task functions vs one unsharded in-process pass."""
    from xcit_export.data.sets import evaluation_set
    from xcit_export.models.deploy import DeployModel
    from xcit_export.scale.sharding import CellRunner, evaluate_shard, pack_artifact, reference_shard
    from xcit_export.targets import Artifact, get_target
    from xcit_export.evaluate.validate import run_in_batches, torch_infer
    from xcit_export.models.weights import load_model
    from xcit_export.models.zoo import get_spec

    _, out, _ = built
    spec = get_spec(MODELS[0]).with_overrides(10, (32, 32))
    model = DeployModel(load_model(spec, "random", 0), spec.preprocessing, "logits", "nchw", seed=0)
    source = evaluation_set("demo", spec.preprocessing, num_classes=10)
    artifact = Artifact.from_dir(out / MODELS[0] / "onnxruntime-fp32")
    assert len(source) == 1000

    x, labels = source.load()
    reference = run_in_batches(torch_infer(model, 1), x, 16)[0]
    runner = get_target("onnxruntime-fp32").load(artifact, threads=1)
    whole = compare_outputs(run_in_batches(runner.infer, x, 16)[0], reference, labels)
    runner.close()

    ranges = shard_ranges(len(source), 4, 16)
    model_ref, source_ref = ray_executor.put(model), ray_executor.put(source)
    refs = ray_executor.run([Task(reference_shard, (model_ref, source_ref, lo, hi, 16, 1, "nchw"), f"ref {lo}")
                             for lo, hi in ranges])
    cell = CellRunner("onnxruntime-fp32", "onnxruntime-fp32", ray_executor.put(pack_artifact(artifact)), {}, 16)
    shards = ray_executor.run([Task(evaluate_shard, (ray_executor.put(r.value), source_ref, lo, hi, 16, [cell],
                                                     ["logits"], True, 1, "nchw"), f"acc {lo}")
                               for (lo, hi), r in zip(ranges, refs)])
    assert len(ranges) == 4 and all(o.ok for o in refs + shards), [o.error for o in refs + shards]
    total = AccuracyCounts()
    for o in shards:
        (streamed,) = o.value["result"].targets
        total = total + streamed.counts["logits"]
    got = total.to_dict()
    for key in ("count", "top1", "top5", "top1_agreement", "top5_agreement", "reference_top1", "cosine_min",
                "max_abs_error"):
        assert got[key] == whole[key], key
    assert got["count"] == 1000


def test_killed_worker_is_retried_once(ray_executor, tmp_path):
    marker = tmp_path / "first-attempt"

    def dies_once():
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process is lost mid-task
        return os.getpid()

    def always_dies():
        os.kill(os.getpid(), signal.SIGKILL)

    def fine(a, b):
        return a + b

    retried, lost, fine = ray_executor.run([Task(dies_once, (), "dies once"), Task(always_dies, (), "always dies"),
                                            Task(fine, (1, 2), "fine")])
    assert marker.exists() and retried.ok and retried.value != os.getpid()
    assert not lost.ok and lost.error.startswith("lost twice (retried once)") and "always dies" == lost.label
    assert fine.ok and fine.value == 3


def test_latency_tasks_hold_the_node_alone(ray_executor):
    """An exclusive task (latency) asks for the kind's whole unit and every CPU of the node, so it
    never overlaps another of ours; a shared one (accuracy) asks for 1 CPU and 0.01 of the kind."""
    import time

    def window():
        start = time.monotonic()
        time.sleep(0.5)
        return start, time.monotonic()

    lat, acc = Task(window, (), "latency", kind="local", exclusive=True), Task(window, (), "accuracy", kind="local")
    assert ray_executor._options(lat) == {"max_retries": 1, "retry_exceptions": True, "name": "window",
                                          "num_cpus": 2, "resources": {"local": 1.0}}
    assert ray_executor._options(acc)["num_cpus"] == 1 and ray_executor._options(acc)["resources"] == {"local": 0.01}
    runs = ray_executor.run([lat, acc, Task(window, (), "latency 2", kind="local", exclusive=True)])
    assert all(o.ok for o in runs)
    (a0, a1), (b0, b1), (c0, c1) = (o.value for o in runs)
    assert (a1 <= b0 or b1 <= a0) and (a1 <= c0 or c1 <= a0) and (b1 <= c0 or c1 <= b0)


# --------------------------------------------------------------------------------------------
# The driver killed mid-matrix, and run again
# --------------------------------------------------------------------------------------------

RESUME = f"""
[model]
name = "{MODELS[0]}"
input_size = 32
num_classes = 10
weights = "random"

[data]
eval = "demo"
eval_size = 64

[latency]
warmup = 1
iterations = 3
profile = false
min_seconds = 1.5

[targets.onnxruntime-fp32]
device = ["local", "pytorch"]
thresholds = {{ min_top1_agreement = 0.99 }}

[targets.openvino-fp32]
"""
# what a re-measurement may change
MEASURED = ("latency", "load_ms", "memory_mb", "finished", "reused", "speedup_vs_pytorch", "throughput",
            "latency_median_ms", "slopes")


def _comparable(report: dict, out: Path) -> dict:
    """A matrix report without what differs between runs of the same cells: when it was written, the
    output folder, and the measured timings (and the artifact-reuse flag) of each cell and model."""
    text = json.dumps({k: v for k, v in report.items() if k != "created"}).replace(str(out), "OUT")
    return _untimed(json.loads(text))


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in MEASURED}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def test_driver_killed_mid_matrix_resumes(built, tmp_path):
    """SIGKILL ``xcit-export`` once a cell is on disk; the same command again reuses the finished
    cells (figures and latency as measured), runs only the rest, says how many it reused, and
    writes the matrix an uninterrupted run writes."""
    import subprocess
    import time

    _, built_out, _ = built
    path = write(tmp_path, RESUME)
    a, b = tmp_path / "uninterrupted", tmp_path / "killed"
    for out in (a, b):  # the artifacts are built already: copy them, so neither run rebuilds
        shutil.copytree(built_out / MODELS[0], out / MODELS[0], ignore=shutil.ignore_patterns("cells"))
    whole = run_matrix(load_recipe(path), LocalExecutor(), a)
    assert [c["status"] for c in whole["cells"]] == ["ok"] * 3

    cmd = [str(Path(sys.executable).parent / "xcit-export"), "--recipe", str(path), "--executor", "local",
           "--out", str(b)]
    cells = b / MODELS[0] / "cells"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while proc.poll() is None and not list(cells.glob("*.json")) and time.monotonic() - t0 < 600:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no clean-up of any kind
    proc.wait()
    finished = {p.name: json.loads(p.read_text()) for p in cells.glob("*.json")}
    assert 1 <= len(finished) < 3, sorted(finished)  # killed mid-matrix
    assert not (b / "matrix.json").exists()

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    said = " ".join(rerun.stderr.split())  # rich wraps long progress lines
    assert f"resuming: reused {len(finished)} of 3 cell(s) finished by an earlier run" in said, said
    assert said.count(f"cell {MODELS[0]} x ") == 3 - len(finished)  # only the unfinished cells ran
    report = json.loads((b / "matrix.json").read_text())
    by_file = {f"{c['target']}@{c['device_kind']}.json": c for c in report["cells"]}
    for name, saved in finished.items():  # reused as measured: accuracy counts, latency, placement
        assert {k: v for k, v in by_file[name].items() if k not in ("checks", "passed", "limits")} == saved["cell"]
    assert _comparable(report, b) == _comparable(whole, a)


# --------------------------------------------------------------------------------------------
# One engine: a recipe through the matrix and as a single run gives the same figures (issue 28)
# --------------------------------------------------------------------------------------------

SIZES = f"""
[model]
name = "{MODELS[0]}"
input_size = 32
num_classes = 10

[export]
dynamic_size = true
eval_sizes = [32, 48]

[data]
eval = "demo"
eval_size = 16

[latency]
warmup = 1
iterations = 2
profile = false

[targets.onnxruntime-fp32]
thresholds = {{ min_cosine = 0.999 }}
"""
TIMED = {"latency", "latency_median_ms", "load_ms", "memory_mb", "speedup_vs_pytorch", "reused", "throughput",
         "slopes"}


def _figures(value):
    """``value`` without what a second measurement of the same artifact may change (timings)."""
    if isinstance(value, dict):
        return {k: _figures(v) for k, v in value.items() if k not in TIMED}
    if isinstance(value, list):
        return [_figures(v) for v in value]
    return value


def test_a_recipe_gives_the_same_figures_through_the_matrix_and_as_a_single_run(tmp_path):
    """[export] dynamic_size and eval_sizes through the matrix (local executor): per-size results for
    the cell, each size measured once, equal, figure for figure, to a single run of the same recipe."""
    from xcit_export.api import run_recipe

    path = write(tmp_path, SIZES)
    matrix = run_matrix(load_recipe(path), LocalExecutor(), tmp_path / "m")
    (cell,) = matrix["cells"]
    assert cell["status"] == "ok" and cell["passed"] is True, cell.get("error")
    assert [s["size"] for s in cell["sizes"]] == ["32x32", "48x48"] and all(s["status"] == "ok" for s in cell["sizes"])
    assert cell["sizes"][0]["latency"] == cell["latency"]  # the export size is in --eval-sizes: measured once
    assert any(c["metric"] == "cosine_min @ 48x48" for c in cell["checks"])
    single = run_recipe(path, out=tmp_path / "m" / MODELS[0]).to_dict()  # the matrix's own artifacts, reused
    (entry,) = single["targets"]
    assert entry["reused"] is True
    shared = (set(entry) & set(cell)) - TIMED
    assert {"accuracy", "sizes", "checks", "passed", "status", "artifact"} <= shared
    for key in shared:
        assert _figures(cell[key]) == _figures(entry[key]), key
    model = matrix["models"][MODELS[0]]
    assert _figures(model["sizes"]) == _figures(single["sizes"])
    assert model["reference"]["accuracy"] == single["reference"]["accuracy"]
    assert model["evaluation"]["count"] == single["evaluation"]["count"] == 16
