"""A recipe's second run before and after the reference cache (issue 32, item 4), alternating.

The "before" code is another commit of this repository (default: the commit this branch started
from), checked out with ``git worktree`` and run with the same virtual environment (``PYTHONPATH``
puts its package first); "after" is this checkout. Each side first runs the recipe once into its
own output folder (artifacts built, and here the reference cached), then the second runs alternate
(before, after, after, before, ...), each timed as a whole process (``xcit-export --recipe R --out
O -q``). The load average is recorded beside every run, because on a shared machine it moves the
figures more than anything measured here.

    .venv/bin/python benchmarks/rerun_speed.py --recipe recipes/ci-gate.toml --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, log, machine  # noqa: E402 - benchmarks/ is the script's folder

BASE = "3a02e28"  # the commit issue 32's branch started from (reference at the target's batch, no cache)


def _load() -> list[str]:
    with open("/proc/loadavg") as fh:
        return fh.read().split()[:3]


def _run(code: Path, recipe: Path, out: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(code))
    env.pop("XCIT_EXPORT_CACHE", None)  # the reference cache lives in the run's folder, as for a user
    cmd = [sys.executable, "-c", "import sys; from xcit_export.cli import main; sys.argv[0] = 'xcit-export'; main()",
           "--recipe", str(recipe), "--out", str(out), "-q"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(code), env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 1):  # 1: a threshold failed, still a timed run
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=REPO / "recipes" / "ci-gate.toml")
    ap.add_argument("--base", default=BASE, help="commit of the 'before' code")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", type=Path, help="folder for the worktree and outputs (default: a temporary one)")
    args = ap.parse_args()
    recipe = args.recipe.resolve()
    work = args.work or Path(tempfile.mkdtemp(prefix="xcit-rerun-"))
    before = work / "before-code"
    if not before.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.base], check=True,
                       capture_output=True)
    sides = {"before": before, "after": REPO}
    record = {"recipe": str(recipe.relative_to(REPO)), "base": args.base, "machine": machine(2), "runs": []}
    try:
        for name, code in sides.items():
            log(f"{name}: first run (builds artifacts)")
            load = _load()
            first = _run(code, recipe, work / f"out-{name}")
            record["runs"].append({"side": name, "run": "first", "seconds": round(first, 1), "load_before": load,
                                   "load_after": _load()})
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                load = _load()
                seconds = _run(sides[name], recipe, work / f"out-{name}")
                record["runs"].append({"side": name, "run": f"second #{r + 1}", "seconds": round(seconds, 1),
                                       "load_before": load, "load_after": _load()})
                log(f"{name} second run: {seconds:.1f} s (load {' '.join(load)})")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], capture_output=True)
    seconds = {n: [x["seconds"] for x in record["runs"] if x["side"] == n and x["run"] != "first"] for n in sides}
    record["ratio_per_round"] = [round(b / a, 2) for b, a in zip(seconds["before"], seconds["after"])]
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
