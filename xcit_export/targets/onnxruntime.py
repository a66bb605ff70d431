"""ONNX Runtime targets (CPU execution provider).

``onnxruntime-fp32``: the artifact is the simplified FP32 ONNX itself; the runner is an
``InferenceSession`` with all graph optimisations and a fixed intra-op thread count, so latency
figures are reproducible and comparable with PyTorch at the same thread count.

``onnxruntime-int8``: onnxruntime's own static post-training quantization (QDQ format, per-channel
weights, activations calibrated on ``--calib``) in a format chosen from the CPU's ISA
(``quantize/ort_int8.py``: U8S8 with VNNI, U8S8 with 7-bit weights without it, where U8S8 saturates;
``-O format=`` overrides). ``sensitivity`` and ``max_drop`` (or the recipe's ``max_top1_drop``) run
the per-group sensitivity and accuracy-budget search of ``xcit_export/quantize/sensitivity.py``. Only MatMul/Gemm/Conv
with a weight operand are quantized: LayerNorm, Softmax, GELU, XCiT's L2 normalisation and the
activation-by-activation attention products stay FP32. Quantizing those attention products too
(``-O quantize_attention=true``) lowered the fixture's minimum cosine from 0.988 to 0.955. This graph is for ONNX Runtime's CPU kernels; TensorRT's
parser rejects it (INT32 bias DequantizeLinear), which is why the TensorRT targets use ModelOpt.
"""

from __future__ import annotations

import shutil

import numpy as np

from ..errors import ArtifactError, XcitExportError
from . import register
from .base import SEARCH_OPTIONS, Artifact, BuildContext, Target, as_bool, as_drop, as_int, as_list
from ..quantize.ort_int8 import CalibrationReader


def session_options(threads: int | None):
    """The runner's ``SessionOptions``: every graph optimisation, ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return opts


class OnnxRuntimeRunner:
    """An ``onnxruntime.InferenceSession`` on the CPU EP; I/O by the graph's tensor names."""

    device = "CPU"

    def __init__(self, path, threads: int | None = None):
        import onnxruntime as ort

        if not path.exists():
            raise ArtifactError(f"ONNX file '{path}' does not exist; rebuild the target")
        opts = session_options(threads)
        self.threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"onnxruntime cannot load '{path}': {str(exc).splitlines()[0][:300]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: x})

    def close(self) -> None:
        self.session = None


def build_copy(ctx: BuildContext, target: str) -> Artifact:
    """The FP32 artifact is the simplified ONNX, copied so the target folder is self-contained."""
    dst = ctx.out_dir / "model.onnx"
    shutil.copyfile(ctx.onnx_path, dst)
    return Artifact(target=target, path=dst, files=[dst], metadata={"precision": "fp32"})


def _build_fp32(ctx: BuildContext) -> Artifact:
    return build_copy(ctx, "onnxruntime-fp32")


_INT8_OPTIONS = {
    "method": "calibration: minmax (default), entropy or percentile",
    "per_channel": "per-output-channel weight scales (default true)",
    "op_types": "op types to quantize (default [MatMul, Gemm, Conv])",
    "exclude_nodes": "node names to keep in FP32",
    "quantize_attention": "also quantize activation-by-activation MatMuls (default false)",
    "format": "u8s8, u8s8-reduce-range, s8s8 or u8u8 (default: chosen from this CPU's ISA, see quantize/ort_int8.py)",
    **SEARCH_OPTIONS,  # sensitivity, max_drop (default: the recipe's max_top1_drop), search_images
}


def _activation_matmuls(path) -> list[str]:
    """MatMuls whose operands are both activations (XCA's q.k and attention.v products)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in weights for i in n.input)]


_Calibration = CalibrationReader  # the name benchmarks and older code import


def _build_int8(ctx: BuildContext) -> Artifact:
    from onnxruntime.quantization import quant_pre_process

    from ..quantize import sensitivity
    from ..quantize.ort_int8 import choose_format, quantize

    fmt, reason = choose_format(forced=ctx.options.get("format"))
    method = str(ctx.options.get("method", "minmax")).lower()
    op_types = as_list(ctx.options.get("op_types", ["MatMul", "Gemm", "Conv"]))
    if not op_types:
        raise XcitExportError("onnxruntime-int8 option op_types is empty: nothing would be quantized; give op "
                              "types, e.g. -O onnxruntime-int8:op_types=MatMul,Gemm,Conv")
    per_channel = as_bool(ctx.options.get("per_channel", True), "per_channel")
    budget = as_drop(ctx.options.get("max_drop", ctx.max_top1_drop),
                     "max_drop" if "max_drop" in ctx.options else "max_top1_drop")
    want_sensitivity = as_bool(ctx.options.get("sensitivity", False), "sensitivity")
    dst = ctx.out_dir / "model.int8.onnx"
    # onnxruntime's recommended pre-pass: symbolic shape inference and its graph optimisations
    # (fused LayerNorm/GELU), so quantization sees the graph the CPU kernels will run.
    prepared = ctx.out_dir / "model.prepared.onnx"
    # Symbolic shape inference is skipped: it crashes on the dynamic-batch Expand of the class
    # token; ONNX's own shape inference still runs and handles the graph.
    quant_pre_process(str(ctx.onnx_path), str(prepared), skip_symbolic_shape=True)
    exclude = as_list(ctx.options.get("exclude_nodes"))
    if not as_bool(ctx.options.get("quantize_attention", False), "quantize_attention"):
        exclude += _activation_matmuls(prepared)
    quantize(prepared, dst, ctx.calibration, fmt, step=ctx.batch, method=method, per_channel=per_channel,
             op_types=op_types, exclude_nodes=exclude)
    meta = {"precision": "int8", "format": fmt.name, "format_reason": reason, "method": method,
            "op_types": op_types, "per_channel": per_channel, "reduce_range": fmt.reduce_range,
            "calibration_images": int(len(ctx.calibration)), "calibration_id": ctx.calibration_id}
    if want_sensitivity or budget is not None:
        meta.update(sensitivity.analyse(dst, ctx.onnx_path, ctx.evaluation, batch=ctx.batch, threads=ctx.threads,
                                        budget=budget, want_sensitivity=want_sensitivity, float_path=prepared,
                                        search_images=as_int(ctx.options.get("search_images"), "search_images"),
                                        seed=ctx.seed))
    prepared.unlink()
    OnnxRuntimeRunner(dst, threads=1).close()  # a graph ORT cannot load fails the build, not validation
    return Artifact(target="onnxruntime-int8", path=dst, files=[dst], metadata=meta)


def _int8_key_inputs(options: dict) -> dict:
    """Build-key inputs beyond the options: the CPU's ISA class decides the automatic format."""
    from ..fingerprint import cpu_capabilities

    return {} if options.get("format") else {"isa_class": cpu_capabilities().isa_class}


def load(artifact: Artifact, threads: int | None = None, **_options) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(artifact.path, threads=threads)


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

    from ..evaluate.profiling import DEFAULT_RUNS, breakdown, subtract_node_cost

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


def open_pool(artifact: Artifact, x: np.ndarray, streams: int | None = None, threads: int | None = None,
              **_options):
    """Concurrent ``run`` calls on one session (``Target.pool``; :mod:`.onnxruntime_pool`);
    ``streams`` None: one per thread."""
    from .onnxruntime_pool import OnnxRuntimePool

    return OnnxRuntimePool(artifact.path, x, session_options, streams=streams, threads=threads)


register(Target(
    name="onnxruntime-fp32",
    backend="onnxruntime",
    precision="fp32",
    description="Simplified FP32 ONNX on ONNX Runtime's CPU execution provider",
    build=_build_fp32,
    load=load,
    profile=profile,
    pool=open_pool,
    requires=("onnxruntime",),
    verified="x86-64 CPU (AMD Zen 3, CI)",
))


register(Target(
    name="onnxruntime-int8",
    backend="onnxruntime",
    precision="int8",
    description="Static INT8 (QDQ, onnxruntime quantizer, calibrated) on ONNX Runtime's CPU execution provider",
    build=_build_int8,
    load=load,
    profile=profile,
    pool=open_pool,
    requires=("onnxruntime",),
    needs_calibration=True,
    reads=("calibration", "evaluation:search"),
    verified="x86-64 CPU (AMD Zen 4, AVX-512 VNNI; CI)",
    options=_INT8_OPTIONS,
    key_inputs=_int8_key_inputs,
    reads_budget=True,  # the recipe's max_top1_drop is its max_drop by default
))
