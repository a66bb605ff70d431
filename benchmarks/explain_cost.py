"""What ``--explain`` costs: a normal run against the same run with the debugger, alternated.

Issue 31's budget: the debugger on XCiT-nano with 16 images costs under 2x a normal run of the same
targets. Each round runs the same command twice from scratch (``--rebuild``, its own ``--out``):
once plain, once with ``--explain`` (every target explained on 16 stratified evaluation images),
in alternating order (A B, B A, ...) so a drifting load on a shared machine hits both alike. The
figure is the median over rounds of (explain run / plain run), in wall time and in CPU time (user +
system of the run's processes: what the run itself consumed, which a machine shared with other jobs
disturbs less than the wall clock), and the explain phase alone (the ``seconds`` the report records
per target). The 1-minute load average is recorded beside each run.

    .venv/bin/python benchmarks/explain_cost.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = "onnxruntime-fp32,onnxruntime-int8,openvino-fp32,openvino-int8"


def _command(out: Path, explain: bool) -> list[str]:
    cmd = [str(REPO / ".venv" / "bin" / "xcit-export"), "--model", "xcit_nano_12_p16_224", "--weights", "demo",
           "--target", TARGETS, "--calib", "demo", "--calib-size", "64", "--eval", "demo", "--eval-size", "64",
           "--out", str(out), "--rebuild", "--quiet", "--no-profile"]
    return cmd + (["--explain"] if explain else [])


def _once(out: Path, explain: bool) -> tuple[float, float, dict]:
    """Wall seconds, CPU seconds (user + system of the run's process tree) and the report."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(_command(out, explain), check=False, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report = json.loads((out / "report.json").read_text())
    return seconds, cpu, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="xcit-explain-cost-") as tmp:
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            times, phase = {}, 0.0
            for explain in order:
                load = os.getloadavg()[0]
                seconds, cpu, report = _once(Path(tmp) / f"r{r}-{int(explain)}", explain)
                times[explain] = (seconds, load, cpu)
                if explain:
                    phase = sum((t.get("divergence") or {}).get("seconds", 0.0) for t in report["targets"])
                    worst = {t["target"]: (t.get("divergence") or {}).get("worst", {}).get("module")
                             for t in report["targets"]}
            rows.append({"plain_s": round(times[False][0], 1), "explain_s": round(times[True][0], 1),
                         "ratio": round(times[True][0] / times[False][0], 3),
                         "plain_cpu_s": round(times[False][2], 1), "explain_cpu_s": round(times[True][2], 1),
                         "cpu_ratio": round(times[True][2] / times[False][2], 3), "explain_phase_s": round(phase, 1),
                         "load_1min": [round(times[False][1], 2), round(times[True][1], 2)], "worst": worst})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"targets": TARGETS, "rounds": rows,
                      "median_ratio": statistics.median(r["ratio"] for r in rows),
                      "median_cpu_ratio": statistics.median(r["cpu_ratio"] for r in rows)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
