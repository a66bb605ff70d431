"""The device-side entry point of ``device_check.pyz`` (built by :mod:`xcit_export.device.pyz`).

``python3 device_check.pyz [BUNDLE]`` runs :func:`main`: verify the bundle, build and run its engine
(:func:`xcit_export.device.bundle.device_check`), print the summary. Python 3.8 compatible; imports
neither torch, onnx nor click.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .pyz import PYZ_NAME


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 device_check.pyz",
        description="Verify an xcit-export bundle against its manifest, build its TensorRT engine on this device, "
                    "check the golden outputs against thresholds.json and time it. Exit 0 only if every check passed.")
    p.add_argument("bundle", nargs="?", default=".", help="bundle folder or its .tar.gz (default: .)")
    p.add_argument("--work", help="folder for the engine and the report (default: BUNDLE/device-check)")
    p.add_argument("--report", help="report file (default: <work>/report.json)")
    p.add_argument("--require-engine", action="store_true", help="fail unless a TensorRT engine is built and run")
    p.add_argument("--threads", type=int, help="CPU threads for the onnxruntime stand-in")
    p.add_argument("--warmup", type=int, default=10, help="untimed warm-up inferences (default 10)")
    p.add_argument("--iterations", type=int, default=50, help="timed inferences (default 50)")
    p.add_argument("--cuda-graph", action="store_true", help="replay inference as a CUDA graph")
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="skip the per-layer-type breakdown from TensorRT's layer profiler (run by default)")
    p.add_argument("--explain", action="store_true",
                   help="per-point error of the engine (a second engine with the bundle's points marked as outputs)")
    p.add_argument("--scenario", help="also single-stream, multi-stream, offline (comma-separated, or all), with power "
                                      "from tegrastats or the INA3221 rails")
    p.add_argument("--streams", type=int, help="concurrent streams of the multi-stream scenario (default 4)")
    p.add_argument("--scenario-seconds", type=float, help="seconds of a multi-stream run and the offline figure (default 2)")
    p.add_argument("--sustain", type=float, help="run each scenario this many seconds and judge its stability")
    p.add_argument("--mlperf-tail", action="store_true", help="MLPerf's 600 s minimum and early-stopping tail estimate")
    return p


def main(argv: list | None = None) -> int:
    """``python3 device_check.pyz [BUNDLE]``: 0 when every check passed, 1 otherwise."""
    from .bundle import device_check, summary_lines
    from ..errors import XcitExportError

    args = _parser().parse_args(argv)
    bundle = Path(args.bundle)
    if not bundle.exists():
        print(f"error: bundle '{bundle}' does not exist; give the bundle folder (or run from inside it: "
              f"python3 {PYZ_NAME} .)", file=sys.stderr)
        return 1
    say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    try:
        from ..evaluate.scenarios import scenario_options

        options = scenario_options(args.scenario, args.streams, args.scenario_seconds, args.sustain, args.mlperf_tail)
        report = device_check(bundle, work_dir=Path(args.work) if args.work else None,
                              report_path=Path(args.report) if args.report else None,
                              require_engine=args.require_engine, threads=args.threads, warmup=args.warmup,
                              iterations=args.iterations, cuda_graph=args.cuda_graph, profile=args.profile,
                              explain=args.explain, scenarios=options, progress=say)
    except XcitExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in summary_lines(report):
        print(line)
    return 0 if report["passed"] else 1


__all__ = ["main"]
