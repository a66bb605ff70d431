"""Building an OpenVINO target: ONNX -> ``ov.Model`` (static batch when asked) -> NNCF INT8 where asked ->
IR pair saved (FP16-compressed weights for openvino-fp16) -> read back, compiled and run before it
is accepted (and, for a --dynamic-size IR, run at another size)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ArtifactError
from ..base import Artifact, BuildContext
from .int8 import _int8_settings, _quantize
from .options import _core, last_line, precision_hint


def _convert(ctx: BuildContext):
    """ONNX -> ov.Model, made static when the pipeline asked for a batch (never static -> dynamic)."""
    import openvino as ov

    try:
        model = ov.convert_model(str(ctx.onnx_path))
    except Exception as exc:
        raise ArtifactError(f"openvino.convert_model failed on '{ctx.onnx_path}': "
                            f"{str(exc).strip().splitlines()[-1][:400]}") from None
    if len(model.inputs) != 1:
        raise ArtifactError(f"'{ctx.onnx_path}' has {len(model.inputs)} inputs; an XCiT classifier has one")
    shape = model.input(0).get_partial_shape()
    if ctx.batch is not None:
        if shape[0].is_dynamic:
            model.reshape({model.input(0): ov.PartialShape([ctx.batch, *ctx.input_shape])})
        elif shape[0].get_length() != ctx.batch:
            raise ArtifactError(f"'{ctx.onnx_path}' has a static batch {shape[0]} but --batch is {ctx.batch}; "
                                f"rebuild with --rebuild")
    elif not shape[0].is_dynamic:
        raise ArtifactError(f"'{ctx.onnx_path}' has a static batch {shape[0]} but no --batch was given; "
                            f"a static-batch graph cannot be made dynamic (its Reshape constants hold the "
                            f"batch). Rebuild with --rebuild, or pass --batch {shape[0]}")
    return model


def _self_check(xml: Path, batch: int | None, input_shape: tuple[int, int, int]) -> None:
    """Read the IR back from disk, compile it on CPU and run it, so a broken IR fails the build."""
    core = _core()
    try:
        compiled = core.compile_model(core.read_model(str(xml)), "CPU")
        dtype = compiled.input(0).get_element_type().to_dtype()
        request = compiled.create_infer_request()
        for b in ([batch] if batch else [1, 2]):
            res = request.infer({0: np.zeros((b, *input_shape), dtype=dtype)})
            for port in compiled.outputs:
                out = res[port]
                if out.shape[0] != b or not np.isfinite(out).all():
                    raise RuntimeError(f"batch {b} gave output '{port.any_name}' of shape {out.shape} "
                                       f"(finite: {bool(np.isfinite(out).all())})")
    except Exception as exc:
        detail = last_line(exc)
        how = ("pass --batch N for a static-batch IR (also faster on CPU)" if batch is None
               else "rebuild with --rebuild; if it persists, report it with the ONNX file")
        raise ArtifactError(f"the built IR '{xml}' does not run on this CPU at "
                            f"{'batch ' + str(batch) if batch else 'dynamic batch (1 and 2)'}: {detail[:300]}; "
                            f"{how}") from None


def _check_other_size(xml: Path, ctx: BuildContext, precision: str) -> None:
    """A --dynamic-size IR run at a size other than the export size (taller and wider by patches).

    NNCF's INT8 IR of a dynamic-size XCiT is tied to the export size (OpenVINO 2025: a dequantization
    constant of the LayerNorm output has the export size's token count), so it fails here, at build
    time, with a message that says what to use instead, rather than at the first other size.
    """
    shape = tuple(ctx.input_shape)
    p = int(getattr(ctx.spec, "patch_size", 16) or 16)
    other = (shape[0], shape[1] + 2 * p, shape[2] + 4 * p) if shape[0] == 3 else (shape[0] + 2 * p, shape[1] + 4 * p, shape[2])
    try:
        _self_check(xml, ctx.batch or 1, other)
    except ArtifactError as exc:
        hint = (" NNCF's INT8 IR is tied to the size it was quantized at; for --dynamic-size use onnxruntime-int8 or "
                "tensorrt-int8, or export openvino-int8 at one size (without --dynamic-size)" if precision == "int8"
                else "")
        raise ArtifactError(f"openvino-{precision}: the --dynamic-size IR does not run at another size "
                            f"({'x'.join(map(str, other))}): {exc}.{hint}") from None


def _build(ctx: BuildContext, precision: str) -> Artifact:
    import openvino as ov

    target = f"openvino-{precision}"
    device = ctx.options["device"]
    inference_precision = precision_hint(ctx.options["inference_precision"], precision)
    int8 = _int8_settings(ctx) if precision == "int8" else None
    model = _convert(ctx)
    meta: dict[str, Any] = {}
    if int8 is not None:
        model, meta = _quantize(model, ctx, int8)
    xml = ctx.out_dir / "model.xml"
    # FP16 compresses float weights; FP32 and INT8 keep float constants as they are (an INT8 IR's
    # remaining float weights -- LayerNorm, biases, reverted layers -- stay as calibrated).
    compress = precision == "fp16"
    ov.save_model(model, str(xml), compress_to_fp16=compress)
    bin_path = xml.with_suffix(".bin")
    _self_check(xml, ctx.batch, ctx.input_shape)
    if ctx.dynamic_size:  # --dynamic-size: the IR must also run at another size, or the build fails here
        _check_other_size(xml, ctx, precision)
    meta.update({
        "precision": precision,
        "openvino": ov.__version__.split("-")[0],
        "openvino_build": ov.__version__,
        "batch": ctx.batch if ctx.batch is not None else "dynamic",
        "input_shape": [ctx.batch if ctx.batch is not None else -1, *ctx.input_shape],
        "weights_compressed_to_fp16": compress,
        "device": device,
        "inference_precision": inference_precision or "device default",
        "bin_size_bytes": bin_path.stat().st_size,
    })
    if precision == "int8":
        import nncf

        meta["nncf_version"] = nncf.__version__
    if ctx.batch is None:
        meta["note"] = ("dynamic-batch IR: OpenVINO's CPU plugin is markedly faster on a static batch; pass "
                        "--batch N for a static IR")
    return Artifact(target=target, path=xml, files=[xml, bin_path], metadata=meta)
