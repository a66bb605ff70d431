"""Per-operator-type time from onnxruntime's own profiler, its own cost a node subtracted."""

from __future__ import annotations

import numpy as np

from ..base import Artifact
from .runner import session_options


def _profiled_runs(path: str, x: np.ndarray, threads: int | None, runs: int, tmp: str) -> tuple[list, list, list]:
    """``runs`` inferences of ``x`` under onnxruntime's profiler, after one discarded run, just
    after ``runs`` timed inferences of a plain session of the same file and options.

    Returns, per inference, its ``(node name, op_type, ms)`` nodes, its wall time in ms, and the
    plain session's time in ms (what the profiled runs are compared with when the machine's speed
    drifts between the latency and profile passes). The profiler writes
    a Chrome-trace JSON; each inference is one ``model_run`` event, and each node it executed one
    ``"cat": "Node"`` event named ``<node>_kernel_time`` inside that span, with its ``op_name`` and
    duration in microseconds (https://onnxruntime.ai/docs/performance/tune-performance/profiling-tools.html).
    """
    import bisect
    import json
    import os
    import time

    import onnxruntime as ort

    opts = session_options(threads)  # as the runner's, plus the profiler
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tmp, "ort")
    # The plain session first, in a block of its own: interleaved, the two sessions' intra-op
    # threads (each spinning after its work) competed for the cores and slowed both.
    plain_session = ort.InferenceSession(path, session_options(threads), providers=["CPUExecutionProvider"])
    feed = {plain_session.get_inputs()[0].name: np.ascontiguousarray(x)}
    plain_session.run(None, feed)
    plain = []
    for _ in range(runs):
        t0 = time.perf_counter()
        plain_session.run(None, feed)
        plain.append((time.perf_counter() - t0) * 1e3)
    del plain_session
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    session.run(None, feed)  # first run: allocations; its events are dropped below
    for _ in range(runs):
        session.run(None, feed)
    with open(session.end_profiling()) as fh:
        events = json.load(fh)
    model_runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])[1:]
    nodes: list[list[tuple[str, str, float]]] = [[] for _ in model_runs]
    starts = [r["ts"] for r in model_runs]
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            i = bisect.bisect_right(starts, e["ts"]) - 1
            if i >= 0 and e["ts"] <= starts[i] + model_runs[i]["dur"]:
                nodes[i].append((e["name"], e.get("args", {}).get("op_name", "?"), e["dur"] / 1e3))
    return nodes, [r["dur"] / 1e3 for r in model_runs], plain


# Kernels that do no arithmetic and move no data: onnxruntime gives their output the input's
# buffer (measured: a Reshape of a 4 MB tensor is timed at 2 us under the profiler, like one of 64
# bytes, while a Relu on it takes 105 us). Each such node's profiled span is therefore the
# profiler's own cost for one node, paid inside the model being profiled.
NO_WORK_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten"})
# With fewer no-work nodes than this in an inference, the null graph below measures the cost.
MIN_NO_WORK_NODES = 10


def no_work_node_cost_ms(nodes: list[list[tuple[str, str, float]]]) -> tuple[float, int] | None:
    """The profiler's cost a node, in ms, from the model's own no-work nodes (:data:`NO_WORK_OPS`):
    the median over those nodes of each one's mean span across the profiled runs (the profiler
    records whole microseconds, so a single span is too coarse), and how many nodes that is. None
    when an inference has fewer than :data:`MIN_NO_WORK_NODES` of them.

    Measured in the model rather than on a null graph because the cost depends on the model: on
    XCiT-nano it was 2.6-4.7 us a node where a null graph of Add nodes gave 1.8-3.2 us under the
    same session options, and subtracting the null graph's figure left onnxruntime INT8's totals at
    2 threads 1.10-1.25x its unprofiled time, against 0.93-1.04x this way (BENCHMARKS.md)."""
    spans: dict[str, list[float]] = {}
    for run in nodes:
        for name, op, ms in run:
            if op in NO_WORK_OPS:
                spans.setdefault(name, []).append(ms)
    if len(spans) < MIN_NO_WORK_NODES:
        return None
    return float(np.median([np.mean(v) for v in spans.values()])), len(spans)


# The null graph: a chain of Add/Mul nodes on 16 floats, whose own work is a fraction of a
# microsecond a node, so its profiled node times are the profiler's cost a node.
_NULL_NODES = 200


def _null_graph(path: str) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "x"
    for i in range(_NULL_NODES):
        const, out = f"c{i}", ("y" if i == _NULL_NODES - 1 else f"t{i}")
        inits.append(numpy_helper.from_array(np.full((1, 16), 1.0 + i % 3, np.float32), const))
        nodes.append(helper.make_node("Mul" if i % 2 else "Add", [prev, const], [out], name=f"n{i}"))
        prev = out
    graph = helper.make_graph(nodes, "null", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def profiler_node_cost_ms(threads: int | None, tmp: str, runs: int = 30) -> float:
    """onnxruntime's profiler cost inside each node's ``kernel_time`` span, in ms, at ``threads``,
    measured on a null graph: for models with too few no-work nodes (:func:`no_work_node_cost_ms`).

    With profiling on, the span of every node also covers computing its input and output sizes and
    shapes and ``ThreadPool::StopProfiling``, which serialises per-thread scheduling statistics
    (onnxruntime/core/framework/sequential_executor.cc, ``KernelScope``): on XCiT-nano that is
    3-4 us on each of ~600-1,000 nodes, and the profiled node times add up to 1.1-1.7x the unprofiled
    latency (also microsoft/onnxruntime#20238). Measured here as the mean profiled node time of a
    null graph less its unprofiled time a node, with the same session options.
    """
    import os

    path = os.path.join(tmp, "null.onnx")
    _null_graph(path)
    nodes, _, plain = _profiled_runs(path, np.ones((1, 16), np.float32), threads, runs, tmp)
    # Divided by the nodes that ran: the optimiser folds some of the chain's constant pairs.
    ran = float(np.median([len(run) for run in nodes]))
    plain_ms_per_node = float(np.median(plain)) / ran
    profiled_ms_per_node = float(np.mean([ms for run in nodes for _, _, ms in run]))
    return max(0.0, profiled_ms_per_node - plain_ms_per_node)


def profile(artifact: Artifact, x: np.ndarray, threads: int | None = None, runs: int | None = None,
            **_options) -> dict:
    """Per-op-type time from onnxruntime's own profiler, on a second session opened for it, with
    the profiler's cost a node subtracted from every node: measured on the model's own no-work
    nodes (:func:`no_work_node_cost_ms`), or on a null graph (:func:`profiler_node_cost_ms`) for a
    model with too few of them; ``node_cost_from`` in the entry says which."""
    import tempfile

    from ...evaluate.profiling import DEFAULT_RUNS, breakdown, subtract_node_cost

    runs = runs or DEFAULT_RUNS
    with tempfile.TemporaryDirectory(prefix="xcit-ort-prof-") as tmp:
        nodes, wall, plain = _profiled_runs(str(artifact.path), x, threads, runs, tmp)
        own = no_work_node_cost_ms(nodes)
        if own is not None:
            (cost, no_work), cost_from = own, "no-work nodes"
            source = (f"the mean profiled time of the model's {no_work} no-work nodes "
                      f"({'/'.join(sorted(NO_WORK_OPS))})")
        else:
            cost, cost_from = profiler_node_cost_ms(threads, tmp), "null graph"
            source = (f"measured on a {_NULL_NODES}-node null graph with the same session options: the model "
                      f"has fewer than {MIN_NO_WORK_NODES} no-work nodes")
    pairs = [[(op, ms) for _, op, ms in run] for run in nodes]
    raw = [subtract_node_cost(run, 0.0) for run in pairs]
    corrected = [subtract_node_cost(run, cost) for run in pairs]
    count = int(np.median([len(run) for run in nodes])) if nodes else 0
    entry = breakdown("onnxruntime profiler (SessionOptions.enable_profiling)", corrected, wall, len(x),
                      raw_per_run=raw, node_cost_ms=cost, nodes=count, unprofiled_ms=plain,
                      note=f"the profiler's own {cost * 1e3:.1f} us a node ({source}) is subtracted from each "
                           f"of {count} nodes")
    entry["node_cost_from"] = cost_from
    return entry
