"""openvino-int8: NNCF post-training quantization of the IR (``nncf.quantize``, transformer preset), or
accuracy-controlled quantization against the evaluation set with ``max_drop``."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from typing import Any

import numpy as np

from ...errors import DataError, XcitExportError
from ..base import BuildContext
from .options import DEFAULT_SUBSET_SIZE, MIN_CALIBRATION, _core, parse_ignored_scope


@contextlib.contextmanager
def _quiet_nncf():
    """NNCF prints progress bars and INFO lines; keep the CLI's own progress readable."""
    import nncf

    logger = logging.getLogger("nncf")
    old = logger.level
    nncf.set_log_level(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf.set_log_level(old)


def _check_array(name: str, option: str, x: Any, input_shape: tuple[int, int, int]) -> np.ndarray:
    """A 4-D batch in the model's input layout (NCHW or NHWC), in its own dtype (float32 or uint8)."""
    x = np.asarray(x)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(f"{name} has shape {x.shape}; the model needs (N, {', '.join(map(str, input_shape))}): "
                        f"check {option}, --input-size and --input-format")
    return np.ascontiguousarray(x, dtype=np.float32 if x.dtype == np.float64 else x.dtype)


def _batches(x: np.ndarray, batch: int) -> list[np.ndarray]:
    """Whole batches of ``batch`` images (a partial last batch is dropped)."""
    return [np.ascontiguousarray(x[i:i + batch]) for i in range(0, len(x) - batch + 1, batch)]


def _int8_settings(ctx: BuildContext) -> dict[str, Any]:
    """Check every INT8 option and the calibration set before any conversion work starts."""
    import nncf

    opts = ctx.options  # parsed (Target.parse_options): every option, canonical
    if ctx.calibration is None:
        raise DataError("openvino-int8 needs calibration images: pass --calib (at least "
                        f"{MIN_CALIBRATION}, {DEFAULT_SUBSET_SIZE} recommended)")
    calib = _check_array("the calibration set", "--calib", ctx.calibration, ctx.input_shape)
    n = len(calib)
    subset = opts["subset_size"]
    if subset is not None:
        if subset > n:
            raise DataError(f"subset_size={subset} asks for more calibration images than the set holds ({n}): "
                            f"pass more with --calib / --calib-size {subset}, or lower "
                            f"-O openvino-int8:subset_size")
    else:
        if n < MIN_CALIBRATION:
            raise DataError(f"the calibration set has {n} image(s); openvino-int8 needs at least "
                            f"{MIN_CALIBRATION} ({DEFAULT_SUBSET_SIZE} recommended): pass more with --calib / "
                            f"--calib-size {DEFAULT_SUBSET_SIZE}")
        subset = min(DEFAULT_SUBSET_SIZE, n)
    target_device = {"CPU": nncf.TargetDevice.CPU, "GPU": nncf.TargetDevice.GPU,
                     "NPU": nncf.TargetDevice.NPU}.get(re.split(r"[.:]", opts["device"])[0], nncf.TargetDevice.ANY)
    max_drop = opts["max_drop"]  # a fraction, like every target's max_drop
    if max_drop is not None and ctx.evaluation is None:
        raise DataError("max_drop needs an evaluation set to measure the drop on: pass one (--eval), or drop "
                        "-O openvino-int8:max_drop")
    # Never the first `subset` images (a class-ordered set would give a few classes): a seeded,
    # class-stratified draw where the calibration set is labelled.
    from ...data.sets import representative_subset

    picked, selection = representative_subset(n, subset, ctx.calibration_labels, ctx.seed)
    return {"calib": calib[picked], "selection": selection, "subset_size": subset, "preset": opts["preset"],
            "fast_bias_correction": opts["fast_bias_correction"], "target_device": target_device, "max_drop": max_drop}


def _quantize(model, ctx: BuildContext, s: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    import nncf

    op_types = {op.get_type_name() for op in model.get_ops()}
    s["ignored_scope"], s["ignored_scope_spec"] = parse_ignored_scope(ctx.options["ignored_scope"], op_types)
    batch = ctx.batch or 1
    calib_items = _batches(s["calib"], batch)
    if not calib_items:
        raise DataError(f"the calibration set ({len(s['calib'])} images) holds no whole batch of --batch {batch}: "
                        f"pass more with --calib / --calib-size")
    common = dict(preset=nncf.QuantizationPreset(s["preset"]), target_device=s["target_device"],
                  subset_size=len(calib_items), fast_bias_correction=s["fast_bias_correction"],
                  model_type=nncf.ModelType.TRANSFORMER, ignored_scope=s["ignored_scope"])
    meta: dict[str, Any] = {
        "nncf": {"method": "quantize", "model_type": "transformer", "preset": s["preset"],
                 "subset_size": s["subset_size"], "fast_bias_correction": s["fast_bias_correction"],
                 "ignored_scope": s["ignored_scope_spec"], "target_device": s["target_device"].value,
                 "calibration_count": int(len(ctx.calibration)), "calibration_id": ctx.calibration_id,
                 "calibration_selection": s["selection"]}}
    calib_ds = nncf.Dataset(calib_items)
    try:
        with _quiet_nncf():
            if s["max_drop"] is None:
                quantized = nncf.quantize(model, calib_ds, **common)
            else:
                quantized, ac_meta = _quantize_with_accuracy_control(model, ctx, calib_ds, s["max_drop"], common)
                meta["nncf"].update(ac_meta)
    except nncf.ValidationError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:500]
        raise XcitExportError(f"NNCF rejected the quantization settings: {detail} Fix -O openvino-int8:ignored_scope "
                              f"(op types present: {', '.join(sorted(op_types))}; node names are in the "
                              f"openvino-fp32 model.xml)") from None
    return quantized, meta


def _quantize_with_accuracy_control(model, ctx: BuildContext, calib_ds, max_drop: float, common: dict):
    """``nncf.quantize_with_accuracy_control`` with top-1 (labels) or top-1 agreement (no labels)."""
    import nncf
    import openvino as ov

    out = model.output(0)
    if len(model.outputs) != 1 or out.get_partial_shape().rank.get_length() != 2 or "logits" not in out.names:
        raise XcitExportError(f"max_drop measures top-1 accuracy, which needs the classifier's logits; this model "
                              f"outputs {', '.join(o.any_name for o in model.outputs)}: drop "
                              f"-O openvino-int8:max_drop or export with --output logits")
    x, labels = ctx.evaluation
    x = _check_array("the evaluation set", "--eval", x, ctx.input_shape)
    batch = ctx.batch or 1
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(x):
            raise DataError(f"the evaluation set has {len(x)} images but {len(labels)} labels")
        metric = "top1_vs_labels"
        targets = labels
    else:
        metric = "top1_agreement_vs_fp32"
        compiled = _core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        targets = np.concatenate([compiled(b)[0].argmax(axis=1) for b in _batches(x, batch)])
    items = [(xb, targets[i * batch:(i + 1) * batch]) for i, xb in enumerate(_batches(x, batch))]
    if not items:
        raise DataError(f"the evaluation set ({len(x)} images) holds no whole batch of --batch {batch}")

    def validate(compiled_model: ov.CompiledModel, data) -> tuple[float, list[float]]:
        per_item, correct, total = [], 0, 0
        for xb, yb in data:
            pred = compiled_model(xb)[0].argmax(axis=1)
            hits = int((pred == yb).sum())
            per_item.append(hits / len(yb))
            correct += hits
            total += len(yb)
        return correct / max(total, 1), per_item

    val_ds = nncf.Dataset(items, lambda item: item[0])
    quantized = nncf.quantize_with_accuracy_control(
        model, calib_ds, val_ds, validate, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, **common)
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}  # as NNCF's own validation runs
    fp32_score = 1.0 if labels is None else validate(_core().compile_model(model, "CPU", f32), items)[0]
    int8_score = validate(_core().compile_model(quantized, "CPU", f32), items)[0]
    return quantized, {"method": "quantize_with_accuracy_control", "max_drop": max_drop,
                       "max_drop_points": round(100 * max_drop, 6),
                       "accuracy_metric": metric, "evaluation_count": int(len(items) * batch),
                       "fp32_score": round(100 * fp32_score, 3), "int8_score": round(100 * int8_score, 3),
                       "note": "accuracy control tuned on the evaluation set; its figures there are optimistic"}
