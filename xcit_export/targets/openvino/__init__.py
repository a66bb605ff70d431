"""OpenVINO targets for Intel CPUs, iGPUs and NPUs: ``openvino-fp32``, ``openvino-fp16``, ``openvino-int8``.

Every target writes an OpenVINO IR pair, ``model.xml`` + ``model.bin``, ready to copy to a device,
and validates it here on the CPU plugin.

* ``openvino-fp32``: ``openvino.convert_model`` of the simplified ONNX, saved with FP32 weights.
* ``openvino-fp16``: the same graph with weights compressed to FP16 (``save_model(...,
  compress_to_fp16=True)``); a device decompresses them or computes in FP16 (GPU, NPU).
* ``openvino-int8``: NNCF post-training quantization (``nncf.quantize``, ``ModelType.TRANSFORMER``
  so LayerNorm/MVN, Softmax and the L2 normalisations of XCiT's cross-covariance attention stay
  in floating point) on the calibration set; with ``max_drop``,
  ``nncf.quantize_with_accuracy_control`` against the evaluation set instead.

Runtime precision. OpenVINO's CPU plugin runs FP32 IRs in **bf16** by default on CPUs with
AVX512_BF16 or AMX (``INFERENCE_PRECISION_HINT`` defaults to bf16 there, this Zen 4 included).
``openvino-fp32`` therefore compiles with ``INFERENCE_PRECISION_HINT=f32`` so that it really
runs in FP32; ``openvino-fp16`` and ``openvino-int8`` keep the device's default (what a deployment
gets). ``-O <target>:inference_precision=f32|bf16|f16|default`` overrides either choice; the
runner's ``inference_precision`` attribute is what the device actually chose (a CPU without FP16
support runs ``f16`` requests in bf16 or f32).

Runner. ``compile_model`` with ``PERFORMANCE_HINT`` (``--hint``, latency by default),
``INFERENCE_NUM_THREADS`` when threads are given (CPU only) and the precision above; one reused
``InferRequest`` runs synchronously, which is what ``benchmark_app -hint latency`` does too. With
``--hint throughput`` the compiled model gets several CPU streams, which only an application
running requests in parallel (``AsyncInferQueue``) benefits from; this runner still times one
request at a time, and the multi-stream and offline scenarios (``--scenario``) run the parallel
requests (:mod:`.pool`, :func:`~.runner.open_pool`). ``--device`` must exist here to validate (``Core().available_devices``); the
IR itself is device-independent and is built regardless.

Static vs dynamic batch. With ``--batch N`` the pipeline's ONNX has a static batch and so does
the IR (an OpenVINO CPU model with static shapes is markedly faster at batch 1). Without it the
IR keeps a dynamic batch; INT8 then quantizes the dynamic-batch graph directly, which works
because the dynamo exporter writes batch-generic Reshape patterns. What does *not* work is
turning a static-batch graph dynamic afterwards (its Reshape constants hold the export batch:
``reshape: the shape of input data (4.128.14.14) conflicts with the reshape pattern (1.128.196)``),
so this module never does that, and every build runs the fresh IR at batch 1 and 2 (dynamic) or
at its batch (static) before it is accepted: a graph that does not compile or run fails the
build with a message that says to pass ``--batch N``.

Accuracy control (``max_drop``, a top-1 drop as a fraction, 0.01 = 1 point, as for every target;
NNCF's absolute ``max_drop`` is in the same unit since the metric is a fraction). With labels in the evaluation set
the metric is top-1 accuracy against them; without labels it is top-1 agreement with the FP32
model (run by OpenVINO in FP32), whose own score is 100%. NNCF reverts the quantized operations
that cost the most until the INT8 model is within ``max_drop`` of FP32. The evaluation
set then tunes the model, so its report on the same set is optimistic; use a separate split.

Modules, one per job: :mod:`.options` (the targets' options, the process's ``openvino.Core``),
:mod:`.build` (ONNX -> IR, self-checks), :mod:`.int8` (NNCF), :mod:`.runner`, :mod:`.profile`;
this module registers the targets.
"""

from __future__ import annotations

from .. import register
from ..base import Target
from .build import _build, _check_other_size, _convert, _self_check
from .int8 import _int8_settings, _quantize
from .options import (COMMON_OPTIONS, DEFAULT_SUBSET_SIZE, DEVICES, HINTS, INT8_OPTIONS, MIN_CALIBRATION, PRECISIONS,
                      PRESETS, SHAPES, check_device_available, check_ignored_scope, parse_device, parse_hint, preflight,
                      parse_ignored_scope, parse_precision, parse_shapes, precision_hint)
from .profile import profile
from .runner import OpenVINORunner, compile_config, load, open_pool

VERIFIED = "x86-64 CPU (AMD Zen 4, AVX-512 VNNI; CI)"


register(Target(
    name="openvino-fp32",
    backend="openvino",
    precision="fp32",
    description="OpenVINO IR (FP32 weights, runs in FP32) for Intel CPU/GPU/NPU",
    build=lambda ctx: _build(ctx, "fp32"),
    load=load,
    profile=profile,
    pool=open_pool,
    requires=("openvino",),
    verified=VERIFIED,
    options=COMMON_OPTIONS,
    preflight=preflight,
))

register(Target(
    name="openvino-fp16",
    backend="openvino",
    precision="fp16",
    description="OpenVINO IR with FP16-compressed weights (GPU/NPU compute in FP16; CPU at its default)",
    build=lambda ctx: _build(ctx, "fp16"),
    load=load,
    profile=profile,
    pool=open_pool,
    requires=("openvino",),
    verified=VERIFIED,
    options=COMMON_OPTIONS,
    preflight=preflight,
))

register(Target(
    name="openvino-int8",
    backend="openvino",
    precision="int8",
    description="OpenVINO IR quantized to INT8 by NNCF post-training quantization (transformer preset)",
    build=lambda ctx: _build(ctx, "int8"),
    load=load,
    profile=profile,
    pool=open_pool,
    requires=("openvino", "nncf"),
    needs_calibration=True,
    reads=("calibration", "evaluation:search"),
    verified=VERIFIED,
    options=INT8_OPTIONS,
    preflight=preflight,
))


__all__ = ["COMMON_OPTIONS", "DEFAULT_SUBSET_SIZE", "DEVICES", "HINTS", "INT8_OPTIONS", "MIN_CALIBRATION", "PRECISIONS",
           "PRESETS", "SHAPES", "OpenVINORunner", "check_device_available", "check_ignored_scope", "compile_config",
           "load", "open_pool", "parse_device", "parse_hint", "parse_ignored_scope", "parse_precision", "parse_shapes",
           "precision_hint", "profile", "_build", "_check_other_size", "_convert", "_int8_settings", "_quantize",
           "_self_check"]
