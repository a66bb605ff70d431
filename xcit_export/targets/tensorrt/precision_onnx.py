"""Precision-ready ONNX: the FP16/INT8 conversion call, the golden data and the ONNX-level check.

Host side (onnx, onnxruntime, ModelOpt are imported inside the functions).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np

from ...errors import ExportError, XcitExportError
from ...io import atomic_path
from ...evaluate.validate import evaluation_batch
from ...evaluate.validate import compare_outputs, run_in_batches
from ..base import BuildContext
from ..onnxruntime import OnnxRuntimeRunner

GOLDEN_FILE = "golden.npz"


def make_precision_onnx(ctx: BuildContext, name: str, precision: str, options: dict, onnx_out: Path) -> dict:
    """Write the precision-ready ONNX ``onnx_out`` for ``precision``; return the conversion summary.

    FP32: the simplified ONNX as is; FP16: ModelOpt AutoCast with XCiT's overflow-prone ops in FP32;
    INT8: ModelOpt PTQ (explicit Q/DQ) calibrated on ``ctx.calibration`` (see :mod:`xcit_export.quantize.precision`).
    """
    from ...quantize import precision as prec
    from .options import _exclude_op_types

    if precision == "fp32":
        shutil.copyfile(ctx.onnx_path, onnx_out)
        return {"precision": "fp32"}
    if precision == "fp16":
        return prec.to_fp16(ctx.onnx_path, onnx_out, ctx.calibration,
                            keep_nodes=list(options["keep_fp32_nodes"]),
                            reference_labels=ctx.calibration_labels, reference_seed=ctx.seed)
    if ctx.calibration is None:
        raise XcitExportError(f"target {name} needs calibration images: pass --calib")
    summary = prec.to_int8(ctx.onnx_path, onnx_out, ctx.calibration,
                           method=options["calibration_method"],
                           exclude_op_types=_exclude_op_types(options["exclude_op_types"]),
                           exclude_nodes=list(options["exclude_nodes"]),
                           high_precision=options["high_precision"],
                           reference_labels=ctx.calibration_labels, reference_seed=ctx.seed)
    # Per-group sensitivity and the accuracy-budget search (-O ...:sensitivity / max_drop; quantize/sensitivity.py).
    summary.update(prec.int8_search(onnx_out, ctx))
    return summary


def _ort_outputs(path: Path, x: np.ndarray, batch: int | None, threads: int | None) -> list[np.ndarray]:
    """Every output of the ONNX at ``path`` on onnxruntime CPU, in the graph's order."""
    runner = OnnxRuntimeRunner(path, threads=threads)
    try:
        return run_in_batches(runner.infer, x, evaluation_batch(batch))
    finally:
        runner.close()


def golden_outputs(arrays, key: str) -> list[np.ndarray]:
    """``reference`` or ``onnx_output`` of a golden file, every output in order: the first under
    ``key``, output ``i`` > 0 under ``<key>_<i>`` (files written for one output hold only the first)."""
    out = [arrays[key]]
    while f"{key}_{len(out)}" in arrays:
        out.append(arrays[f"{key}_{len(out)}"])
    return out


def _graph_input_dtype(path: Path) -> np.dtype:
    import onnx

    elem = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.elem_type
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))


def golden_file(size: tuple[int, int] | None = None) -> str:
    """``golden.npz`` at the export size; ``golden_<H>x<W>.npz`` at another ``--eval-sizes`` size."""
    return GOLDEN_FILE if size is None else f"golden_{size[0]}x{size[1]}.npz"


def write_golden(ctx: BuildContext, precision_onnx: Path, count: int, size: tuple[int, int] | None = None) -> dict:
    """Golden inputs (evaluation set, else seeded), the FP32 ONNX's outputs as the reference and the
    precision ONNX's outputs, in ``golden.npz``; returns the ONNX-level agreement.

    ``size`` (a ``--dynamic-size`` ONNX): seeded inputs of that height and width instead, written
    to :func:`golden_file` of it, so device-check runs the engine at every size of its profile.
    """
    shape = tuple(ctx.input_shape)
    if size is not None:
        axis = 1 if shape[0] == 3 else 0
        shape = (*shape[:axis], int(size[0]), int(size[1]), *shape[axis + 2:])
    selection = None
    if size is None and ctx.evaluation is not None and len(ctx.evaluation[0]):
        from ...data.sets import representative_subset, take_rows

        x_all, labels_all = ctx.evaluation
        # A seeded, class-stratified draw, never the first `count` (a class-ordered set gives few classes).
        picked, selection = representative_subset(len(x_all), count, labels_all, ctx.seed)
        # already in the graph's input format (float32 or uint8); --on-bad-image skip replaces an unreadable one
        x, labels = take_rows(x_all, labels_all, picked)
        source = "evaluation set"
    else:
        rng = np.random.default_rng(20240607)
        if _graph_input_dtype(ctx.onnx_path) == np.uint8:
            x = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
        else:
            x = rng.standard_normal((count, *shape), dtype=np.float32)
        labels, source = None, "seeded random inputs (seed 20240607)"
        if size is not None:
            source += f" at {size[0]}x{size[1]}"
    if ctx.batch and len(x) % ctx.batch:  # a static-batch ONNX takes whole batches only
        keep = max(ctx.batch, len(x) // ctx.batch * ctx.batch)
        x = np.resize(x, (keep, *x.shape[1:]))
        labels = None if labels is None else np.resize(labels, keep)
    references = _ort_outputs(ctx.onnx_path, x, ctx.batch, ctx.threads)
    outputs = _ort_outputs(precision_onnx, x, ctx.batch, ctx.threads)
    if len(outputs) != len(references):
        raise ExportError(f"the precision-ready ONNX '{precision_onnx.name}' has {len(outputs)} output(s), the FP32 "
                          f"ONNX {len(references)}: the conversion lost outputs")
    checks = [compare_outputs(o, r) for o, r in zip(outputs, references)]
    if not all(c["finite"] for c in checks):
        raise ExportError(f"the precision-ready ONNX '{precision_onnx.name}' gives non-finite outputs on "
                          f"onnxruntime CPU: an FP16 overflow; keep more nodes in FP32 (-O keep_fp32_nodes=...)")
    # the first output's figures (the logits); a multi-output model's others beside them, each held by device-check
    result = dict(checks[0])
    if len(checks) > 1:
        result["outputs"] = checks
    arrays = {"x": x, "reference": references[0], "onnx_output": outputs[0]}
    for i in range(1, len(outputs)):
        arrays[f"reference_{i}"], arrays[f"onnx_output_{i}"] = references[i], outputs[i]
    if labels is not None:
        arrays["labels"] = labels
    with atomic_path(ctx.out_dir / golden_file(size)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return {"source": source, "selection": selection, **result}


def _calibration_provenance(ctx: BuildContext, precision: str, options: dict) -> dict | None:
    """Which images calibrated the precision-ready ONNX (INT8 scales; FP16's FP32-keep ranges)."""
    if ctx.calibration is None or precision == "fp32":
        return None
    from ...quantize.precision import FP16_MAX_REFERENCE_IMAGES

    arr = np.ascontiguousarray(ctx.calibration)
    if precision == "int8":
        use = f"INT8 activation scales ({options.get('calibration_method', 'entropy')})"
        if str(options.get("high_precision", "fp16")) == "fp16":
            use += f"; FP16 range check on {min(len(arr), FP16_MAX_REFERENCE_IMAGES)} of them (seeded, stratified)"
    else:
        use = (f"FP16 range check (AutoCast data_max) on {min(len(arr), FP16_MAX_REFERENCE_IMAGES)} of them "
               f"(seeded, stratified by class where labelled)")
    return {"id": ctx.calibration_id, "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
            "count": int(len(arr)), "shape": list(arr.shape[1:]), "used_for": use,
            "method": options.get("calibration_method", "entropy") if precision == "int8" else "autocast"}
