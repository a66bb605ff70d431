"""A recipe matrix on a multi-node Ray cluster: a head and two worker nodes, each a separate Ray node
(its own raylet, resources and ports) on this machine, token authentication on (tests/ray_cluster.py).

    head: 1 CPU, pytorch          (the PyTorch reference runs here)
    w1:   1 CPU, kind-a
    w2:   1 CPU, kind-a, kind-b

The matrix (xcit_nano_12_p16_224 at 32x32, 32 demo images): onnxruntime-fp32 on kind-a and kind-b,
openvino-fp32 on kind-a. Its figures are compared with ``--executor local``'s (the same recipe
without device kinds, run in this process, which also builds the artifacts every cluster run reuses).

The drivers are ``xcit-export`` subprocesses (``--executor ray --ray-address``), as a user runs
them: a process holds one Ray connection, and this one may already hold the session's local Ray
(conftest.ray_executor). The tests run in file order: the last one kills the head.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]'); multi-node Ray tests skipped")

from ray_cluster import LocalRayCluster  # noqa: E402  (tests/ is on sys.path: pytest's rootdir-relative import)

from xcit_export.scale.executor import LocalExecutor  # noqa: E402
from xcit_export.scale.matrix import run_matrix  # noqa: E402
from xcit_export.recipe import load_recipe  # noqa: E402

MODEL = "xcit_nano_12_p16_224"
RECIPE = f"""
[model]
name = "{MODEL}"
input_size = 32
num_classes = 10
weights = "random"

[data]
eval = "demo"
eval_size = 32

[latency]
warmup = 1
iterations = 3
profile = false
{{latency}}
[targets.onnxruntime-fp32]
{{ort_devices}}
thresholds = {{{{ min_top1_agreement = 0.99 }}}}

[targets.openvino-fp32]
{{ov_devices}}
"""
CLUSTER_CELLS = dict(ort_devices='device = ["kind-a", "kind-b"]', ov_devices='device = "kind-a"')
NODES = {"head": {"pytorch": 1}, "w1": {"kind-a": 1}, "w2": {"kind-a": 1, "kind-b": 1}}
DRIVER_TIMEOUT_S = 420  # one driver run; on a free 2-core machine it takes ~15 s
LOSS_BOUND_S = 90  # a lost node's cells are settled within this (Ray declares it dead in ~2 s here)


def recipe_text(latency: str = "", **devices) -> str:
    return RECIPE.format(latency=latency, **{"ort_devices": "", "ov_devices": "", **devices})


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """``--executor local`` on the same matrix without device kinds: the figures to match, and the
    artifacts (built once) that every cluster run copies and reuses."""
    # Module fixtures run before conftest's per-test cache fixture: point at the session's cache here.
    os.environ["XCIT_EXPORT_CACHE"] = str(tmp_path_factory.getbasetemp() / "xcit-export-cache")
    root = tmp_path_factory.mktemp("local")
    path = root / "local.toml"
    path.write_text(recipe_text())
    report = run_matrix(load_recipe(path), LocalExecutor(), root / "out")
    assert all(c["status"] == "ok" for c in report["cells"]), [c.get("error") for c in report["cells"]]
    return root / "out", {(c["model"], c["target"]): c for c in report["cells"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head + two workers, started here and stopped at the end, leaving no process of theirs behind."""
    cache = tmp_path_factory.getbasetemp() / "xcit-export-cache"
    root = Path(tempfile.mkdtemp(prefix="xr", dir="/tmp"))  # short: Ray's socket paths live under it
    c = LocalRayCluster(root, env={"XCIT_EXPORT_CACHE": str(cache)})
    try:
        c.head(NODES["head"])
        c.workers({"w1": NODES["w1"], "w2": NODES["w2"]})
        assert all(n.node_id for n in c.nodes.values())
        yield c
    finally:
        left = c.stop(timeout=5)
        shutil.rmtree(root, ignore_errors=True)
    assert not left, f"Ray processes of the test cluster still alive: {left}"


def drive(cluster, local_out: Path, out: Path, recipe: str, watch=None) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``xcit-export --executor ray`` against the cluster into ``out`` (the local run's artifacts
    copied in, so nothing is rebuilt). ``watch(proc)`` is called every 0.1 s while it runs. Returns
    the finished process and its wall time."""
    shutil.copytree(local_out / MODEL, out / MODEL, ignore=shutil.ignore_patterns("cells"))
    path = out.parent / f"{out.name}.toml"
    path.write_text(recipe)
    exe = Path(sys.executable).parent / "xcit-export"
    cmd = [str(exe), "--recipe", str(path), "--executor", "ray", "--ray-address", cluster.address, "--out", str(out)]
    env = {**os.environ, **cluster.driver_env(), "XCIT_EXPORT_CACHE": cluster.env["XCIT_EXPORT_CACHE"]}
    t0 = time.monotonic()
    with open(out.parent / f"{out.name}.stdout", "w") as so, open(out.parent / f"{out.name}.stderr", "w") as se:
        proc = subprocess.Popen(cmd, env=env, stdout=so, stderr=se, text=True)
        try:
            while proc.poll() is None:
                if time.monotonic() - t0 > DRIVER_TIMEOUT_S:
                    proc.kill()
                    pytest.fail(f"the driver did not finish within {DRIVER_TIMEOUT_S} s")
                if watch is not None:
                    watch(proc)
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    done = subprocess.CompletedProcess(cmd, proc.returncode, (out.parent / f"{out.name}.stdout").read_text(),
                                       (out.parent / f"{out.name}.stderr").read_text())
    return done, time.monotonic() - t0


def _kinds_by_id(cluster) -> dict[str, set]:
    return {n.node_id: set(n.resources) for n in cluster.nodes.values()}


def _assert_placed(cell: dict, cluster) -> None:
    """Every task of the cell ran on a node that advertises the cell's kind, and says so."""
    kinds = _kinds_by_id(cluster)
    where = [cell["placement"]["latency"], *cell["placement"]["accuracy"]]
    assert len(where) == 1 + len(cell["placement"]["accuracy"]) >= 2
    for w in where:
        assert w["node_id"] in kinds, (cell["target"], w)
        assert cell["device_kind"] in kinds[w["node_id"]], (cell["target"], cell["device_kind"], w)
        assert set(w["kinds"]) == kinds[w["node_id"]] and w["node"]  # the node's kinds on record, hostname beside
    assert cell["node_id"] == cell["placement"]["latency"]["node_id"]


def test_matrix_on_three_nodes_equals_local_and_records_placement(cluster, local_run, tmp_path):
    local_out, local = local_run
    done, _ = drive(cluster, local_out, tmp_path / "out", recipe_text(**CLUSTER_CELLS))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "out" / "matrix.json").read_text())
    assert report["executor"] == "ray"
    assert {n["node_id"]: set(n["kinds"]) for n in report["nodes"]} == _kinds_by_id(cluster)
    cells = {(c["target"], c["device_kind"]): c for c in report["cells"]}
    assert set(cells) == {("onnxruntime-fp32", "kind-a"), ("onnxruntime-fp32", "kind-b"), ("openvino-fp32", "kind-a")}
    for (target, kind), cell in cells.items():
        assert cell["status"] == "ok" and cell.get("passed") is not False, cell.get("error")
        assert cell["accuracy"] == local[(MODEL, target)]["accuracy"], (target, kind)  # identical, not close
        assert cell["latency"]["median_ms"] > 0 and cell["latency"]["iterations"] >= 3
        _assert_placed(cell, cluster)
        # the per-cell report carries the same row and placement
        saved = json.loads((tmp_path / "out" / MODEL / "cells" / f"{target}@{kind}.json").read_text())
        assert saved["cell"]["placement"] == cell["placement"] and saved["key"]["device_kind"] == kind
    # kind-b exists on w2 only: the cell ran there (its id read from w2's own raylet, not from Ray's answers)
    assert cells[("onnxruntime-fp32", "kind-b")]["node_id"] == cluster.nodes["w2"].node_id
    ref = report["models"][MODEL]["reference_placement"]
    assert ref and all(r["node_id"] == cluster.nodes["head"].node_id and "pytorch" in r["kinds"] for r in ref)
    md = (tmp_path / "out" / "matrix.md").read_text()
    assert cluster.nodes["w2"].node_id[:8] in md
    html = (tmp_path / "out" / "matrix.html").read_text()
    assert f'href="{MODEL}/cells/onnxruntime-fp32@kind-b.json"' in html


def test_driver_without_the_token_is_refused_with_the_fix(cluster, tmp_path):
    """Token authentication is really on: a driver without RAY_AUTH_MODE=token is refused (after Ray's
    ~20 s of retries), in one sentence naming the settings, before anything is built."""
    path = tmp_path / "m.toml"
    path.write_text(recipe_text(**CLUSTER_CELLS))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    done = subprocess.run([str(Path(sys.executable).parent / "xcit-export"), "--recipe", str(path), "--executor",
                           "ray", "--ray-address", cluster.address, "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot join the Ray cluster" in errors[0], done.stderr
    assert "set RAY_AUTH_MODE=token (it is unset here)" in errors[0] and "RAY_AUTH_TOKEN" in errors[0]
    assert not (tmp_path / "out" / MODEL).exists()


def test_worker_node_lost_mid_matrix(cluster, local_run, tmp_path):
    """SIGKILL w2's raylet while one of our tasks runs there: kind-a cells finish on w1, the kind-b
    cell is failed 'node lost: no live node of kind kind-b' in bounded time."""
    local_out, local = local_run
    assert cluster.raylet_pid("w2"), "w2 must be alive for this test"
    killed: dict = {}

    def kill_w2_when_busy(proc):
        if not killed and cluster.busy_workers("w2"):
            killed["tasks"] = cluster.busy_workers("w2")
            killed["pid"] = cluster.kill_node("w2")
            killed["at"] = time.monotonic()

    # Latency takes >= 2 s a cell, so the kind-b cell (on w2 alone) cannot finish before w2's first task is seen.
    done, _ = drive(cluster, local_out, tmp_path / "out", recipe_text("min_seconds = 2", **CLUSTER_CELLS),
                    watch=kill_w2_when_busy)
    after_kill = time.monotonic() - killed["at"]
    assert killed and killed["tasks"], "w2 never ran one of our tasks"
    assert done.returncode == 1, done.stdout + done.stderr  # a failed cell
    assert after_kill < LOSS_BOUND_S
    report = json.loads((tmp_path / "out" / "matrix.json").read_text())
    cells = {(c["target"], c["device_kind"]): c for c in report["cells"]}
    lost = cells[("onnxruntime-fp32", "kind-b")]
    assert lost["status"] == "failed"
    assert "node lost: no live node of kind kind-b" in lost["error"], lost["error"]
    assert cluster.nodes["w2"].node_id in lost["error"]
    assert [n["node_id"] for n in lost["lost_nodes"]] == [cluster.nodes["w2"].node_id]
    for target in ("onnxruntime-fp32", "openvino-fp32"):
        cell = cells[(target, "kind-a")]
        assert cell["status"] == "ok", cell.get("error")
        assert cell["accuracy"] == local[(MODEL, target)]["accuracy"]
        _assert_placed(cell, cluster)
    assert [n["node_id"] for n in report["nodes"] if n.get("lost")] == [cluster.nodes["w2"].node_id]
    assert json.loads((tmp_path / "out" / MODEL / "cells" / "onnxruntime-fp32@kind-b.json").read_text())["cell"][
        "status"] == "failed"
    # the lost node's processes end with it (its `ray start --block` stops the rest)
    deadline = time.monotonic() + 30
    while cluster.processes("w2") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not cluster.processes("w2")


def test_head_lost_stops_the_run_with_one_line(cluster, local_run, tmp_path):
    """SIGKILL the head's GCS and raylet once a cell is on disk: the driver stops with one line, in
    bounded time, and the finished cell stays on disk. (Kills the head: this module's last test.)"""
    local_out, _ = local_run
    out = tmp_path / "out"
    killed: dict = {}

    def kill_head_after_first_cell(proc):
        if not killed and list((out / MODEL / "cells").glob("*.json")):
            killed["cells"] = sorted(p.name for p in (out / MODEL / "cells").glob("*.json"))
            cluster.kill_head()
            killed["at"] = time.monotonic()

    # Only kind-a cells (w2 may be gone), >= 5 s each on w1, so the second is still running at the kill
    # even when a loaded machine starves the driver for a few seconds (2 s was lost once at load 8).
    done, _ = drive(cluster, local_out, out, recipe_text("min_seconds = 5", ort_devices='device = "kind-a"',
                                                         ov_devices='device = "kind-a"'),
                    watch=kill_head_after_first_cell)
    assert killed, "no cell finished before the driver ended"
    assert done.returncode == 1
    assert time.monotonic() - killed["at"] < LOSS_BOUND_S
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the Ray head at" in errors[0] and "stopped answering mid-run" in errors[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (out / "matrix.json").exists()  # the run stopped; what finished is in the cell files
    for name in killed["cells"]:
        cell = json.loads((out / MODEL / "cells" / name).read_text())["cell"]
        assert cell["status"] == "ok" and cell["accuracy"]["count"] == 32
