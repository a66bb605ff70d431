"""onnxruntime-int8's quantization formats, and which one this CPU should get.

onnxruntime's x86 INT8 kernels (MLAS) differ by instruction set, and so do their numbers:

* With VNNI (AVX512_VNNI, AVX_VNNI; AMX-INT8 too) ``vpdpbusd`` multiplies u8 x s8 and
  accumulates in int32: U8S8 (uint8 activations, int8 weights) is exact and the fastest path.
* Without VNNI (AVX2, and AVX-512 without VNNI) U8S8 runs on ``vpmaddubsw``, which adds pairs of
  u8 x s8 products into a *saturating int16*: 255 * 127 * 2 > 32,767. onnxruntime's documentation
  names this and its cures, ``reduce_range`` (7-bit weights: 255 * 64 * 2 < 32,767) or another
  format ("Quantize ONNX models", section "When and why do I need to try U8U8?"). On the trained
  fixture the saturation takes top-1 from 92.7% to 88.3% (issue 11, AMD Zen 3; BENCHMARKS.md).
* aarch64 kernels widen products to 32 bits (``sdot``/``udot``/``usdot`` or ``smull``+``sadalp``):
  no saturation in any format.

``-O onnxruntime-int8:format=NAME`` overrides the choice; the choice and its reason are stored in
``artifact.json``, and the CPU's ISA class is part of the build key, so an artifact quantized for
a VNNI CPU is not reused on one without.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import XcitExportError
from ..fingerprint import CpuCapabilities, cpu_capabilities


@dataclass(frozen=True)
class Int8Format:
    """One onnxruntime quantization format: activation/weight types, symmetry, weight range."""

    name: str
    activation: str  # onnxruntime.quantization.QuantType member name
    weight: str
    activation_symmetric: bool
    weight_symmetric: bool
    reduce_range: bool
    help: str


FORMATS: dict[str, Int8Format] = {f.name: f for f in (
    Int8Format("u8s8", "QUInt8", "QInt8", False, True, False,
               "uint8 asymmetric activations, int8 symmetric weights: exact and fastest with VNNI"),
    Int8Format("u8s8-reduce-range", "QUInt8", "QInt8", False, True, True,
               "U8S8 with 7-bit weights: the same fast kernel without VNNI, no int16 saturation"),
    Int8Format("s8s8", "QInt8", "QInt8", True, True, False,
               "int8 symmetric activations and weights: no saturation, slow on x86 (no fast kernel)"),
    Int8Format("u8u8", "QUInt8", "QUInt8", False, False, False,
               "uint8 activations and weights: no saturation, a slower x86 kernel than U8S8"),
)}

# The format for x86 CPUs without VNNI, chosen by measurement on the trained fixture (BENCHMARKS.md,
# "onnxruntime-int8 formats by CPU"): accuracy under an AVX2-only CPU, speed of the kernel.
AVX2_FORMAT = "u8s8-reduce-range"


def choose_format(caps: CpuCapabilities | None = None, forced: str | None = None) -> tuple[Int8Format, str]:
    """The format for this CPU (or ``forced``), with a one-line reason for the report."""
    caps = caps or cpu_capabilities()
    if forced is not None:
        name = str(forced).lower()
        if name not in FORMATS:
            raise XcitExportError(f"onnxruntime-int8 option format='{forced}' is unknown; use one of "
                                  f"{', '.join(FORMATS)} (or leave it out to choose by CPU)")
        return FORMATS[name], f"format={name} given as an option (CPU: {caps.isa_class})"
    cls = caps.isa_class
    if cls == "x86-vnni":
        vnni = [f for f in ("amx_int8", "avx512_vnni", "avx_vnni") if f in caps.flags]
        return FORMATS["u8s8"], (f"{cls}: VNNI ({', '.join(vnni)}) accumulates u8*s8 in int32, so U8S8 is exact "
                                 f"and the fastest kernel")
    if cls.startswith("x86"):
        return FORMATS[AVX2_FORMAT], (f"{cls}: no VNNI, U8S8 would saturate int16 (vpmaddubsw); 7-bit weights "
                                      f"keep the fast U8S8 kernel exact (measured best, BENCHMARKS.md)")
    if cls.startswith("arm64"):
        return FORMATS["u8s8"], (f"{cls}: ARM kernels accumulate products in 32 bits "
                                 f"({'dot-product' if 'asimddp' in caps.flags else 'NEON widening'}), "
                                 f"U8S8 is exact")
    return FORMATS["u8s8"], f"{cls}: no ISA-specific knowledge; onnxruntime's default U8S8"


class CalibrationReader:
    """onnxruntime's CalibrationDataReader over a preprocessed array, ``step`` images per batch."""

    def __init__(self, input_name: str, x: np.ndarray, step: int | None):
        self.input_name, self.x, self.step, self.i = input_name, x, step or 1, 0

    def get_next(self):
        if self.i + self.step > len(self.x):
            return None
        chunk = self.x[self.i:self.i + self.step]
        self.i += self.step
        return {self.input_name: np.ascontiguousarray(chunk)}

    def rewind(self):
        self.i = 0


def quantize(prepared: Path, dst: Path, calibration: np.ndarray, fmt: Int8Format, *, step: int | None,
             method: str = "minmax", per_channel: bool = True, op_types=("MatMul", "Gemm", "Conv"),
             exclude_nodes=(), cache: Path | None = None) -> Path:
    """``quantize_static`` (QDQ) of ``prepared`` in format ``fmt``.

    ``cache``: a calibration-range file (onnxruntime's ``calibration_cache_path``); the ranges do not
    depend on the format, so several formats of one model calibrate once.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise XcitExportError(f"onnxruntime-int8 option method='{method}' is unknown; use one of {', '.join(methods)}")
    reader = CalibrationReader("input", calibration, step)
    quantize_static(
        str(prepared), str(dst), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types),
        per_channel=per_channel, reduce_range=fmt.reduce_range, activation_type=getattr(QuantType, fmt.activation),
        weight_type=getattr(QuantType, fmt.weight), calibrate_method=methods[method],
        nodes_to_exclude=list(exclude_nodes), calibration_providers=["CPUExecutionProvider"],
        calibration_cache_path=str(cache) if cache else None,
        extra_options={"ActivationSymmetric": fmt.activation_symmetric, "WeightSymmetric": fmt.weight_symmetric})
    return dst
