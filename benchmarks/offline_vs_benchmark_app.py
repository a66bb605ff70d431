"""The offline scenario against ``benchmark_app -hint throughput`` on the same static-batch IR (issue 32).

For openvino-fp32 and openvino-int8 (static batch 1, xcit_nano_12_p16_224 at 224, random weights,
calibrated on the bundled demo set), in alternating rounds:

* ours: the offline scenario exactly as ``--scenario offline`` runs it (the throughput hint's own
  number of requests, then 1, 2... in flight; the best re-measured for ``--seconds``), its images/s;
* OpenVINO's ``benchmark_app -m model.xml -d CPU -hint throughput -t SECONDS`` (the wheel ships it),
  with the same threads (``-load_config`` INFERENCE_NUM_THREADS) and, for FP32, ``-infer_precision
  f32`` as our runner compiles it; its "Throughput: N FPS".

The figure is ours / benchmark_app's, from the medians of the rounds; the goal is within 10%.

    .venv/bin/python benchmarks/offline_vs_benchmark_app.py --rounds 3 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import log, machine  # noqa: E402 - benchmarks/ is the script's folder


def _benchmark_app(xml: Path, seconds: float, threads: int, precision: str | None) -> float:
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    config = xml.parent / f"benchmark_app_config_{threads}.json"
    config.write_text(json.dumps({"CPU": {"INFERENCE_NUM_THREADS": str(threads)}}))
    cmd = [exe, "-m", str(xml), "-d", "CPU", "-hint", "throughput", "-t", str(max(1, round(seconds))),
           "-load_config", str(config)]
    if precision:
        cmd += ["-infer_precision", precision]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    text = out.stdout + out.stderr
    m = re.search(r"Throughput:\s+([\d.]+)\s*FPS", text)
    if out.returncode != 0 or m is None:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{text[-2000:]}")
    return float(m.group(1))


def _ours(target, artifact, x: np.ndarray, seconds: float, threads: int) -> float:
    from xcit_export.evaluate.scenarios import OFFLINE, ScenarioOptions, offline_record, stream_counts

    options = ScenarioOptions(scenarios=(OFFLINE,), seconds=seconds).check()
    candidates = [lambda n=n: target.pool(artifact, x, streams=n, threads=threads)
                  for n in [None, *stream_counts(threads)]]
    return offline_record(options, candidates)["images_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    import xcit_export
    from xcit_export.targets import Artifact, get_target

    work = args.work or Path(tempfile.mkdtemp(prefix="xcit-offline-"))
    names = ["openvino-fp32", "openvino-int8"]
    log("building the static batch-1 IRs (reused when already there)")
    xcit_export.run("xcit_nano_12_p16_224", names, batch=1, eval_count=8, out=work, profile=False, iterations=3,
                    warmup=1, threads=args.threads)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    rows = {}
    for name in names:
        target, artifact = get_target(name), Artifact.from_dir(work / name)
        precision = "f32" if name.endswith("fp32") else None
        ours, theirs = [], []
        for r in range(args.rounds):
            pair = [("ours", lambda: _ours(target, artifact, x, args.seconds, args.threads)),
                    ("benchmark_app", lambda: _benchmark_app(artifact.path, args.seconds, args.threads, precision))]
            for who, fn in (pair if r % 2 == 0 else pair[::-1]):
                with open("/proc/loadavg") as fh:
                    load = fh.read().split()[:3]
                value = fn()
                (ours if who == "ours" else theirs).append(value)
                log(f"{name} round {r + 1} {who}: {value:,.1f} images/s (load {' '.join(load)})")
        rows[name] = {"ours": ours, "benchmark_app": theirs,
                      "ratio": round(statistics.median(ours) / statistics.median(theirs), 3)}
    print(json.dumps({"machine": machine(args.threads), "seconds": args.seconds, "rounds": args.rounds,
                      "results": rows}, indent=1))


if __name__ == "__main__":
    main()
