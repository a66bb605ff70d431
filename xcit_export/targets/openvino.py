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
requests (:mod:`.openvino_pool`, :func:`open_pool`). ``--device`` must exist here to validate (``Core().available_devices``); the
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
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, DataError, XcitExportError
from . import register
from .base import Artifact, BuildContext, Target, as_bool, as_drop, as_int

DEVICES = ("CPU", "GPU", "NPU", "AUTO")
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
PRECISIONS = {"f32": "f32", "bf16": "bf16", "f16": "f16", "default": None}
PRESETS = ("performance", "mixed")
# NNCF's recommendation is 300 calibration images; fewer than MIN_CALIBRATION give activation
# ranges that are mostly noise, so they are refused rather than quantized badly.
DEFAULT_SUBSET_SIZE = 300
MIN_CALIBRATION = 32
VERIFIED = "x86-64 CPU (AMD Zen 4, AVX-512 VNNI; CI)"

COMMON_OPTIONS = {
    "device": "inference device: CPU, GPU, NPU or AUTO (default CPU; GPU.1 picks one of several)",
    "hint": "performance hint: latency (default) or throughput",
    "inference_precision": "runtime precision of floating-point ops: f32, bf16, f16 or default "
                           "(the device's own; openvino-fp32 defaults to f32, the others to default)",
    "shapes": "a --dynamic-size IR: static (default; a reshape and compile per input size, faster on CPU) or "
              "dynamic (one compile for every size)",
}
INT8_OPTIONS = {
    **COMMON_OPTIONS,
    "subset_size": f"calibration images NNCF uses (default: up to {DEFAULT_SUBSET_SIZE}, at least "
                   f"{MIN_CALIBRATION})",
    "preset": "performance (symmetric activations) or mixed (asymmetric activations; default)",
    "ignored_scope": "nodes kept in floating point: a list of OpenVINO op types (e.g. [\"MatMul\"]) and/or "
                     "node-name regexes, or {\"names\": [...], \"patterns\": [...], \"types\": [...]}",
    "fast_bias_correction": "true (default) or false (slower, sometimes more accurate bias correction)",
    "max_drop": "enable accuracy-controlled quantization: maximum top-1 drop as a fraction (0.01 = 1 point) "
                "against the evaluation set's labels (or agreement with FP32 if unlabelled), e.g. 0.01",
}


# ------------------------------------------------------------------------------------------------
# Option parsing (every message names the option, the value and the fix)
# ------------------------------------------------------------------------------------------------

_CORE = None


def _core():
    """One ``openvino.Core`` per process (creating one loads the plugin registry)."""
    global _CORE
    if _CORE is None:
        import openvino as ov

        _CORE = ov.Core()
    return _CORE


def parse_device(value: Any) -> str:
    """``CPU``/``GPU``/``NPU``/``AUTO`` (case-insensitive; ``GPU.1`` and ``AUTO:GPU,CPU`` allowed)."""
    text = str(value if value is not None else "CPU").strip().upper()
    base = re.split(r"[.:]", text, maxsplit=1)[0]
    if base not in DEVICES or not text:
        raise XcitExportError(f"unsupported OpenVINO device '{value}' (--device): use one of "
                              f"{', '.join(DEVICES)}")
    return text


def check_device_available(device: str) -> None:
    """Raise naming the devices that exist when ``device`` is not on this machine (AUTO always is)."""
    if device.startswith("AUTO"):
        return
    available = list(_core().available_devices)
    names = set(available) | {d.split(".")[0] for d in available}
    if device not in names:
        raise ArtifactError(f"OpenVINO device {device} is not available on this machine; available: "
                            f"{', '.join(available) or 'none'}. The IR is device-independent: copy "
                            f"model.xml and model.bin to a machine that has one, or "
                            f"validate here with --device CPU")


def parse_hint(value: Any) -> str:
    key = str(value if value is not None else "latency").strip().lower()
    if key not in HINTS:
        raise XcitExportError(f"unsupported OpenVINO hint '{value}' (--hint): use latency or throughput")
    return HINTS[key]


def parse_precision(value: Any, target_precision: str) -> str | None:
    if value is None:
        return "f32" if target_precision == "fp32" else None
    key = str(value).strip().lower()
    if key not in PRECISIONS:
        raise XcitExportError(f"unsupported inference_precision '{value}' (-O inference_precision=...): use "
                              f"{', '.join(PRECISIONS)}")
    return PRECISIONS[key]


SHAPES = ("static", "dynamic")


def parse_shapes(value: Any) -> str:
    """``-O shapes=``: how a --dynamic-size IR runs: ``static`` (a reshape per input shape, the default:
    faster on CPU) or ``dynamic`` (one compile for every shape)."""
    if value is None:
        return "static"
    text = str(value).strip().lower()
    if text not in SHAPES:
        raise XcitExportError(f"-O shapes={value!r}: use static (a reshape per input size, faster on CPU) or dynamic")
    return text


def _parse_bool(name: str, value: Any) -> bool:
    return as_bool(value, name)  # the one option parser (targets/base.py)


def parse_ignored_scope(value: Any, op_types: set[str]):
    """An ``nncf.IgnoredScope`` from a dict, a list, or a comma-separated string.

    In a list, an entry that is an op type present in the model (``MatMul``, ``Multiply``) is a
    type; anything else is a regular expression on node names.
    """
    import nncf

    if value is None or value == [] or value == "":
        return None, None
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"names", "patterns", "types"})
        if unknown:
            raise XcitExportError(f"ignored_scope has unknown key(s) {', '.join(unknown)}: use names, patterns, "
                                  f"types")
        spec = {k: [str(v) for v in (value.get(k) or [])] for k in ("names", "patterns", "types")}
    else:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise XcitExportError(f"ignored_scope={value!r} is neither a list nor a dict; e.g. "
                                  f"-O openvino-int8:ignored_scope='[\"MatMul\"]'")
        items = [str(i).strip() for i in items if str(i).strip()]
        spec = {"names": [], "patterns": [i for i in items if i not in op_types],
                "types": [i for i in items if i in op_types]}
    for pattern in spec["patterns"]:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise XcitExportError(f"ignored_scope pattern '{pattern}' is not a regular expression ({exc})") from None
    return nncf.IgnoredScope(**spec), spec


# ------------------------------------------------------------------------------------------------
# Build
# ------------------------------------------------------------------------------------------------

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

    opts = ctx.options
    if ctx.calibration is None:
        raise DataError("openvino-int8 needs calibration images: pass --calib (at least "
                        f"{MIN_CALIBRATION}, {DEFAULT_SUBSET_SIZE} recommended)")
    calib = _check_array("the calibration set", "--calib", ctx.calibration, ctx.input_shape)
    n = len(calib)
    explicit = opts.get("subset_size")
    if explicit is not None:
        try:
            subset = int(explicit)
        except (TypeError, ValueError):
            raise XcitExportError(f"subset_size={explicit!r} is not an integer") from None
        if subset < MIN_CALIBRATION:
            raise XcitExportError(f"subset_size={subset} is too small: NNCF needs at least {MIN_CALIBRATION} "
                                  f"calibration images ({DEFAULT_SUBSET_SIZE} recommended)")
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
    preset = str(opts.get("preset", "mixed")).strip().lower()
    if preset not in PRESETS:
        raise XcitExportError(f"preset '{opts['preset']}' is not an NNCF preset: use performance or mixed")
    fbc = _parse_bool("fast_bias_correction", opts.get("fast_bias_correction", True))
    parse_ignored_scope(opts.get("ignored_scope"), set())  # syntax only; types need the model
    device = parse_device(opts.get("device"))
    target_device = {"CPU": nncf.TargetDevice.CPU, "GPU": nncf.TargetDevice.GPU,
                     "NPU": nncf.TargetDevice.NPU}.get(re.split(r"[.:]", device)[0], nncf.TargetDevice.ANY)
    max_drop = as_drop(opts.get("max_drop"))  # a fraction, like every target's max_drop
    if max_drop is not None and ctx.evaluation is None:
        raise DataError("max_drop needs an evaluation set to measure the drop on: pass one (--eval), or drop "
                        "-O openvino-int8:max_drop")
    # Never the first `subset` images (a class-ordered set would give a few classes): a seeded,
    # class-stratified draw where the calibration set is labelled.
    from ..data.sets import representative_subset

    picked, selection = representative_subset(n, subset, ctx.calibration_labels, ctx.seed)
    return {"calib": calib[picked], "selection": selection, "subset_size": subset, "preset": preset, "fast_bias_correction": fbc,
            "target_device": target_device, "max_drop": max_drop}


def _quantize(model, ctx: BuildContext, s: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    import nncf

    op_types = {op.get_type_name() for op in model.get_ops()}
    s["ignored_scope"], s["ignored_scope_spec"] = parse_ignored_scope(ctx.options.get("ignored_scope"), op_types)
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
        detail = _last_line(exc)
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
    device = parse_device(ctx.options.get("device"))  # fail on a bad name before any work
    parse_hint(ctx.options.get("hint"))
    parse_shapes(ctx.options.get("shapes"))
    inference_precision = parse_precision(ctx.options.get("inference_precision"), precision)
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


# ------------------------------------------------------------------------------------------------
# Runner
# ------------------------------------------------------------------------------------------------

def compile_config(device: str, hint: str, precision_hint: str | None, threads: int | None) -> dict[str, Any]:
    """``compile_model`` properties of a runner; the profiler compiles with the same ones (+ PERF_COUNT)."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    if threads and device.startswith("CPU"):
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVINORunner:
    """A compiled IR with one reused ``InferRequest``: ``infer`` copies nothing in, one copy out.

    The arrays ``infer`` returns belong to the caller (later calls do not overwrite them).
    """

    measures_latency = True

    def __init__(self, xml: Path, bin_size: int | None = None, precision: str = "fp32",
                 threads: int | None = None, device: Any = None, hint: Any = None,
                 inference_precision: Any = None, shapes: Any = None):
        self.device = parse_device(device)
        self.hint = parse_hint(hint)
        precision_hint = parse_precision(inference_precision, precision)
        xml = Path(xml)
        bin_path = xml.with_suffix(".bin")
        for path in (xml, bin_path):
            if not path.exists():
                raise ArtifactError(f"OpenVINO IR file '{path}' does not exist; rebuild the target (--rebuild)")
        if bin_size is not None and bin_path.stat().st_size != bin_size:
            raise ArtifactError(f"OpenVINO weights '{bin_path}' are {bin_path.stat().st_size} bytes but were "
                                f"built as {bin_size}: the file is truncated or was replaced; rebuild the target "
                                f"(--rebuild)")
        check_device_available(self.device)
        config = compile_config(self.device, self.hint, precision_hint, threads)
        core = _core()
        try:
            model = core.read_model(str(xml))
        except Exception as exc:
            raise ArtifactError(f"OpenVINO cannot read '{xml}' with '{bin_path}' "
                                f"({_last_line(exc)}): the IR is damaged; rebuild the target (--rebuild)") from None
        try:
            self.compiled = core.compile_model(model, self.device, config)
        except Exception as exc:
            raise ArtifactError(f"OpenVINO cannot compile '{xml}' for {self.device} with {config} "
                                f"({_last_line(exc)})") from None
        self.threads = threads
        try:
            if self.device.startswith("CPU"):
                self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
            value = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            self.inference_precision = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
        except Exception:
            self.inference_precision = precision_hint or "device default"
        self.request = self.compiled.create_infer_request()
        self.output_ports = list(self.compiled.outputs)
        self.output_count = len(self.output_ports)
        import openvino as ov

        self._ov = ov
        shape = self.compiled.input(0).get_partial_shape()
        self.static_batch = None if shape[0].is_dynamic else shape[0].get_length()
        self.input_dtype = self.compiled.input(0).get_element_type().to_dtype()
        # A --dynamic-size IR (symbolic height/width): OpenVINO's CPU plugin is faster on static shapes,
        # so by default each input shape gets its own static compile (``reshape`` at first use, cached);
        # ``shapes=dynamic`` runs the dynamic compile instead. ``shape_mode`` says which one is timed.
        size_dynamic = any(shape[i].is_dynamic for i in range(1, len(shape)))
        self.shape_mode = parse_shapes(shapes) if size_dynamic else "static"
        self._model, self._core, self._config = (model, core, config) if size_dynamic else (None, None, None)
        self._per_shape: dict[tuple, Any] = {}

    def _request_for(self, shape: tuple):
        """The static-shape request for ``shape`` (reshaped from the dynamic IR and compiled once)."""
        request = self._per_shape.get(shape)
        if request is None:
            model = self._model.clone()
            try:
                model.reshape({model.input(0): self._ov.PartialShape(list(shape))})
                compiled = self._core.compile_model(model, self.device, self._config)
            except Exception as exc:
                raise ArtifactError(f"OpenVINO cannot compile this IR for input shape {shape} "
                                    f"({_last_line(exc)}); try -O shapes=dynamic") from None
            request = self._per_shape[shape] = compiled.create_infer_request()
        return request

    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        if self.static_batch is not None and len(x) != self.static_batch:
            raise ArtifactError(f"this IR has a static batch {self.static_batch}; got a batch of {len(x)} "
                                f"(rebuild with --batch {len(x)} or without --batch for a dynamic batch)")
        if x.dtype != self.input_dtype:
            if not (np.issubdtype(x.dtype, np.floating) and np.issubdtype(self.input_dtype, np.floating)):
                raise DataError(f"this IR takes {self.input_dtype} input, got {x.dtype}: convert the data to the "
                                f"model's --input-format")
            x = x.astype(self.input_dtype)
        if not x.flags.c_contiguous or not x.flags.writeable:
            # ov.Tensor(shared_memory=True) needs a writeable C-contiguous buffer; a read-only array
            # (e.g. one Ray hands out from its object store) is copied once here.
            x = np.array(x, order="C")
        # Zero-copy in: the request reads the caller's buffer (``shared_memory=True``); the call is
        # synchronous, so the buffer outlives its use. Plain ``infer()`` on the reused request, with
        # no input dict and no OVDict of results, is the cheapest Python call OpenVINO offers
        # (BENCHMARKS.md, "Runner overhead"). One copy out: the request writes its output tensors
        # in place on the next call, and callers (run_in_batches, reports) keep what infer returned.
        request = self.request if self._model is None or self.shape_mode == "dynamic" else self._request_for(x.shape)
        request.set_input_tensor(self._ov.Tensor(x, shared_memory=True))
        request.infer()
        return [request.get_output_tensor(i).data.copy() for i in range(self.output_count)]

    def close(self) -> None:
        self.request = None
        self.compiled = None
        self._per_shape = {}
        self._model = None


def _last_line(exc: Exception) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def load(artifact: Artifact, threads: int | None = None, **options) -> OpenVINORunner:
    """Open the IR; build-only options (subset_size, preset...) are accepted and ignored."""
    return OpenVINORunner(artifact.path, bin_size=artifact.metadata.get("bin_size_bytes"),
                          precision=artifact.metadata.get("precision", "fp32"), threads=threads,
                          device=options.get("device"), hint=options.get("hint"),
                          inference_precision=options.get("inference_precision"), shapes=options.get("shapes"))


def profile(artifact: Artifact, x: np.ndarray, threads: int | None = None, runs: int | None = None,
            **options) -> dict:
    """Per-op-type time from OpenVINO's performance counters, on a model compiled for it.

    ``PERF_COUNT`` is a compile-time property, so the IR is compiled a second time with the
    runner's device, hint, precision and threads plus ``PERF_COUNT``; ``InferRequest.profiling_info``
    then gives each executed node's ``real_time`` for the last inference
    (https://docs.openvino.ai/2025/openvino-workflow/running-inference/optimize-inference/
    general-optimizations.html, and benchmark_app's ``-pc``). Node types are the plugin's
    (``FullyConnected``, ``Subgraph`` for fused element-wise code, ``Transpose``...).
    """
    import statistics
    import time

    from ..evaluate.profiling import DEFAULT_RUNS, OUTSIDE_OPERATORS, breakdown

    runs = runs or DEFAULT_RUNS
    device = parse_device(options.get("device"))
    check_device_available(device)
    precision_hint = parse_precision(options.get("inference_precision"), artifact.metadata.get("precision", "fp32"))
    config = compile_config(device, parse_hint(options.get("hint")), precision_hint, threads)
    core = _core()
    model = core.read_model(str(artifact.path))
    # First the same IR compiled as the runner's, timed just before the profiled runs: what they
    # are compared with when the machine's speed drifts between passes. In a block of its own:
    # alternating two compiled copies of the weights thrashed the caches (+15-30% here).
    plain_compiled = core.compile_model(model, device, config)
    x = np.ascontiguousarray(x.astype(plain_compiled.input(0).get_element_type().to_dtype(), copy=False))
    plain_request = plain_compiled.create_infer_request()
    plain_request.infer({0: x})
    plain: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        plain_request.infer({0: x})
        plain.append((time.perf_counter() - t0) * 1e3)
    del plain_request, plain_compiled
    request = core.compile_model(model, device, {**config, "PERF_COUNT": True}).create_infer_request()
    request.infer({0: x})  # first run: allocations, not counted
    per_run: list[dict[str, float]] = []
    wall: list[float] = []
    unprofiled = statistics.median(plain)
    for _ in range(runs):
        # The counters hold the last inference only, so they are read after every timed one; that
        # read (one Python object a node) leaves the plugin's threads idle long enough to go to
        # sleep, which slowed the next inference by 15-25% here. An untimed inference between the
        # read and the timed one wakes them, so the timed one runs as in the back-to-back latency loop.
        request.infer({0: x})
        t0 = time.perf_counter()
        request.infer({0: x})
        wall.append((time.perf_counter() - t0) * 1e3)
        ops: dict[str, float] = {}
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                ops[info.node_type] = ops.get(info.node_type, 0.0) + info.real_time.total_seconds() * 1e3
        # What no node accounts for in an inference without the counters (the unprofiled runs just
        # timed): the call, and for a dynamic-batch IR the per-inference shape inference and memory
        # set-up (12-21% of nano's inference at 224 here). Not the profiled run's own wall time,
        # which also holds the counters' cost (up to 19% on nano's static batch-1 IRs here); that stays
        # in ``wall_ms``.
        ops[OUTSIDE_OPERATORS] = max(0.0, unprofiled - sum(ops.values()))
        per_run.append(ops)
    return breakdown("OpenVINO performance counters (PERF_COUNT)", per_run, wall, len(x), unprofiled_ms=plain,
                     note=f"{OUTSIDE_OPERATORS} is the {unprofiled:.2f} ms of the unprofiled runs less the nodes' "
                          f"counter times; the profiled inferences took {statistics.median(wall):.2f} ms")


def open_pool(artifact: Artifact, x: np.ndarray, streams: int | None = None, threads: int | None = None,
              cpu_streams: int | None = None, **options) -> Any:
    """Requests in flight on the IR (``Target.pool``; :mod:`.openvino_pool`): the runner's device,
    precision and threads, ``PERFORMANCE_HINT=THROUGHPUT``; ``streams`` requests (None: the compiled
    model's optimal number), on ``cpu_streams`` CPU streams (None: the hint decides)."""
    from .openvino_pool import OpenVINOPool

    device = parse_device(options.get("device"))
    check_device_available(device)
    precision = parse_precision(options.get("inference_precision"), artifact.metadata.get("precision", "fp32"))
    return OpenVINOPool(_core(), artifact.path, x, device, compile_config(device, "THROUGHPUT", precision, threads),
                        requests=streams, cpu_streams=cpu_streams)


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
    options=dict(COMMON_OPTIONS),
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
    options=dict(COMMON_OPTIONS),
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
))
