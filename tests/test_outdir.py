"""The output folder: one run at a time (lock), ordinary file modes, leftovers of dead runs removed,
and the headline INT8 command calibrating on the bundled demo set by default.

One scenario with real processes, in the order a user meets them:

1. a run dies by SIGKILL while holding the lock and exporting (a stand-in process that takes the
   lock and leaves an ``.onnx.*.tmp/`` folder the way a killed export does);
2. ``xcit-export --target onnxruntime-int8`` (no ``--calib``) in a subprocess under umask 0022,
   with ``--no-wait``: the dead holder must not block it, and it cleans the leftovers;
3. while it runs, a second run with ``--no-wait`` fails at once naming the folder and its pid, and
   a second run that waits (library call, umask 0077) starts only after the first has finished;
4. the final folder's report and artifacts come from the second run (build keys agree).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from xcit_export import io as io_mod
from xcit_export.cli import main
from xcit_export.errors import OutputDirBusyError
from xcit_export.outdir import LOCK_FILE, locked_output_dir, remove_dead_temps

ROOT = Path(__file__).resolve().parents[1]
MODEL = "xcit_nano_12_p16_224"
FAST = ["--input-size", "64", "--eval-count", "4", "--warmup", "1", "--iterations", "3"]
NOTE = "calibrated on the bundled demo set; pass --calib with your own images for real weights"


class umask:
    """Set the process umask for a block (subprocesses started inside inherit it)."""

    def __init__(self, mask: int):
        self.mask = mask

    def __enter__(self):
        self.old = os.umask(self.mask)

    def __exit__(self, *exc):
        os.umask(self.old)


def modes(folder: Path) -> dict[str, str]:
    """Relative path -> octal permission bits, for every file and folder below ``folder``."""
    out = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder)) + ("/" if p.is_dir() else "")] = oct(stat.S_IMODE(p.stat().st_mode))
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first (rc {proc.returncode}):\n{proc.stdout.read()}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: timed out")
        time.sleep(0.05)


def _lock_is_free(folder: Path) -> bool:
    import fcntl

    fd = os.open(str(folder / LOCK_FILE), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _dead_run(folder: Path) -> None:
    """A process that holds the lock with an export half-written, then dies of SIGKILL."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from xcit_export.io import atomic_dir
        from xcit_export.outdir import locked_output_dir
        with locked_output_dir(Path({str(folder)!r})) as out, atomic_dir(out / "onnx") as tmp:
            (tmp / "model.raw.onnx").write_bytes(b"half an export")
            print("exporting", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    assert proc.stdout.readline().strip() == "exporting"
    assert not _lock_is_free(folder)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    from xcit_export.options import RunOptions
    from xcit_export.pipeline import run

    folder = tmp_path_factory.mktemp("shared") / "out"
    # Module scope runs before conftest's per-test cache fixture: point the demo cache there too.
    cache = tmp_path_factory.getbasetemp() / "xcit-export-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XCIT_EXPORT_CACHE", str(cache))
        return _scenario(folder, RunOptions, run)


def _scenario(folder: Path, RunOptions, run) -> dict:
    _dead_run(folder)
    leftovers = sorted(p.name for p in folder.iterdir() if io_mod.is_atomic_temp(p.name))
    assert len(leftovers) == 1 and leftovers[0].startswith(".onnx.")
    assert _lock_is_free(folder)  # the kernel dropped the dead process's lock
    (folder / ".report.json.abc_1234.xcit-export.tmp").write_text("{")  # a report cut short the same way

    # First run: the headline command (INT8, no --calib) as a user types it, in its own process.
    with umask(0o022):
        first = subprocess.Popen(
            [sys.executable, "-m", "xcit_export.cli", "--model", MODEL, "--target", "onnxruntime-int8", *FAST,
             "--calib-size", "16", "--out", str(folder), "--no-wait"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=ROOT)
    lock = folder / LOCK_FILE
    _wait_for(lambda: lock.read_text().strip() == str(first.pid), first, "first run taking the lock")
    # Only the lock holder cleans, right after taking the lock (the dead holder did not block it).
    _wait_for(lambda: not [p for p in folder.iterdir() if io_mod.is_atomic_temp(p.name)], first,
              "first run removing the leftovers")

    busy = CliRunner().invoke(main, ["--model", MODEL, "--target", "onnxruntime-fp32", *FAST, "--out", str(folder),
                                     "--no-wait"])

    # Second run (library use) waits, then calibrates on 8 images instead of 16: a new INT8 artifact.
    seen: dict = {"messages": []}

    def progress(msg: str) -> None:
        if seen["messages"] and "waiting for it to finish" in seen["messages"][-1] and "after_wait" not in seen:
            # The lock is ours now: the first run has finished. Look at what it left.
            seen["after_wait"] = {"first_rc": first.poll(), "modes": modes(folder),
                                  "report": json.loads((folder / "report.json").read_text()),
                                  "report_md": (folder / "report.md").read_text(),
                                  "report_html": (folder / "report.html").read_text()}
        seen["messages"].append(msg)

    config = RunOptions(MODEL, ["onnxruntime-int8"], out=folder, input_size=(64, 64), calib_size=8, eval_count=4,
                        warmup=1, iterations=3)
    with umask(0o077):
        second = run(config, progress=progress)
    first_out, _ = first.communicate(timeout=60)
    # Third run, into a copy: the second's INT8 options spelled another way (per_channel=yes; its default is true).
    copy = folder.parent / "respelled"
    shutil.copytree(folder, copy)
    respelled = CliRunner().invoke(main, ["--model", MODEL, "--target", "onnxruntime-int8", "--input-size", "64",
                                          "--calib-size", "8", "--eval-count", "4", "--warmup", "1", "--iterations",
                                          "3", "--no-profile", "-O", "onnxruntime-int8:per_channel=yes",
                                          "--out", str(copy)])
    return {"folder": folder, "first_rc": first.returncode, "first_out": first_out, "first_pid": first.pid,
            "busy": busy, "second": second, "respelled": respelled, **seen}


def test_an_option_spelled_another_way_reuses_the_artifact(scenario):
    assert scenario["respelled"].exit_code == 0, scenario["respelled"].output
    (entry,) = json.loads((scenario["folder"].parent / "respelled" / "report.json").read_text())["targets"]
    assert entry["reused"] is True and entry["artifact"]["per_channel"] is True
    assert scenario["second"]["targets"][0]["reused"] is False


def test_a_second_run_fails_at_once_with_no_wait(scenario):
    busy = scenario["busy"]
    assert busy.exit_code == 1
    assert (f"output folder '{scenario['folder']}' is in use by another xcit-export run "
            f"(pid {scenario['first_pid']})") in busy.output
    assert "Traceback" not in busy.output


def test_a_second_run_waits_for_the_first(scenario):
    waits = [m for m in scenario["messages"] if "waiting for it to finish" in m]
    assert len(waits) == 1
    assert f"'{scenario['folder']}'" in waits[0] and f"(pid {scenario['first_pid']})" in waits[0]
    # It went on only after the first run had ended (and had written its whole report).
    assert scenario["after_wait"]["first_rc"] in (0, None)
    assert scenario["first_rc"] == 0, scenario["first_out"]
    assert scenario["after_wait"]["report"]["evaluation"]["calibration"]["count"] == 16


def test_headline_int8_run_calibrates_on_the_demo_set_and_says_so(scenario):
    first = scenario["after_wait"]
    calib = first["report"]["evaluation"]["calibration"]
    assert calib["source"] == "demo" and calib["default"] is True and calib["note"] == NOTE
    (target,) = first["report"]["targets"]
    assert target["status"] == "ok" and target["accuracy"]["cosine_min"] > 0.99
    line = f"- calibration: demo (16 images): {NOTE}"
    assert f"\ncalibration: demo (16 images): {NOTE}\n" in scenario["first_out"]  # printed above the results table
    assert line in first["report_md"]
    assert NOTE in first["report_html"]


def test_a_killed_runs_lock_and_leftovers_do_not_survive(scenario):
    # The first run was not blocked by the SIGKILLed holder (it ran with --no-wait and succeeded)
    # and removed the leftovers of the killed export (checked while it ran, in the fixture):
    # nothing hidden but the lock file remains.
    assert scenario["first_rc"] == 0, scenario["first_out"]
    hidden = [name for name in scenario["after_wait"]["modes"] if name.startswith(".")]
    assert hidden == [LOCK_FILE]


def test_files_get_ordinary_modes_under_the_umask(scenario):
    # First run under umask 0022: every file 0644, every folder 0755.
    first = scenario["after_wait"]["modes"]
    assert {"onnx/", "onnx/model.onnx", "onnxruntime-int8/model.int8.onnx", "report.html"} <= set(first)
    assert {m for name, m in first.items() if name.endswith("/")} == {"0o755"}
    assert {m for name, m in first.items() if not name.endswith("/")} == {"0o644"}
    # Second run under umask 0077: what it wrote is private; the ONNX it reused keeps its modes.
    second = modes(scenario["folder"])
    assert second["onnxruntime-int8/"] == "0o700"
    for name in ("onnxruntime-int8/model.int8.onnx", "onnxruntime-int8/artifact.json", "report.json",
                 "report.md", "report.html"):
        assert second[name] == "0o600", name
    assert second["onnx/"] == "0o755" and second["onnx/model.onnx"] == "0o644"


def test_final_folder_comes_from_one_run(scenario):
    folder, report = scenario["folder"], json.loads((scenario["folder"] / "report.json").read_text())
    assert report == json.loads(json.dumps(scenario["second"]))
    assert report["evaluation"]["calibration"]["count"] == 8
    onnx_meta = json.loads((folder / "onnx" / "artifact.json").read_text())
    assert report["export"]["build_key"] == onnx_meta["build_key"]
    (target,) = report["targets"]
    assert target["reused"] is False
    assert target["artifact"]["build_key"] == json.loads((folder / "onnxruntime-int8" / "artifact.json")
                                                         .read_text())["build_key"]
    assert target["artifact"]["build_key"] != scenario["after_wait"]["report"]["targets"][0]["artifact"]["build_key"]


def test_atomic_writers_follow_an_unusual_umask(tmp_path):
    with umask(0o027):
        io_mod.write_text_atomic(tmp_path / "a.txt", "x")
        with io_mod.atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
            io_mod.write_text_atomic(tmp / "g", "z")
        assert io_mod.current_umask() == 0o027
    assert modes(tmp_path) == {"a.txt": "0o640", "d/": "0o750", "d/f": "0o640", "d/g": "0o640"}


def test_lock_refuses_at_once_without_waiting_and_cleans_only_temporaries(tmp_path):
    # a user's own files named like temporaries, but not with this tool's suffix, stay (issue 29)
    keep = ["report.json", ".hidden", ".onnx.tmp", ".onnx.abcdefgh.tmp.bak", ".x.abcdefgh.tmp",
            ".onnx.abcdefgh.xcit-export.tmp.bak"]
    for name in keep:
        (tmp_path / name).write_text("keep")
    (tmp_path / ".onnx.abcdefgh.tmp").mkdir()
    keep.append(".onnx.abcdefgh.tmp")
    (tmp_path / ".onnx.abcdefgh.xcit-export.tmp").mkdir()  # ours: a killed run's export
    with locked_output_dir(tmp_path) as held:
        assert held == tmp_path and (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(OutputDirBusyError, match=rf"'{tmp_path}' is in use by another xcit-export run "
                                                     rf"\(pid {os.getpid()}\); wait for it to finish"):
            with locked_output_dir(tmp_path, wait=False):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, LOCK_FILE])
    assert remove_dead_temps(tmp_path) == []


def test_a_failed_run_that_wrote_nothing_leaves_the_folder_as_it_found_it(tmp_path):
    """Issue 30: no empty --out and no lone lock file after a run that stopped before writing."""
    for where in (tmp_path / "new" / "deeper", tmp_path / "empty"):
        if where.name == "empty":
            where.mkdir()
        with pytest.raises(RuntimeError):
            with locked_output_dir(where):
                raise RuntimeError("stopped before writing anything")
        assert not (tmp_path / "new").exists()  # the folders this run created are gone
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())  # it was there: it stays
    kept = tmp_path / "kept"
    with pytest.raises(RuntimeError):
        with locked_output_dir(kept):
            (kept / "report.json").write_text("{}")
            raise RuntimeError("stopped after writing")
    assert sorted(p.name for p in kept.iterdir()) == [LOCK_FILE, "report.json"]  # what was written stays


def test_a_waiter_on_a_removed_lock_file_locks_the_new_one(tmp_path):
    """The first run fails having written nothing and removes its lock file while a second waits on
    it: the second then holds the lock of the file the name points at, never a removed one."""
    import threading

    folder, events = tmp_path / "out", []

    def second():
        with locked_output_dir(folder, progress=lambda m: events.append("waiting")):
            events.append(("held", os.stat(folder / LOCK_FILE).st_ino))
            assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())

    with pytest.raises(RuntimeError):
        with locked_output_dir(folder):
            waiter = threading.Thread(target=second)
            waiter.start()
            _wait_until(lambda: "waiting" in events)
            raise RuntimeError("stopped before writing anything")
    waiter.join(timeout=30)
    assert events[0] == "waiting" and events[1][0] == "held"
    assert (folder / LOCK_FILE).exists()  # the second run's, made after the first's was removed
    assert events[1][1] == os.stat(folder / LOCK_FILE).st_ino


def _wait_until(condition, timeout: float = 30.0) -> None:
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.01)


# -- issue 22, item 7: the output folder holds only what we wrote ----------------------------------

def test_out_dot_keeps_a_users_own_onnx_folder_and_stops(tmp_path, monkeypatch):
    mine = tmp_path / "onnx"
    mine.mkdir()
    (mine / "my_model.onnx").write_text("the user's own file")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--model", MODEL, "--target", "onnxruntime-fp32", "--out", ".", *FAST])
    assert result.exit_code != 0
    assert "'onnx' already exists and was not made by xcit-export (it holds no artifact.json)" in result.output
    assert (mine / "my_model.onnx").read_text() == "the user's own file"
    assert sorted(p.name for p in mine.iterdir()) == ["my_model.onnx"]


def test_atomic_dir_replaces_only_its_own_or_empty_folders(tmp_path):
    from xcit_export.errors import OutputDirError

    ours, empty, theirs = tmp_path / "ours", tmp_path / "empty", tmp_path / "theirs"
    for folder in (ours, empty, theirs):
        folder.mkdir()
    (ours / "artifact.json").write_text("{}")
    (ours / "old").write_text("old")
    (theirs / "keep").write_text("keep")
    for folder in (ours, empty):
        with io_mod.atomic_dir(folder, marker="artifact.json") as tmp:
            (tmp / "new").write_text("new")
        assert sorted(p.name for p in folder.iterdir()) == ["new"]
    with pytest.raises(OutputDirError, match=rf"'{theirs}' already exists and was not made by xcit-export"):
        with io_mod.atomic_dir(theirs, marker="artifact.json") as tmp:
            pytest.fail("no work starts for a folder that cannot be replaced")
    (tmp_path / "file").write_text("a file")
    with pytest.raises(OutputDirError, match="is a file, not a folder this tool made"):
        with io_mod.atomic_dir(tmp_path / "file", marker="artifact.json"):
            pass
    assert (theirs / "keep").read_text() == "keep" and (tmp_path / "file").read_text() == "a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "ours", "theirs"]  # no temporaries


def test_the_lock_never_follows_a_planted_link(tmp_path):
    from xcit_export.errors import OutputDirError

    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's data")
    out = tmp_path / "shared"
    out.mkdir()
    (out / LOCK_FILE).symlink_to(victim)
    with pytest.raises(OutputDirError, match=rf"the lock file '{out / LOCK_FILE}' is a symbolic link"):
        with locked_output_dir(out):
            pass
    assert victim.read_text() == "someone else's data"
    (out / LOCK_FILE).unlink()
    os.link(victim, out / LOCK_FILE)  # a hard link: same inode, so writing the pid would change the victim
    with pytest.raises(OutputDirError, match="is a file with 2 hard links"):
        with locked_output_dir(out):
            pass
    assert victim.read_text() == "someone else's data"


def test_the_lock_file_is_written_in_place_never_truncated(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "ftruncate", lambda *a: calls.append(a))
    with locked_output_dir(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert calls == [] and (tmp_path / LOCK_FILE).read_text().strip() == ""


def test_atomic_writes_fsync_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    io_mod.write_text_atomic(tmp_path / "report.json", "{}")
    (_, src, dst), = [e for e in events if e[0] == "replace"]
    assert events.index(("fsync", src)) < events.index(("replace", src, dst))
    assert events[-1] == ("fsync", str(tmp_path))  # the rename itself is flushed
    events.clear()
    with io_mod.atomic_dir(tmp_path / "target", marker="artifact.json") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "model.bin").write_bytes(b"weights")
    synced = [e[1] for e in events if e[0] == "fsync"]
    renamed = next(i for i, e in enumerate(events) if e[0] == "replace")
    assert str(tmp / "sub" / "model.bin") in synced[:renamed] and str(tmp) in synced[:renamed]
    assert events[-1] == ("fsync", str(tmp_path))


def test_two_runs_rendering_the_demo_set_at_once_both_get_it_whole(tmp_path, monkeypatch):
    """Two threads ask for the same unrendered split at once: one renders it (under the render lock),
    the other waits and reads it; neither replaces the split under the other."""
    import threading

    from xcit_export.data import demo as demo_data
    from xcit_export.data.sets import demo_root, list_image_folder

    rendered, barrier = [], threading.Barrier(2)
    real_make_split = demo_data.make_split

    def make_split(*args, **kwargs):
        rendered.append(threading.get_ident())
        return real_make_split(*args, **kwargs)

    monkeypatch.setattr(demo_data, "make_split", make_split)
    results, errors = {}, []

    def reader(name):
        try:
            barrier.wait()
            root = demo_root(0, tmp_path / "cache", splits=("calib",), sizes={"calib": 30})
            paths, labels, _ = list_image_folder(root / "calib")
            results[name] = [p.read_bytes()[:4] for p in paths]  # every listed file is still there
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(rendered) == 1, "the split was rendered twice (the second render replaces the first's folder)"
    assert len(results["a"]) == len(results["b"]) == 30
    assert demo_data.split_is_complete(tmp_path / "cache", "calib", 0, 30)
