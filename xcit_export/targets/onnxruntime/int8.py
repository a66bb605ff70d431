"""onnxruntime-int8: onnxruntime's static post-training quantization in a format chosen by the CPU's ISA."""

from __future__ import annotations

from ..base import SEARCH_OPTIONS, Artifact, Boolean, BuildContext, Choice, Option, Words
from ...quantize.ort_int8 import FORMATS, CalibrationReader
from .runner import OnnxRuntimeRunner


_INT8_OPTIONS = (
    Option("method", Choice("minmax", "entropy", "percentile"), "minmax", "calibration: minmax, entropy or percentile",
           example="entropy"),
    Option("per_channel", Boolean(), True, "per-output-channel weight scales", example=False),
    Option("op_types", Words(non_empty=True), ["MatMul", "Gemm", "Conv"], "op types to quantize",
           example=["MatMul"]),
    Option("exclude_nodes", Words(), [], "node names to keep in FP32", example=["head"]),
    Option("quantize_attention", Boolean(), False, "also quantize activation-by-activation MatMuls", example=True),
    Option("format", Choice(*FORMATS), None,
           f"{', '.join(FORMATS)} (default: chosen from this CPU's ISA, see quantize/ort_int8.py)",
           example="s8s8"),
    *SEARCH_OPTIONS,  # sensitivity, max_drop (default: the recipe's max_top1_drop), search_images
)


def _activation_matmuls(path) -> list[str]:
    """MatMuls whose operands are both activations (XCA's q.k and attention.v products)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in weights for i in n.input)]


_Calibration = CalibrationReader  # the name benchmarks and older code import


def _build_int8(ctx: BuildContext) -> Artifact:
    from onnxruntime.quantization import quant_pre_process

    from ...quantize import sensitivity
    from ...quantize.ort_int8 import choose_format, quantize

    options = ctx.options  # parsed (Target.parse_options): every option, canonical
    fmt, reason = choose_format(forced=options["format"])
    method, op_types, per_channel = options["method"], options["op_types"], options["per_channel"]
    budget = options["max_drop"] if options["max_drop"] is not None else ctx.max_top1_drop
    want_sensitivity = options["sensitivity"]
    dst = ctx.out_dir / "model.int8.onnx"
    # onnxruntime's recommended pre-pass: symbolic shape inference and its graph optimisations
    # (fused LayerNorm/GELU), so quantization sees the graph the CPU kernels will run.
    prepared = ctx.out_dir / "model.prepared.onnx"
    # Symbolic shape inference is skipped: it crashes on the dynamic-batch Expand of the class
    # token; ONNX's own shape inference still runs and handles the graph.
    quant_pre_process(str(ctx.onnx_path), str(prepared), skip_symbolic_shape=True)
    exclude = list(options["exclude_nodes"])
    if not options["quantize_attention"]:
        exclude += _activation_matmuls(prepared)
    quantize(prepared, dst, ctx.calibration, fmt, step=ctx.batch, method=method, per_channel=per_channel,
             op_types=op_types, exclude_nodes=exclude)
    meta = {"precision": "int8", "format": fmt.name, "format_reason": reason, "method": method,
            "op_types": op_types, "per_channel": per_channel, "reduce_range": fmt.reduce_range,
            "calibration_images": int(len(ctx.calibration)), "calibration_id": ctx.calibration_id}
    if want_sensitivity or budget is not None:
        meta.update(sensitivity.analyse(dst, ctx.onnx_path, ctx.evaluation, batch=ctx.batch, threads=ctx.threads,
                                        budget=budget, want_sensitivity=want_sensitivity, float_path=prepared,
                                        search_images=options["search_images"],
                                        seed=ctx.seed))
    prepared.unlink()
    OnnxRuntimeRunner(dst, threads=1).close()  # a graph ORT cannot load fails the build, not validation
    return Artifact(target="onnxruntime-int8", path=dst, files=[dst], metadata=meta)


def _int8_key_inputs(options: dict) -> dict:
    """Build-key inputs beyond the options: the CPU's ISA class decides the automatic format."""
    from ...fingerprint import cpu_capabilities

    return {} if options.get("format") else {"isa_class": cpu_capabilities().isa_class}
