"""Where the time goes: per-operator-type latency breakdowns from each runtime's own profiler.

A target may provide ``profile(artifact, x, threads=..., runs=..., **options) -> dict`` (see
:class:`~xcit_export.targets.base.Target`). It opens the artifact a second time with the runtime's
profiler switched on (OpenVINO ``PERF_COUNT``, onnxruntime ``enable_profiling``), runs ``x`` a few
times and returns :func:`breakdown`. The pipeline calls it in a separate pass after every latency
measurement, on a separately compiled model, so profiling overhead never reaches the latency
figures. TensorRT's layer profiler belongs to ``device-check`` (engines run on the device).
"""

from __future__ import annotations

import statistics
from typing import Mapping, Sequence

# Runs of the profiled model: the first is discarded (allocation, lazy kernel selection).
DEFAULT_RUNS = 20


def breakdown(source: str, per_run: Sequence[Mapping[str, float]], wall_ms: Sequence[float], batch: int,
              top: int = 12) -> dict:
    """The report's ``op_profile`` entry: op types by time per inference, largest first.

    ``per_run`` holds, for each profiled inference, milliseconds per op type; ``wall_ms`` the
    wall-clock time of each of those inferences. Each op type's figure is its median over the
    runs, so a run preempted by another process inflates no single op type; ``wall_ms`` is the
    median wall time of the profiled runs, so ``total_ms / wall_ms`` says how much of an
    inference the profiler accounts for. The ``top`` largest types are listed by name and the
    rest summed into ``other`` so tables and bars stay short.
    """
    types = {k for run in per_run for k in run}
    items = sorted(((k, statistics.median(run.get(k, 0.0) for run in per_run)) for k in types),
                   key=lambda kv: -kv[1])
    items = [(k, v) for k, v in items if v > 0]
    total = sum(v for _, v in items)
    head, tail = items[:top], items[top:]
    if tail:
        head.append((f"other ({len(tail)} types)", sum(v for _, v in tail)))
    return {"source": source, "runs": len(per_run), "batch": int(batch), "total_ms": round(total, 4),
            "wall_ms": round(statistics.median(wall_ms), 4),
            "ops": [{"op_type": k, "ms": round(v, 4), "share": round(v / total, 4) if total else 0.0}
                    for k, v in head]}


def coverage(entry: dict) -> float | None:
    """Profiled op time per inference / the target's measured median latency (1.0: all of it)."""
    prof, lat = entry.get("op_profile"), entry.get("latency")
    if not prof or not lat or not lat.get("median_ms") or prof.get("batch") != lat.get("batch"):
        return None
    return prof["total_ms"] / lat["median_ms"]
