"""Stage 1: PyTorch -> ONNX -> checked -> simplified -> parity-checked against PyTorch.

Opset 18 is the default (17 is the minimum): from opset 17 ``LayerNormalization`` is a single ONNX
op, which TensorRT, OpenVINO and ONNX Runtime all fuse into one kernel and which precision tools
(ModelOpt AutoCast) can keep in FP32 as a unit; below 17 it decomposes into ReduceMean/Sub/Pow/
Sqrt/Div chains that overflow in FP16 and that quantizers cut into pieces. 18 is what the torch
2.13 dynamo exporter emits natively (no version conversion pass) and what TensorRT 10.x parses.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from .errors import BrokenReferenceError, ExportError, ParityError
from .evaluate.validate import evaluation_batch
from .io import atomic_path
from .options import DEFAULT_OPSET, MIN_OPSET  # the --opset option's default and range, declared there

INPUT_NAME = "input"

# FP32 parity tolerances for ONNX vs PyTorch on the same inputs (different kernels, same math).
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-3


@dataclass(frozen=True)
class ExportOptions:
    """How the graph is traced: ``batch=None`` keeps the batch dimension dynamic.

    ``dynamic_size`` (timm's ``--dynamic-size``) makes the height and width symbolic too: one graph
    for every input size that is a multiple of the patch size (``height``/``width`` in the ONNX
    input's shape). The model must compute everything size-dependent from the input (XCiT's
    Fourier encoding does; ViT needs ``dynamic_img_size``, set by :func:`export_onnx`).

    ``export_form`` traces :func:`xcit_export.models.fuse.export_form` of the model (same function,
    fewer data moves; see that module); ``False`` traces the reference as written (for comparisons).
    """

    batch: int | None = None
    opset: int = DEFAULT_OPSET
    parity_inputs: int = 2
    export_form: bool = True
    dynamic_size: bool = False

    def validate(self) -> None:
        if self.batch is not None and self.batch < 1:
            raise ExportError(f"--batch must be >= 1 (or omitted for a dynamic batch), got {self.batch}")
        if self.opset < MIN_OPSET:
            raise ExportError(f"--opset {self.opset} is too old: LayerNormalization needs opset >= {MIN_OPSET}")


def output_names(model: torch.nn.Module) -> list[str]:
    return list(getattr(model, "output_names", None) or ["logits"])


def _quiet():
    """Silence the dynamo exporter's progress prints and deprecation chatter for a tidy CLI."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("torch.onnx", "torch.export", "onnxscript"):
        logger = logging.getLogger(name)
        old = logger.level
        logger.setLevel(logging.ERROR)
        stack.callback(logger.setLevel, old)
    return stack


def seeded_inputs(shape: tuple[int, ...], count: int, seed: int = 0) -> np.ndarray:
    """``count`` seeded inputs of image-like statistics (standard normal after normalisation)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, *shape), dtype=np.float32)


def torch_reference(model: torch.nn.Module, x: np.ndarray, batch: int | None = None) -> list[np.ndarray]:
    """Run the PyTorch reference on ``x`` in chunks; returns one array per output."""
    step = evaluation_batch(batch)
    chunks: list[list[np.ndarray]] = []
    with torch.inference_mode():
        for i in range(0, len(x), step):
            out = model(torch.from_numpy(np.ascontiguousarray(x[i:i + step])))
            outs = out if isinstance(out, (tuple, list)) else (out,)
            chunks.append([o.numpy() for o in outs])
    return [np.concatenate(parts) for parts in zip(*chunks)]


# Symbolic height/width bounds (pixels): the smallest is two patches of the largest patch size, so no
# dimension is 1 (which the tracer would specialise); the largest covers detection inputs.
MIN_SIDE = 32
MAX_SIDE = 8192


def size_dims(model: torch.nn.Module, input_shape: tuple[int, ...]) -> dict[int, Any]:
    """``{axis: Dim}`` for the height and width of ``input_shape`` (NCHW ``(3, H, W)`` or NHWC
    ``(H, W, 3)``, told apart by the model's ``input_format``), and ``dynamic_img_size`` switched on
    in a backbone whose size-dependent parts need it (ViT's position table)."""
    layout = getattr(model, "input_format", "nchw")
    h_axis = 2 if layout == "nchw" else 1
    backbone = getattr(model, "backbone", model)
    if hasattr(backbone, "dynamic_img_size"):
        backbone.dynamic_img_size = True
    return {h_axis: torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE),
            h_axis + 1: torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)}


def export_onnx(model: torch.nn.Module, input_shape: tuple[int, ...], path: Path,
                options: ExportOptions = ExportOptions(), dtype: torch.dtype = torch.float32) -> Path:
    """Trace ``model`` to ``path`` (raw, unsimplified); checked with ``onnx.checker``.

    ``input_shape`` excludes the batch; output names come from ``model.output_names`` if set.
    """
    options.validate()
    model = model.eval()
    names = output_names(model)
    if options.export_form:
        from .models.fuse import export_form

        model = export_form(model)
    example = torch.zeros((options.batch or 2, *input_shape), dtype=dtype)
    dims: dict[int, Any] = {}
    if options.batch is None:
        dims[0] = torch.export.Dim("batch", min=1, max=4096)
    if options.dynamic_size:
        dims.update(size_dims(model, input_shape))
    dynamic_shapes = (dims,) if dims else None
    with atomic_path(path) as tmp:
        try:
            with _quiet():
                torch.onnx.export(model, (example,), str(tmp), input_names=[INPUT_NAME], output_names=names,
                                  opset_version=options.opset, dynamo=True, dynamic_shapes=dynamic_shapes,
                                  external_data=False, optimize=True)
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed for input {input_shape}: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0][:500]}") from exc
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"exported ONNX fails onnx.checker: {str(exc)[:500]}") from exc
    return path


def simplify_onnx(src: Path, dst: Path) -> Path:
    """onnxsim: constant folding and dead-node removal; the result is checked again."""
    import onnxsim

    model = onnx.load(str(src))
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:
        raise ExportError(f"onnxsim failed on {src}: {type(exc).__name__}: {str(exc)[:300]}") from exc
    if not ok:
        raise ExportError(f"onnxsim could not verify the simplified model of {src}")
    onnx.checker.check_model(simplified, full_check=True)
    with atomic_path(dst) as tmp:
        onnx.save(simplified, str(tmp))
    return dst


def check_parity(onnx_path: Path, inputs: np.ndarray, reference: list[np.ndarray],
                 atol: float = PARITY_ATOL, rtol: float = PARITY_RTOL) -> dict[str, float]:
    """Run ``onnx_path`` with onnxruntime (CPU) and compare every output with the reference.

    Raises :class:`BrokenReferenceError` when the reference itself is not finite (checked first),
    :class:`ParityError` naming the output and the error when it exceeds tolerance.
    """
    import onnxruntime as ort

    # The reference first: a non-finite PyTorch output means the model is broken, not its export.
    for i, r in enumerate(reference):
        if not np.all(np.isfinite(r)):
            bad = int((~np.isfinite(np.asarray(r).reshape(len(r), -1))).any(axis=1).sum())
            raise BrokenReferenceError(
                f"the PyTorch reference gives non-finite outputs (NaN or inf) for {bad} of {len(r)} parity inputs "
                f"(output {i}): the model itself is broken (e.g. NaN or inf weights in the checkpoint), not "
                f"the export; nothing can be checked against it")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(None, {sess.get_inputs()[0].name: inputs})
    worst = {}
    for name, g, r in zip(names, got, reference):
        if g.shape != r.shape:
            raise ParityError(f"{onnx_path.name}: output '{name}' has shape {g.shape}, PyTorch gives {r.shape}")
        err = np.abs(g.astype(np.float64) - r)
        limit = atol + rtol * np.abs(r)
        worst[name] = float(err.max())
        if not np.all(err <= limit) or not np.all(np.isfinite(g)):
            raise ParityError(
                f"{onnx_path.name}: output '{name}' differs from PyTorch by max {err.max():.3g} "
                f"(tolerance {atol:g} + {rtol:g}*|ref|); the export is wrong, not just imprecise")
    return worst


def parity_sizes(height: int, width: int, patch: int) -> list[tuple[int, int]]:
    """Sizes besides the export size at which a ``--dynamic-size`` export is parity-checked: a taller
    and a wider one (non-square, so swapped axes or a size baked at export cannot pass)."""
    return [(height + 2 * patch, width + 4 * patch)]


def check_parity_at_sizes(onnx_path: Path, model: torch.nn.Module, spec, input_format: str,
                          options: ExportOptions, seed: int, worst: dict[str, float],
                          sizes: list[tuple[int, int]] | None = None) -> dict[str, float]:
    """:func:`check_parity` of a ``--dynamic-size`` ONNX at ``sizes`` (default :func:`parity_sizes`);
    returns the worst error per output over these and ``worst``."""
    from .models.deploy import to_input_format

    h, w = spec.preprocessing.input_size
    worst = dict(worst)
    for sh, sw in sizes or parity_sizes(h, w, spec.patch_size):
        x = seeded_inputs((3, sh, sw), options.batch or 1, seed=seed + 1)
        x = to_input_format(x, input_format, spec.preprocessing)
        for name, err in check_parity(onnx_path, x, torch_reference(model, x)).items():
            worst[name] = max(worst.get(name, 0.0), err)
    return worst
