"""Where the time goes: per-operator-type latency breakdowns from each runtime's own profiler.

A target may provide ``profile(artifact, x, threads=..., runs=..., **options) -> dict`` (see
:class:`~xcit_export.targets.base.Target`). It opens the artifact a second time with the runtime's
profiler switched on (OpenVINO ``PERF_COUNT``, onnxruntime ``enable_profiling``), runs ``x`` a few
times and returns :func:`breakdown`. The pipeline calls it for each target right after that
target's latency measurement (its runner closed), on a separately compiled model, so profiling
overhead never reaches a latency figure, and the two are taken seconds apart. TensorRT's layer profiler belongs to ``device-check`` (engines run on the device).

A profiler's own bookkeeping can fall inside the span it times. onnxruntime's does: every node's
``kernel_time`` span also covers sizing the node's inputs and outputs and serialising the thread
pool's statistics (``sequential_executor.cc``), 3-4 us a node here, which for XCiT-nano's
~600-1,000 nodes is a third of an inference or more. Such a profiler measures that cost under the
same settings (onnxruntime: on the model's own nodes that do no work, such as Reshape) and passes
it as ``node_cost_ms``; :func:`breakdown` subtracts it from every node and keeps the uncorrected
sum as ``raw_total_ms``.
"""

from __future__ import annotations

import statistics
from typing import Mapping, Sequence

# Runs of the profiled model: the first is discarded (allocation, lazy kernel selection).
DEFAULT_RUNS = 20
# The row for an inference's time that no operator accounts for, where a profiler can tell it
# apart from its own cost (OpenVINO); onnxruntime's gaps between nodes are mostly its profiler's.
OUTSIDE_OPERATORS = "(outside operators)"


def breakdown(source: str, per_run: Sequence[Mapping[str, float]], wall_ms: Sequence[float], batch: int,
              top: int = 12, *, raw_per_run: Sequence[Mapping[str, float]] | None = None,
              node_cost_ms: float | None = None, nodes: int | None = None, note: str | None = None,
              unprofiled_ms: Sequence[float] | None = None) -> dict:
    """The report's ``op_profile`` entry: op types by time per inference, largest first.

    ``per_run`` holds, for each profiled inference, milliseconds per op type; ``wall_ms`` the
    wall-clock time of each of those inferences. Each op type's figure is its median over the
    runs, so a run preempted by another process inflates no single op type; ``wall_ms`` is the
    median wall time of the profiled runs, so ``total_ms / wall_ms`` says how much of an
    inference the profiler accounts for. The ``top`` largest types are listed by name and the
    rest summed into ``other`` so tables and bars stay short.

    When a profiler's per-node cost was subtracted (``node_cost_ms`` per node, ``nodes`` nodes an
    inference), ``per_run`` holds the corrected times and ``raw_per_run`` the profiler's own;
    ``note`` says how the cost was measured. ``unprofiled_ms`` are the times of the same artifact
    opened without the profiler and timed just before the profiled inferences: the machine's speed
    during this pass, which on a shared host can differ from the latency pass's.
    """
    types = {k for run in per_run for k in run}
    items = sorted(((k, statistics.median(run.get(k, 0.0) for run in per_run)) for k in types),
                   key=lambda kv: -kv[1])
    items = [(k, v) for k, v in items if v > 0]
    total = sum(v for _, v in items)
    outside = [(k, v) for k, v in items if k == OUTSIDE_OPERATORS]
    items = [(k, v) for k, v in items if k != OUTSIDE_OPERATORS]
    head, tail = items[:top], items[top:]
    if tail:
        head.append((f"other ({len(tail)} types)", sum(v for _, v in tail)))
    head += outside  # its own row, always: it is not an operator
    entry = {"source": source, "runs": len(per_run), "batch": int(batch), "total_ms": round(total, 4),
             "wall_ms": round(statistics.median(wall_ms), 4),
             "ops": [{"op_type": k, "ms": round(v, 4), "share": round(v / total, 4) if total else 0.0}
                     for k, v in head]}
    if raw_per_run is not None:
        entry["raw_total_ms"] = round(statistics.median(sum(run.values()) for run in raw_per_run), 4)
    if node_cost_ms is not None:
        entry["node_cost_us"] = round(node_cost_ms * 1e3, 3)
    if nodes is not None:
        entry["nodes"] = int(nodes)
    if note:
        entry["note"] = note
    if unprofiled_ms:
        entry["unprofiled_ms"] = round(statistics.median(unprofiled_ms), 4)
    return entry


def subtract_node_cost(nodes: Sequence[tuple[str, float]], cost_ms: float) -> dict[str, float]:
    """Milliseconds per op type for one inference's ``(op_type, ms)`` nodes, less the profiler's
    own ``cost_ms`` a node (never below zero for a node)."""
    ops: dict[str, float] = {}
    for op, ms in nodes:
        ops[op] = ops.get(op, 0.0) + max(0.0, ms - cost_ms)
    return ops


# How far a breakdown's total may stray from the measured median before the report flags it.
COVERAGE_TOLERANCE = 0.15


def coverage(entry: dict) -> float | None:
    """Profiled op time per inference / the target's measured median latency (1.0: all of it)."""
    prof, lat = entry.get("op_profile"), entry.get("latency")
    if not prof or not lat or not lat.get("median_ms") or prof.get("batch") != lat.get("batch"):
        return None
    return prof["total_ms"] / lat["median_ms"]


def same_pass_ratio(prof: dict) -> float | None:
    """Profiled op time / the unprofiled runs timed in the same pass (None when not timed)."""
    return prof["total_ms"] / prof["unprofiled_ms"] if prof.get("unprofiled_ms") else None


def off(ratio: float | None) -> bool:
    """Whether a breakdown's ``ratio`` to a measured time is more than the tolerance from 1."""
    return ratio is not None and abs(ratio - 1) > COVERAGE_TOLERANCE


def profile_error(exc: BaseException) -> str:
    """The one line a report keeps of a profiler failure (it costs the breakdown, nothing else)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


def coverage_line(entry: dict) -> str:
    """How a target's breakdown compares with its measured median, for the reports: the ratio, the
    ratio to the unprofiled runs timed in the same pass, the profiler cost removed (if any), and a
    flag when the breakdown is more than :data:`COVERAGE_TOLERANCE` off."""
    prof, cov = entry["op_profile"], coverage(entry)
    parts = []
    if cov is not None:
        parts.append(f"{prof['total_ms']:.2f} ms profiled = {cov:.0%} of the measured median "
                     f"{entry['latency']['median_ms']:.2f} ms")
    else:
        parts.append(f"{prof['total_ms']:.2f} ms profiled")
    same = same_pass_ratio(prof)
    if same is not None:
        parts.append(f"{same:.0%} of the {prof['unprofiled_ms']:.2f} ms of unprofiled runs timed in the same pass")
    if prof.get("node_cost_us") is not None:
        parts.append(f"after removing the profiler's own {prof['node_cost_us']:.1f} us from each of "
                     f"{prof.get('nodes', '?')} nodes (uncorrected {prof.get('raw_total_ms', 0):.2f} ms)")
    if any(o["op_type"] == OUTSIDE_OPERATORS for o in prof["ops"]):
        parts.append(f"{OUTSIDE_OPERATORS}: the unprofiled runs' time that no node's counter covers "
                     f"(the profiled inferences took {prof['wall_ms']:.2f} ms)")
    shares = "read the shares, not the milliseconds"
    if off(same):
        parts.append(f"OFF by more than {COVERAGE_TOLERANCE:.0%}: {shares}")
    elif off(cov):
        parts.append(f"OFF the measured median by more than {COVERAGE_TOLERANCE:.0%}" + (
            ", but not the same pass's unprofiled runs: the machine's speed changed between the latency and "
            "profile passes" if same is not None else f": {shares}"))
    return "; ".join(parts)
