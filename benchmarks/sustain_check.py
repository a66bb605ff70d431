"""The stability verdict on a real run: a sustained single-stream run on one core, idle or loaded.

The runner and ``--sustain``'s verdict are the pipeline's (``evaluate/scenarios.py``,
``single_stream_record``), on an already built static batch-1 IR, with this process pinned to
``--core`` and one inference thread. ``--load`` starts a busy process (a spinning Python loop)
pinned to the same core for the whole run, so the inference shares that core with it, as on a
device where another service wakes up; without it the core runs only this process (and whatever
else the machine runs there: the load average is printed with the verdict).

    .venv/bin/python benchmarks/sustain_check.py --artifact out/nano-b1/openvino-fp32 --seconds 60
    .venv/bin/python benchmarks/sustain_check.py --artifact out/nano-b1/openvino-fp32 --seconds 60 --load
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

from common import log  # noqa: E402 - benchmarks/ is the script's folder


def _spin(core: int) -> None:
    os.sched_setaffinity(0, {core})
    while True:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", type=Path, required=True, help="a built target folder (static batch 1)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--core", type=int, default=1)
    ap.add_argument("--load", action="store_true", help="share the core with a busy process")
    args = ap.parse_args()
    from xcit_export.device.sensors import snapshot
    from xcit_export.evaluate.scenarios import SINGLE, ScenarioOptions, single_stream_record
    from xcit_export.targets import Artifact, get_target

    os.sched_setaffinity(0, {args.core})
    artifact = Artifact.from_dir(args.artifact)
    runner = get_target(artifact.target).load(artifact, threads=1)
    shape = artifact.metadata.get("input_shape") or [1, 3, 224, 224]
    x = np.random.default_rng(0).standard_normal([abs(int(d)) for d in shape]).astype(np.float32)
    spinner = None
    if args.load:
        spinner = mp.get_context("spawn").Process(target=_spin, args=(args.core,), daemon=True)
        spinner.start()
    try:
        with open("/proc/loadavg") as fh:
            load_before = fh.read().split()[:3]
        log(f"{artifact.target}: {args.seconds:g} s single-stream on core {args.core}"
            f"{' shared with a busy process' if args.load else ''} (load {' '.join(load_before)})")
        options = ScenarioOptions(scenarios=(SINGLE,), sustain=args.seconds).check()
        rec = single_stream_record(options, runner.infer, x, snapshot=snapshot)
        with open("/proc/loadavg") as fh:
            load_after = fh.read().split()[:3]
    finally:
        runner.close()
        if spinner is not None:
            spinner.terminate()
            spinner.join()
    s = rec["stability"]
    print(json.dumps({"target": artifact.target, "core": args.core, "loaded": args.load, "seconds": args.seconds,
                      "load_before": load_before, "load_after": load_after, "p50_ms": rec["p50_ms"],
                      "p99_ms": rec["p99_ms"], "stability": s}, indent=1))
    log(f"verdict: {s['verdict']}: {s['reason']}")


if __name__ == "__main__":
    main()
