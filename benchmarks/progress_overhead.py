"""What the progress counting adds to each call it wraps (the latency loop's timed span included).

    .venv/bin/python benchmarks/progress_overhead.py [--calls 200000] [--reps 5]

``console.latency_runs`` wraps a runner's ``infer`` so the display can count latency runs; the
wrapper's work (a counter, ``TerminalProgress.step``: a dictionary update and a clock read, a display
update at most ten times a second) happens after ``infer`` returns but inside the timed span of
``validate.measure_latency``. This times a no-op ``infer`` bare and wrapped, alternating, and prints
the median extra nanoseconds a call for a live terminal display and for a log (no TTY).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401  (puts the repository on sys.path)

from rich.console import Console  # noqa: E402

from xcit_export.console import TerminalProgress, latency_runs  # noqa: E402
from xcit_export.evaluate.validate import LatencyOptions  # noqa: E402


def per_call_ns(fn, calls: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        fn(None)
    return (time.perf_counter_ns() - t0) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    def infer(x):
        return x

    opts = LatencyOptions(warmup=0, iterations=args.calls)
    for name, terminal in (("terminal (live bars)", True), ("log (no TTY)", False)):
        extra = []
        for _ in range(args.reps):
            with TerminalProgress(Console(file=io.StringIO(), force_terminal=terminal, width=120)) as progress:
                wrapped = latency_runs(progress, "latency runs", infer, opts)
                bare = per_call_ns(infer, args.calls)
                extra.append(per_call_ns(wrapped, args.calls) - bare)
        print(f"{name}: +{statistics.median(extra):.0f} ns a call (median of {args.reps}; "
              f"runs {', '.join(f'{e:.0f}' for e in extra)})")


if __name__ == "__main__":
    main()
