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

Modules: :mod:`.runner` (the runner, the FP32 build), :mod:`.int8` (the INT8 build and its options),
:mod:`.profile` (the profiler); this module registers the targets.
"""

from __future__ import annotations

from .. import register
from ..base import Target
from .int8 import _INT8_OPTIONS, _activation_matmuls, _build_int8, _Calibration, _int8_key_inputs
from .profile import (MIN_NO_WORK_NODES, NO_WORK_OPS, _profiled_runs, no_work_node_cost_ms, profile,
                      profiler_node_cost_ms)
from .runner import OnnxRuntimeRunner, _build_fp32, build_copy, load, open_pool, session_options


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


__all__ = ["MIN_NO_WORK_NODES", "NO_WORK_OPS", "OnnxRuntimeRunner", "build_copy", "load", "no_work_node_cost_ms", "open_pool",
           "profile", "profiler_node_cost_ms", "session_options", "_INT8_OPTIONS", "_activation_matmuls",
           "_build_fp32", "_build_int8", "_Calibration", "_int8_key_inputs", "_profiled_runs"]
