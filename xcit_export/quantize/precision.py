"""Precision in the ONNX itself: FP16 (ModelOpt AutoCast) and INT8 Q/DQ (ModelOpt PTQ), on the CPU.

TensorRT 10.x (JetPack 6), TensorRT 11 and TensorRT-RTX build *strongly typed* networks: every
tensor's type is the one the ONNX says, so the precision decisions live here, are reviewable in
the graph, and run on onnxruntime's CPU provider before any engine exists. Both converters keep
the input ``input`` and the output ``logits`` in float32, so a runner feeds the same arrays to
every precision.

What stays in FP32, and why (XCiT-specific; see :data:`FP16_KEEP_OP_TYPES`):

* ``LayerNormalization`` (41 in nano): the mean of squares over the channels is the classic FP16
  overflow, and XCiT's residual stream grows with depth (LayerScale) before each norm.
* The L2 normalisation of q and k in cross-covariance attention (``ReduceL2 -> Clip -> Expand ->
  Div`` in our exported graph, 24 of each in nano). ``ReduceL2`` sums squares over *all tokens*
  (196 at p16/224, 2,304 at p8/384): a token value of 6 already gives 6^2 * 2304 > 65,504, the
  FP16 maximum. The whole chain is kept (found structurally by :func:`l2_normalize_nodes`, not
  by name) so the division is exact too; its outputs are unit vectors, safe in FP16 again.
* Anything whose activations exceed ``data_max`` (512: where the FP16 step reaches 0.5) on the
  calibration images: AutoCast's data-driven rule, so a trained model's outliers (the residual
  stream, GELU inputs) are caught from real data rather than by guessing.

AutoCast's defaults alone are not enough: run on our graph with random inputs it converts 100% of
the nodes to FP16 (no tensor exceeds 512 on noise), L2 norms and LayerNorms included.

INT8 follows TensorRT's explicit-quantization rules (ModelOpt's placement): Q/DQ pairs on the inputs
of Conv/MatMul/Gemm (weights per channel, activations per tensor, symmetric, no zero point) and of
the residual Adds and BatchNorms TensorRT fuses with them, never on biases, so TensorRT fuses
``DQ -> Conv/MatMul/Gemm (+ bias) -> ...`` into INT8 kernels. onnxruntime's default ``quantize_static`` QDQ output instead quantizes the qkv bias
to INT32 (``DequantizeLinear`` with an int32 input), which NVIDIA's ONNX parser rejects; ModelOpt
never emits that (it sets ``QDQDisableWeightAdjustForInt32Bias`` and leaves bias ``Add``s in
float), and :func:`int32_dequantize_nodes` checks the output for it anyway.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import onnx

from ..errors import BackendUnavailableError, DataError, ExportError
from ..io import atomic_path

# Kept in FP32 by op type (see the module docstring for why).
FP16_KEEP_OP_TYPES: tuple[str, ...] = ("LayerNormalization", "ReduceL2")
# Largest |activation| AutoCast lets into FP16 (its default; the FP16 step is 0.5 there).
FP16_DATA_MAX = 512.0
# Calibration images AutoCast's reference run uses (it keeps every activation in memory).
FP16_MAX_REFERENCE_IMAGES = 16

INT8_METHODS = ("entropy", "max")
# Op types left unquantized by default (options add more). ModelOpt quantizes the inputs of Add
# for TensorRT's Conv + residual fusion, a CNN pattern; in XCiT every such Add is the transformer's
# residual stream, whose per-tensor range is set by a few outlier channels. On the trained demo
# fixture, quantizing them took top-1 agreement with FP32 down to 11% (200 eval images);
# excluding them gives 98% with an unchanged labelled top-1. ModelOpt already keeps LayerNorm,
# Softmax, ReduceL2 and the other element-wise ops unquantized.
INT8_DEFAULT_EXCLUDE_OP_TYPES: tuple[str, ...] = ("Add",)
# High-precision type of everything not quantized in the INT8 model. FP16 is what TensorRT runs
# an INT8 network at (INT8 + FP16 kernels); FP32 is the fallback for an accuracy problem.
INT8_HIGH_PRECISION = ("fp16", "fp32")


def _require_modelopt() -> None:
    import importlib.util

    if importlib.util.find_spec("modelopt") is None or importlib.util.find_spec("onnx_graphsurgeon") is None:
        raise BackendUnavailableError(
            "FP16/INT8 ONNX preparation needs NVIDIA ModelOpt (nvidia-modelopt) and onnx-graphsurgeon, "
            "which are not installed; install them with: pip install -e '.[tensorrt]'")


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """onnxruntime's calibrator prints progress and tqdm bars; keep the CLI's output clean.

    (tqdm reads TQDM_DISABLE when it is imported, so stderr is redirected as well.)"""
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


@contextlib.contextmanager
def _quiet_modelopt(level: int = logging.ERROR) -> Iterator[None]:
    """ModelOpt logs every step at INFO and benign warnings (shared constants duplicated, tiny
    initializers clamped to the FP16 minimum); keep only errors for a tidy CLI."""
    loggers = [logging.getLogger(n) for n in ("modelopt.onnx", "modelopt.onnx.autocast")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, old):
            lg.setLevel(lvl)


# --------------------------------------------------------------------------------------------
# Graph inspection
# --------------------------------------------------------------------------------------------

def l2_normalize_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of every node of the q/k L2-normalisation chains: ``ReduceL2`` and what follows it
    (``Clip``/``Max`` clamp, ``Expand``/``Unsqueeze`` broadcast) up to and including the ``Div``.

    Found by walking the graph from each ``ReduceL2`` rather than by node name, so it does not
    depend on the exporter's naming.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    chain_ops = {"Clip", "Max", "Expand", "Unsqueeze", "Reshape", "Cast"}
    found: list[str] = []
    for node in model.graph.node:
        if node.op_type != "ReduceL2":
            continue
        found.append(node.name)
        frontier = [node]
        for _ in range(6):  # ReduceL2 -> Clip -> Expand -> Div is 3 hops; allow a little slack
            nxt = []
            for n in frontier:
                for c in consumers.get(n.output[0], []):
                    if c.op_type == "Div" or c.op_type in chain_ops:
                        if c.name not in found:
                            found.append(c.name)
                        if c.op_type != "Div":
                            nxt.append(c)
            frontier = nxt
            if not frontier:
                break
    return found


def int32_dequantize_nodes(model: onnx.ModelProto) -> list[str]:
    """``DequantizeLinear`` nodes whose quantized input is INT32 (NVIDIA's parser rejects them)."""
    inits = {i.name: i.data_type for i in model.graph.initializer}
    for vi in list(model.graph.value_info) + list(model.graph.input):
        inits.setdefault(vi.name, vi.type.tensor_type.elem_type)
    return [n.name for n in model.graph.node
            if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) == onnx.TensorProto.INT32]


def precision_summary(model: onnx.ModelProto) -> dict:
    """What a converted graph holds: node counts, Q/DQ pairs, casts, float16 initializers."""
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    f16 = sum(1 for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16)
    return {"nodes": len(model.graph.node), "quantize_linear": ops.get("QuantizeLinear", 0),
            "dequantize_linear": ops.get("DequantizeLinear", 0), "casts": ops.get("Cast", 0),
            "fp16_initializers": f16, "initializers": len(model.graph.initializer)}


def _fix_value_info(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the intermediate shape annotations and infer them again.

    AutoCast names every dimension it cannot infer ``unk``; onnxruntime takes equal dim names
    for equal sizes and then fails to reuse a buffer ((B,1,C) vs (B,197,C) at the class-attention
    LayerNorms). Fresh ONNX shape inference gives correct, distinct shapes.
    """
    del model.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        return model


def _save(model: onnx.ModelProto, dst: Path) -> Path:
    try:
        onnx.checker.check_model(model, full_check=False)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the converted ONNX for '{dst.name}' fails onnx.checker: {str(exc)[:400]}") from None
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return dst


def _input_meta(model: onnx.ModelProto) -> tuple[str, list[int | str]]:
    inp = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in inp.type.tensor_type.shape.dim]
    return inp.name, dims


def _input_dtype(model: onnx.ModelProto) -> np.dtype:
    """NumPy dtype of the graph input: float32, or uint8 for ``--input-format nhwc-uint8``."""
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(model.graph.input[0].type.tensor_type.elem_type))


def _check_calibration(calibration: np.ndarray, dims: Sequence, what: str,
                       dtype: np.dtype = np.dtype(np.float32)) -> np.ndarray:
    calibration = np.asarray(calibration)
    if calibration.ndim != len(dims) or calibration.dtype != dtype or len(calibration) == 0:
        raise DataError(f"{what} must be a non-empty {dtype} array shaped like the model input "
                        f"(N, {', '.join(str(d) for d in dims[1:])}); got {calibration.dtype} {calibration.shape}")
    expected = [d for d in dims[1:]]
    if all(isinstance(d, int) and d > 0 for d in expected) and list(calibration.shape[1:]) != expected:
        raise DataError(f"{what} has images of shape {tuple(calibration.shape[1:])} but the model takes "
                        f"{tuple(expected)}; preprocess the calibration images at the model's input size")
    return np.ascontiguousarray(calibration)


# --------------------------------------------------------------------------------------------
# FP16
# --------------------------------------------------------------------------------------------

def _autocast(onnx_in: Path, calibration: np.ndarray | None, keep_op_types: Sequence[str],
              exclude_nodes: list[str], data_max: float, max_reference_images: int,
              reference_labels=None, reference_seed: int = 0) -> tuple[onnx.ModelProto, int, dict | None]:
    """ModelOpt AutoCast to FP16 on onnxruntime CPU, I/O kept float32; returns (model, reference images,
    how they were drawn from ``calibration``: :func:`xcit_export.data.sets.representative_subset`)."""
    from ..data.sets import representative_subset

    from modelopt.onnx.autocast import convert_to_mixed_precision

    model = onnx.load(str(onnx_in), load_external_data=False)
    input_name, dims = _input_meta(model)
    with tempfile.TemporaryDirectory(prefix="xcit-fp16-") as tmp, _quiet_modelopt():
        calib_path, used, selection = None, 0, None
        if calibration is not None:
            calibration = _check_calibration(calibration, dims, "the FP16 reference images", _input_dtype(model))
            labels = reference_labels if reference_labels is None or len(reference_labels) == len(calibration) else None
            picked, selection = representative_subset(len(calibration), max_reference_images, labels, reference_seed)
            sample = calibration[picked]
            if isinstance(dims[0], int) and dims[0] > 0:  # static batch: whole batches only
                sample = np.resize(sample, (-(-len(sample) // dims[0]) * dims[0], *sample.shape[1:]))
            calib_path = str(Path(tmp) / "reference.npz")
            np.savez(calib_path, **{input_name: sample})
            used = len(sample)
        try:
            converted = convert_to_mixed_precision(
                str(onnx_in), low_precision_type="fp16", nodes_to_exclude=exclude_nodes,
                op_types_to_exclude=list(keep_op_types), data_max=data_max, keep_io_types=True,
                calibration_data=calib_path, providers=["cpu"])
        except Exception as exc:
            raise ExportError(f"ModelOpt AutoCast could not convert '{onnx_in}' to FP16: {type(exc).__name__}: "
                              f"{_first_line(exc)}") from exc
    return _fix_value_info(converted), used, selection


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:400] if text else "(no message)"


def to_fp16(onnx_in: Path, onnx_out: Path, calibration: np.ndarray | None = None, *,
            keep_op_types: Sequence[str] = FP16_KEEP_OP_TYPES, keep_nodes: Sequence[str] = (),
            keep_l2_normalize: bool = True, data_max: float = FP16_DATA_MAX,
            max_reference_images: int = FP16_MAX_REFERENCE_IMAGES, reference_labels=None,
            reference_seed: int = 0) -> dict:
    """Mixed FP16/FP32 ONNX with ModelOpt AutoCast (reference run on onnxruntime CPU).

    ``calibration``: preprocessed images whose activation ranges decide what else stays in FP32
    (``data_max``); None uses AutoCast's random inputs, which catch nothing (see module docstring).
    ``keep_nodes``: extra node names (regular expressions) to keep in FP32. Input and output stay
    float32. Returns a summary for the artifact's metadata.
    """
    _require_modelopt()
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    l2 = l2_normalize_nodes(onnx.load(str(onnx_in), load_external_data=False)) if keep_l2_normalize else []
    exclude = [f"^{re.escape(n)}$" for n in l2] + list(keep_nodes)
    t0 = time.perf_counter()
    converted, used, selection = _autocast(onnx_in, calibration, keep_op_types, exclude, data_max,
                                           max_reference_images, reference_labels, reference_seed)
    _save(converted, onnx_out)
    return {"precision": "fp16", "tool": "modelopt.onnx.autocast", "keep_op_types": list(keep_op_types),
            "l2_normalize_nodes_kept": len(l2), "keep_nodes": list(keep_nodes),
            "fp32_compute_nodes": _fp32_compute_nodes(converted), "data_max": data_max,
            "reference_images": used or "random (no calibration set given)", "reference_selection": selection,
            "seconds": round(time.perf_counter() - t0, 2), **precision_summary(converted)}


def _fp32_compute_nodes(model: onnx.ModelProto) -> int:
    """How many compute nodes (not casts/shape ops) produce float32 tensors in a converted graph."""
    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.value_info}
    types.update({o.name: o.type.tensor_type.elem_type for o in model.graph.output})
    skip = {"Cast", "Shape", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Concat", "Gather",
            "Expand", "Constant", "Identity", "QuantizeLinear", "DequantizeLinear"}
    return sum(1 for n in model.graph.node
               if n.op_type not in skip and n.output and types.get(n.output[0]) == onnx.TensorProto.FLOAT)


# --------------------------------------------------------------------------------------------
# INT8
# --------------------------------------------------------------------------------------------

def to_int8(onnx_in: Path, onnx_out: Path, calibration: np.ndarray, *, method: str = "entropy",
            exclude_op_types: Sequence[str] = INT8_DEFAULT_EXCLUDE_OP_TYPES, exclude_nodes: Sequence[str] = (),
            high_precision: str = "fp16", keep_op_types: Sequence[str] = FP16_KEEP_OP_TYPES,
            calibration_batch: int = 8, data_max: float = FP16_DATA_MAX, isolate: bool = True,
            keep_nodes: Sequence[str] = (), reference_labels=None, reference_seed: int = 0) -> dict:
    """INT8 Q/DQ ONNX with ModelOpt post-training quantization, calibrated on onnxruntime CPU.

    ``method``: ``entropy`` (KL divergence, TensorRT's classic choice, robust to outliers) or
    ``max`` (absolute max: better with a tiny calibration set). ``exclude_op_types`` /
    ``exclude_nodes`` (regular expressions) stay unquantized.

    ``high_precision`` is the type of the unquantized rest. ``fp16`` (default, what TensorRT runs
    an INT8 network at) applies exactly the FP16 policy of :func:`to_fp16` to the Q/DQ graph
    (ModelOpt's own FP16 pass blocks by op type only, which cannot keep the L2-normalisation
    chain's Clip/Div in FP32 without also blocking every GELU Div); ``fp32`` leaves it in FP32.
    ``keep_nodes`` (regular expressions) keep those unquantized nodes in FP32 under ``fp16`` too.

    ``isolate`` (default): run ModelOpt in a child process. ModelOpt's INT8 path monkeypatches
    onnxruntime's calibrators and quantizer classes for the rest of the process
    (``modelopt/onnx/quantization/ort_patching.py``), which would silently change any later
    ``onnxruntime.quantization.quantize_static`` in this process (another target's INT8 build).
    """
    _require_modelopt()
    if method not in INT8_METHODS:
        raise ExportError(f"INT8 calibration method '{method}' is not one of {', '.join(INT8_METHODS)}; "
                          f"set -O calibration_method=entropy (default) or max")
    if high_precision not in INT8_HIGH_PRECISION:
        raise ExportError(f"INT8 high_precision '{high_precision}' is not one of {', '.join(INT8_HIGH_PRECISION)}")
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    model_in = onnx.load(str(onnx_in), load_external_data=False)
    _, dims = _input_meta(model_in)
    calibration = _check_calibration(calibration, dims, "the INT8 calibration set", _input_dtype(model_in))
    kwargs = {"method": method, "exclude_op_types": list(exclude_op_types), "exclude_nodes": list(exclude_nodes),
              "high_precision": high_precision, "keep_op_types": list(keep_op_types),
              "calibration_batch": int(calibration_batch), "data_max": float(data_max),
              "keep_nodes": list(keep_nodes),
              "reference_labels": None if reference_labels is None else [int(v) for v in reference_labels],
              "reference_seed": int(reference_seed)}
    if not isolate:
        return _to_int8(onnx_in, onnx_out, calibration, **kwargs)
    return _run_isolated(onnx_in, onnx_out, calibration, kwargs)


def _run_isolated(onnx_in: Path, onnx_out: Path, calibration: np.ndarray, kwargs: dict) -> dict:
    """Run :func:`_to_int8` in ``python -m xcit_export.quantize.precision`` and bring back its result or error."""
    from .. import errors as errors_mod

    with tempfile.TemporaryDirectory(prefix="xcit-int8-job-") as tmp:
        job = Path(tmp) / "job.json"
        np.save(Path(tmp) / "calibration.npy", calibration)
        job.write_text(json.dumps({"onnx_in": str(onnx_in), "onnx_out": str(onnx_out),
                                   "calibration": str(Path(tmp) / "calibration.npy"), "kwargs": kwargs}))
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # so the child imports this very package
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.run([sys.executable, "-m", "xcit_export.quantize.precision", str(job)], env=env,
                              capture_output=True, text=True)
        result_path = job.with_suffix(".result.json")
        result = json.loads(result_path.read_text()) if result_path.exists() else None
    if result and "error" in result:
        cls = getattr(errors_mod, result["error"]["type"], ExportError)
        raise cls(result["error"]["message"])
    if proc.returncode != 0 or not result:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])[:600]
        raise ExportError(f"the INT8 quantization worker for '{onnx_in}' exited with status {proc.returncode}: "
                          f"{tail or 'no output'}")
    return result["summary"]


def _worker(job_path: str) -> int:
    """Child-process entry of :func:`to_int8` (``python -m xcit_export.quantize.precision JOB.json``)."""
    from ..errors import XcitExportError

    job = json.loads(Path(job_path).read_text())
    out = Path(job_path).with_suffix(".result.json")
    try:
        summary = _to_int8(Path(job["onnx_in"]), Path(job["onnx_out"]), np.load(job["calibration"]), **job["kwargs"])
        out.write_text(json.dumps({"summary": summary}, default=str))
        return 0
    except XcitExportError as exc:
        out.write_text(json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}}))
        return 1


def _to_int8(onnx_in: Path, onnx_out: Path, calibration: np.ndarray, *, method: str,
             exclude_op_types: Sequence[str], exclude_nodes: Sequence[str], high_precision: str,
             keep_op_types: Sequence[str], calibration_batch: int, data_max: float,
             keep_nodes: Sequence[str] = (), reference_labels=None, reference_seed: int = 0) -> dict:
    from modelopt.onnx.quantization import quantize

    model = onnx.load(str(onnx_in), load_external_data=False)
    input_name, dims = _input_meta(model)
    calibration = np.ascontiguousarray(calibration, dtype=_input_dtype(model))
    static_batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
    step = static_batch or max(1, min(calibration_batch, len(calibration)))
    calib = calibration
    if len(calib) % step:  # ModelOpt's data provider splits into whole steps: repeat to fill the last
        calib = np.resize(calib, (-(-len(calib) // step) * step, *calib.shape[1:]))
    shape_spec = f"{input_name}:{'x'.join(str(d) for d in (step, *calib.shape[1:]))}"
    l2 = l2_normalize_nodes(model)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xcit-int8-") as tmp:
        # ModelOpt writes intermediate files beside its input: work on a private copy.
        src = Path(tmp) / "model.onnx"
        shutil.copyfile(onnx_in, src)
        dst = Path(tmp) / "model.int8.onnx"
        try:
            with _quiet_modelopt(), _quiet_stdout():
                quantize(str(src), quantize_mode="int8", calibration_data=calib,
                         calibration_method=method, calibration_shapes=shape_spec, calibration_eps=["cpu"],
                         op_types_to_exclude=list(exclude_op_types) or None,
                         nodes_to_exclude=list(exclude_nodes) or None,
                         high_precision_dtype="fp32", output_path=str(dst), log_level="ERROR")
        except Exception as exc:
            raise ExportError(f"ModelOpt INT8 quantization of '{onnx_in}' failed: {type(exc).__name__}: "
                              f"{_first_line(exc)}") from exc
        if not dst.exists():
            raise ExportError(f"ModelOpt INT8 quantization of '{onnx_in}' wrote no model")
        if high_precision == "fp16":
            exclude = [f"^{re.escape(n)}$" for n in l2] + list(keep_nodes)
            quantized, _, fp16_selection = _autocast(dst, calibration, keep_op_types, exclude, data_max,
                                                     FP16_MAX_REFERENCE_IMAGES, reference_labels, reference_seed)
        else:
            quantized, fp16_selection = _fix_value_info(onnx.load(str(dst))), None
    bad = int32_dequantize_nodes(quantized)
    if bad:
        raise ExportError(f"the INT8 ONNX has DequantizeLinear nodes with INT32 input ({', '.join(bad[:3])}), "
                          f"which NVIDIA's ONNX parser rejects; exclude their consumers with -O exclude_nodes=...")
    summary = precision_summary(quantized)
    if summary["quantize_linear"] == 0:
        raise ExportError(f"ModelOpt quantized nothing in '{onnx_in}' (no QuantizeLinear node); check "
                          f"exclude_op_types/exclude_nodes")
    _save(quantized, onnx_out)
    return {"precision": "int8", "tool": "modelopt.onnx.quantization", "calibration_method": method,
            "calibration_images": int(len(calibration)), "calibration_step": step,
            "exclude_op_types": list(exclude_op_types), "exclude_nodes": list(exclude_nodes),
            "keep_fp32_nodes": list(keep_nodes), "high_precision": high_precision, "fp16_reference_selection": fp16_selection,
            "fp32_compute_nodes": _fp32_compute_nodes(quantized) if high_precision == "fp16" else "all unquantized",
            "seconds": round(time.perf_counter() - t0, 2), **summary}


def int8_search(onnx_int8: Path, ctx) -> dict:
    """Per-group sensitivity and the accuracy-budget search (``xcit_export.quantize.sensitivity``) for a Q/DQ
    ONNX built by :func:`to_int8`, driven by the target options ``sensitivity``, ``max_drop`` and
    ``search_images``; groups kept out of INT8 run in the graph's high precision (FP16 by default).
    Accuracy is measured on onnxruntime CPU (the host stand-in for the engine), so steps are not timed.
    Returns the metadata to add to the artifact (empty when neither option is set)."""
    from . import sensitivity

    options = ctx.options  # parsed by the target (targets.base.Target.parse_options)
    budget, want = options["max_drop"], options["sensitivity"]
    if not want and budget is None:
        return {}
    return sensitivity.analyse(Path(onnx_int8), ctx.onnx_path, ctx.evaluation, batch=ctx.batch, threads=ctx.threads,
                               budget=budget, want_sensitivity=want, time_steps=False,
                               search_images=options["search_images"],
                               seed=getattr(ctx, "seed", 0))


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------

def run_onnxruntime(onnx_path: Path, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """First output of ``onnx_path`` on onnxruntime's CPU provider (checks it can run at all)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    try:
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
        return sess.run(None, {inp.name: np.ascontiguousarray(x, dtype=dtype)})[0]
    except Exception as exc:
        raise ExportError(f"onnxruntime (CPU) cannot run '{onnx_path}': {str(exc).splitlines()[0][:400]}") from None


__all__ = ["FP16_KEEP_OP_TYPES", "INT8_METHODS", "int32_dequantize_nodes", "l2_normalize_nodes",
           "precision_summary", "run_onnxruntime", "to_fp16", "to_int8"]



if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
