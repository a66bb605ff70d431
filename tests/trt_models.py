"""Models shared by the TensorRT/precision/bundle tests, made once per test process.

xcit_nano_12_p16_224 at its full 224x224, with seeded random weights perturbed so that every
bias, LayerNorm gain and attention temperature is non-trivial (timm's init leaves biases at zero,
which the exporter folds away: the qkv bias Add that tripped NVIDIA's parser would be missing).
Exporting takes ~35 s and the precision conversions 20-60 s each on 2 cores, so each is cached.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from xcit_export import export as export_mod
from xcit_export.models.weights import load_model
from xcit_export.models.zoo import get_spec

MODEL = "xcit_nano_12_p16_224"
SIZE = 224
_ROOT = Path(tempfile.mkdtemp(prefix="xcit-trt-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)


def spec():
    return get_spec(MODEL)


def inputs(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, SIZE, SIZE), dtype=np.float32)


@functools.lru_cache(maxsize=None)
def nano_onnx() -> Path:
    """Simplified FP32 ONNX (opset 18, dynamic batch) of the perturbed nano model."""
    model = load_model(spec(), "random", 0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * (0.02 if p.dim() > 1 else 0.1))
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0, generator=gen)
            elif name.endswith("running_mean"):
                buf.normal_(0.0, 0.1, generator=gen)
    folder = _ROOT / "fp32"
    folder.mkdir()
    raw = export_mod.export_onnx(model, (3, SIZE, SIZE), folder / "model.raw.onnx")
    return export_mod.simplify_onnx(raw, folder / "model.onnx")


def calibration() -> np.ndarray:
    return inputs(8, seed=11)


@functools.lru_cache(maxsize=None)
def precision_onnx(precision: str) -> tuple[Path, dict]:
    """(path, summary) of the FP16 (AutoCast) or INT8 (ModelOpt PTQ) ONNX of :func:`nano_onnx`."""
    from xcit_export.quantize import precision as prec

    out = _ROOT / f"model.{precision}.onnx"
    if precision == "fp16":
        summary = prec.to_fp16(nano_onnx(), out, calibration())
    elif precision == "int8":
        summary = prec.to_int8(nano_onnx(), out, calibration(), method="entropy")
    else:
        raise ValueError(precision)
    return out, summary


def scratch(name: str) -> Path:
    path = _ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


FEATURES_SIZE = 64  # 4x4 patches: the features head at a size that keeps conversions and builds short


@functools.lru_cache(maxsize=None)
def features_onnx(precision: str = "fp32") -> Path:
    """``--output features`` (four outputs) of the nano model at 64x64, FP32 or converted to ``precision``."""
    import dataclasses

    from xcit_export.quantize import precision as prec
    from xcit_export.models.deploy import DeployModel

    if precision != "fp32":
        src = features_onnx("fp32")
        out = _ROOT / f"features.{precision}.onnx"
        calib = np.random.default_rng(12).standard_normal((4, 3, FEATURES_SIZE, FEATURES_SIZE), dtype=np.float32)
        if precision == "fp16":
            prec.to_fp16(src, out, calib)
        else:
            prec.to_int8(src, out, calib, method="max")
        return out
    pre = dataclasses.replace(spec().preprocessing, input_size=(FEATURES_SIZE, FEATURES_SIZE))
    model = DeployModel(load_model(spec(), "random", 0), pre, output="features").eval()
    folder = _ROOT / "features"
    folder.mkdir()
    raw = export_mod.export_onnx(model, (3, FEATURES_SIZE, FEATURES_SIZE), folder / "model.raw.onnx")
    return export_mod.simplify_onnx(raw, folder / "model.onnx")
