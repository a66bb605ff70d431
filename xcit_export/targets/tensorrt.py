"""TensorRT targets: precision-ready ONNX (host) -> engine (where a TensorRT library is importable).

Targets ``tensorrt-{fp32,fp16,int8}`` use NVIDIA's ``tensorrt`` (Jetson/JetPack, data-centre and
desktop GPUs); ``tensorrt-rtx-{fp32,fp16,int8}`` use ``tensorrt_rtx`` (TensorRT for RTX PCs).

Build, in order:

1. **Precision-ready ONNX** (:mod:`xcit_export.precision`): FP32 is the simplified ONNX; FP16 is
   ModelOpt AutoCast with XCiT's overflow-prone ops kept in FP32; INT8 is ModelOpt PTQ (explicit
   Q/DQ) calibrated on the calibration set. Every tensor's type is in the graph, so the engine is
   built as a *strongly typed* network (TensorRT 10.x/11, TensorRT-RTX) and the same file serves
   JetPack 6, TensorRT 11 and RTX.
2. **Host check**: the precision-ready ONNX runs on onnxruntime's CPU provider against the FP32
   ONNX on the golden inputs (``golden.npz``, kept for the device bundle); the agreement is stored
   in the artifact's metadata, so the host knows the ONNX-level accuracy before any engine exists.
3. **Engine**, when the target's library is importable: parse (a rejected node is reported with
   the parser's node name, operator and message), one optimisation profile for the batch range,
   a workspace limit, a persisted timing cache (``tensorrt``; TensorRT-RTX made it a no-op and
   uses a runtime JIT cache instead), and ``engine.json`` beside the engine: library and version,
   GPU and compute capability (or the ahead-of-time targets), typing, profile, hashes.
   ``tensorrt`` needs a CUDA GPU to build; ``tensorrt_rtx`` builds *ahead of time* on a CPU-only
   machine for the compute capabilities named by ``-O compute_capability=8.6`` (default: TensorRT-
   RTX's portable set). TensorRT 8.6 (no strongly typed networks) falls back to builder flags
   (FP16, INT8 + FP16) with the ONNX's FP32 layers pinned to FP32; ``engine.json`` says so.

Load: if the engine exists and its library, a CUDA GPU and ``cuda-python`` are present, the
engine runner (after refusing an engine built by another library version or for another GPU);
otherwise an onnxruntime CPU runner over the precision-ready ONNX, marked ``measures_latency =
False`` with a ``device`` that says it is a stand-in, so the host reports ONNX-level accuracy and
no misleading latency.

The engine runner (:class:`EngineRunner`) is written against the API shared by ``tensorrt`` 10.x
and ``tensorrt_rtx`` and checked against their documentation, but it has NOT been run on a GPU
yet: nothing here has one. Treat its figures as unverified until it has been exercised on a
Jetson or an RTX machine (the README's targets table says the same).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, BackendUnavailableError, ExportError, XcitExportError
from ..io import atomic_path, sha256_file, write_json_atomic
from ..sensitivity import SEARCH_OPTIONS
from ..validate import compare_outputs, run_in_batches
from . import register
from .base import Artifact, BuildContext, Target
from .onnxruntime import OnnxRuntimeRunner

LIBRARIES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
ENGINE_FILE = "model.engine"
ENGINE_META = "engine.json"
GOLDEN_FILE = "golden.npz"
DEFAULT_WORKSPACE_MB = 1024
DEFAULT_MAX_BATCH = 16  # the pipeline validates in batches of 16
DEFAULT_GOLDEN = 16
ENGINE_MODES = ("auto", "required", "skip")
# What TensorRT-RTX targets when no compute capability is named (its documented default).
RTX_PORTABLE = "portable ahead-of-time build (TensorRT-RTX default: compute capability 8.0, 8.6, 8.9, 12.0 and later)"

_COMMON_OPTIONS = {
    "engine": "auto (default): build the engine when the library is importable and can build here; "
              "required: fail if no engine can be built; skip: precision-ready ONNX only",
    "min_batch": "optimisation profile: smallest batch (default 1; dynamic-batch exports only)",
    "opt_batch": "optimisation profile: batch the kernels are tuned for (default 1)",
    "max_batch": f"optimisation profile: largest batch (default {DEFAULT_MAX_BATCH})",
    "workspace_mb": f"builder workspace limit in MiB (default {DEFAULT_WORKSPACE_MB})",
    "golden_count": f"golden inputs kept for the device bundle (default {DEFAULT_GOLDEN})",
    "cuda_graph": "runner: replay inference as a CUDA graph (default false)",
}
_TRT_OPTIONS = {
    "timing_cache": "timing cache file (default: $XCIT_EXPORT_CACHE/tensorrt/<version>-<gpu>.timing-cache)",
}
_RTX_OPTIONS = {
    "compute_capability": "ahead-of-time target(s), e.g. 8.6 or 8.6,8.9,12.0 or current "
                          "(default: TensorRT-RTX's portable set)",
}
_FP16_OPTIONS = {
    "keep_fp32_nodes": "extra node names (regular expressions, comma-separated) to keep in FP32",
}
_INT8_OPTIONS = {
    "calibration_method": "entropy (default) or max",
    "exclude_op_types": "op types left unquantized besides the residual Adds (default), comma-separated, "
                        "e.g. BatchNormalization; 'none' quantizes the Adds too",
    "exclude_nodes": "node names left unquantized (regular expressions, comma-separated)",
    "high_precision": "type of the unquantized rest: fp16 (default, as TensorRT runs INT8) or fp32",
    **SEARCH_OPTIONS,  # issue 11: sensitivity, max_drop, search_images (xcit_export/sensitivity.py)
}


# --------------------------------------------------------------------------------------------
# Libraries, GPU
# --------------------------------------------------------------------------------------------

def import_library(module: str):
    """The TensorRT module, or None when it is not installed or its native libraries do not load."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError):
        return None


def library_version(trt) -> str:
    return str(getattr(trt, "__version__", "unknown"))


def _cudart():
    """cuda-python's runtime bindings (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # type: ignore[import-not-found,no-redef]
        return cudart
    except ImportError:
        return None


def gpu_info(device: int = 0) -> dict | None:
    """Name and compute capability of CUDA device ``device``, or None when there is none usable.

    Uses cuda-python (the runner needs it anyway); without it, ``nvidia-smi`` (absent on older
    Jetsons, where the answer is then None).
    """
    cudart = _cudart()
    if cudart is not None:
        try:
            err, count = cudart.cudaGetDeviceCount()
            if err != cudart.cudaError_t.cudaSuccess or count <= device:
                return None
            err, prop = cudart.cudaGetDeviceProperties(device)
            if err != cudart.cudaError_t.cudaSuccess:
                return None
            name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
            return {"name": name, "compute_capability": f"{prop.major}.{prop.minor}"}
        except Exception:
            return None
    from ..fingerprint import _gpus

    rows = _gpus()
    if len(rows) > device:
        parts = [p.strip() for p in rows[device].split(",")]
        if len(parts) >= 2:
            return {"name": parts[0], "compute_capability": parts[1]}
    return None


def _make_logger(trt):
    """A TensorRT logger that keeps warnings and errors for our messages instead of printing them."""

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[tuple[int, str]] = []

        def log(self, severity, msg):  # noqa: D401 - TensorRT callback
            if int(severity) <= 2:  # INTERNAL_ERROR, ERROR, WARNING
                self.messages.append((int(severity), str(msg)))

        def errors(self) -> list[str]:
            return [m for s, m in self.messages if s <= 1]

    return _Logger()


def _clean(text: str) -> str:
    """Parser/builder text without the CUDA-driver noise a CPU-only build appends."""
    lines = [ln.strip() for ln in str(text).splitlines()]
    keep = [ln for ln in lines if ln and "cudaError" not in ln and "catchCudaError" not in ln]
    return " | ".join(keep)[:600]


def cache_dir() -> Path:
    """``$XCIT_EXPORT_CACHE/tensorrt`` (``~/.cache/xcit-export/tensorrt``); not weights.cache_dir,
    which would import torch, absent on a Jetson running device-check."""
    base = Path(os.environ.get("XCIT_EXPORT_CACHE", Path.home() / ".cache" / "xcit-export"))
    return base / "tensorrt"


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

def _as_list(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _as_int(options: dict, key: str, default: int | None) -> int | None:
    value = options.get(key, default)
    if value is None:
        return None
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise XcitExportError(f"option {key}={value!r} is not an integer") from None
    if out < 1:
        raise XcitExportError(f"option {key}={out} must be >= 1")
    return out


def _exclude_op_types(value) -> list[str]:
    """INT8 op types left unquantized: the defaults (residual Adds) plus the option's; 'none' clears."""
    from ..precision import INT8_DEFAULT_EXCLUDE_OP_TYPES

    given = _as_list(value)
    if [v.lower() for v in given] == ["none"]:
        return []
    return list(dict.fromkeys([*INT8_DEFAULT_EXCLUDE_OP_TYPES, *given]))


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def batch_profile(static_batch: int | None, options: dict) -> dict:
    """min/opt/max batch of the optimisation profile (all equal to a static export batch)."""
    if static_batch is not None:
        given = {k: options[k] for k in ("min_batch", "opt_batch", "max_batch") if k in options}
        if any(int(v) != static_batch for v in given.values()):
            raise XcitExportError(f"the ONNX was exported with a static batch {static_batch} (--batch), so "
                                  f"{', '.join(f'{k}={v}' for k, v in given.items())} cannot apply; drop them "
                                  f"or export with a dynamic batch")
        return {"min": static_batch, "opt": static_batch, "max": static_batch}
    lo = _as_int(options, "min_batch", 1)
    opt = _as_int(options, "opt_batch", max(lo, 1))
    hi = _as_int(options, "max_batch", max(DEFAULT_MAX_BATCH, opt))
    if not lo <= opt <= hi:
        raise XcitExportError(f"optimisation profile needs min_batch <= opt_batch <= max_batch; got "
                              f"{lo} <= {opt} <= {hi}")
    return {"min": lo, "opt": opt, "max": hi}


def compute_capabilities(trt, value) -> list:
    """``-O compute_capability=8.6,8.9`` -> TensorRT-RTX ``ComputeCapability`` members ([] = default)."""
    names = _as_list(value)
    if not names or names in (["portable"], ["default"]):
        return []
    enum = getattr(trt, "ComputeCapability", None)
    if enum is None:
        raise XcitExportError("compute_capability is a TensorRT-RTX option; this library cannot target "
                              "compute capabilities ahead of time")
    known = [m for m in enum.__members__ if m.startswith("SM")]
    out = []
    for name in names:
        key = name.lower().replace("sm_", "").replace("sm", "").replace(".", "").strip()
        member = "CURRENT" if key == "current" else f"SM{key}"
        if member not in enum.__members__:
            readable = ", ".join(f"{m[2:-1]}.{m[-1]}" for m in known)
            raise XcitExportError(f"compute_capability '{name}' is not one {trt.__name__} "
                                  f"{library_version(trt)} can target (it knows {readable}, or 'current')")
        out.append(getattr(enum, member))
    return out


def _cc_text(member) -> str:
    name = str(member).split(".")[-1]
    return "current GPU" if name == "CURRENT" else f"sm_{name[2:]}"


# --------------------------------------------------------------------------------------------
# Engine build
# --------------------------------------------------------------------------------------------

def parse_onnx(trt, onnx_path: Path, strongly_typed: bool = True):
    """Parse ``onnx_path`` into a network; a rejection raises :class:`ExportError` naming the node.

    Returns ``(builder, network, parser, logger, strongly_typed)``: the parser must outlive the
    network (it owns the weights the network refers to).
    """
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    if builder is None:
        raise BackendUnavailableError(f"{trt.__name__} could not create a builder: {_clean(' '.join(logger.errors()))}")
    flag_enum = trt.NetworkDefinitionCreationFlag
    if strongly_typed and hasattr(flag_enum, "STRONGLY_TYPED"):
        flags = 1 << int(flag_enum.STRONGLY_TYPED)
    else:  # TensorRT 8.6: explicit batch, weak typing
        strongly_typed = False
        flags = 1 << int(flag_enum.EXPLICIT_BATCH) if hasattr(flag_enum, "EXPLICIT_BATCH") else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    if not ok:
        problems = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            node = err.node_name() if hasattr(err, "node_name") else ""
            op = err.node_operator() if hasattr(err, "node_operator") else ""
            where = f"node {err.node()} '{node}' ({op})" if node or op else f"node {err.node()}"
            problems.append(f"{where}: {_clean(err.desc())}")
        detail = "; ".join(problems) or _clean(" ".join(logger.errors())) or "no detail given"
        raise ExportError(f"the {trt.__name__} {library_version(trt)} ONNX parser rejected '{onnx_path}': {detail}")
    return builder, network, parser, logger, strongly_typed


def _pin_fp32_layers(trt, network) -> int:
    """Weakly typed fallback: keep the layers whose outputs the ONNX types as FP32 in FP32."""
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in (trt.LayerType.CONSTANT, trt.LayerType.SHUFFLE) or layer.num_outputs == 0:
            continue
        if str(getattr(layer.type, "name", layer.type)).upper().endswith("CAST"):
            continue
        if all(layer.get_output(j).dtype == trt.float32 for j in range(layer.num_outputs)):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def build_engine(onnx_path: Path, engine_path: Path, library: str, precision: str, profile: dict,
                 input_shape: tuple[int, ...], workspace_mb: int = DEFAULT_WORKSPACE_MB,
                 compute_capability=None, timing_cache: Path | None = None) -> dict:
    """Build ``engine_path`` from ``onnx_path`` with ``library`` and write ``engine.json`` beside it.

    Returns the engine metadata. ``tensorrt`` needs a CUDA GPU; ``tensorrt_rtx`` builds ahead of
    time without one for ``compute_capability`` (None: its portable default).
    """
    trt = import_library(library)
    if trt is None:
        raise BackendUnavailableError(f"{library} is not installed; install it to build engines "
                                      f"({'pip install tensorrt-rtx-cu13' if library == 'tensorrt_rtx' else 'JetPack ships it; pip install tensorrt on x86-64'})")
    t0 = time.perf_counter()
    rtx = library == "tensorrt_rtx"
    ccs = compute_capabilities(trt, compute_capability) if rtx else []
    if compute_capability not in (None, "") and not rtx:
        raise XcitExportError("compute_capability applies to TensorRT-RTX only: TensorRT builds for the GPU it runs on")
    gpu = gpu_info()
    builder, network, parser, logger, strongly_typed = parse_onnx(trt, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    tf32_flag = getattr(trt.BuilderFlag, "TF32", None)
    if tf32_flag is not None and precision == "fp32":
        # TensorRT allows TF32 matmuls/convolutions by default (10-bit mantissa on Ampere and later):
        # an "fp32" engine should compute in FP32, as the ONNX it is compared with does.
        config.clear_flag(tf32_flag)
    tf32 = bool(config.get_flag(tf32_flag)) if tf32_flag is not None else None
    if not strongly_typed:
        # TensorRT 8.6: no strongly typed networks, so precision comes from builder flags, and the
        # layers the ONNX keeps in FP32 (LayerNorm, L2 norms) are pinned with precision constraints.
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        if precision != "fp32":
            _pin_fp32_layers(trt, network)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    inp = network.get_input(0)
    dims = tuple(inp.shape)
    if dims and dims[0] == -1:
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(inp.name, (profile["min"], *input_shape), (profile["opt"], *input_shape),
                              (profile["max"], *input_shape))
        config.add_optimization_profile(opt_profile)
    if ccs:
        config.num_compute_capabilities = len(ccs)
        for i, cc in enumerate(ccs):
            config.set_compute_capability(cc, i)
    cache_note = None
    cache_obj = None
    if rtx:
        cache_note = "not used: TensorRT-RTX made timing caches a no-op (it caches JIT kernels at runtime)"
    else:
        timing_cache = Path(timing_cache) if timing_cache else (
            cache_dir() / f"{library_version(trt)}-{(gpu or {}).get('name', 'gpu').replace(' ', '_')}.timing-cache")
        data = timing_cache.read_bytes() if timing_cache.exists() else b""
        cache_obj = config.create_timing_cache(data)
        config.set_timing_cache(cache_obj, False)
        cache_note = str(timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{library} {library_version(trt)} could not build an engine from '{onnx_path}': "
                          f"{_clean(' | '.join(logger.errors())) or 'no error message'}")
    with atomic_path(engine_path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(memoryview(serialized))
    if cache_obj is not None and timing_cache is not None:
        try:
            timing_cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(timing_cache) as tmp:
                tmp.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
        except OSError:
            cache_note = f"{timing_cache} (could not be written)"
    if rtx:
        target = ("ahead-of-time for " + ", ".join(_cc_text(c) for c in ccs)) if ccs else RTX_PORTABLE
    else:
        target = f"GPU {gpu['name']} (compute capability {gpu['compute_capability']})" if gpu else "the GPU of the build machine"
    meta = {
        "library": library,
        "version": library_version(trt),
        "precision": precision,
        "strongly_typed": strongly_typed,
        "tf32": tf32,
        "typing": ("strongly typed network: precisions are the ONNX's" if strongly_typed else
                   "weakly typed (TensorRT < 10): builder flags FP16" + (" + INT8" if precision == "int8" else "")
                   + " with the ONNX's FP32 layers pinned to FP32"),
        "built_for": target,
        "compute_capabilities": [_cc_text(c) for c in ccs] or None,
        "built_on": {"gpu": gpu["name"] if gpu else None,
                     "compute_capability": gpu["compute_capability"] if gpu else None},
        "profile": {"input": inp.name, "min": [profile["min"], *input_shape], "opt": [profile["opt"], *input_shape],
                    "max": [profile["max"], *input_shape]},
        "workspace_mb": int(workspace_mb),
        "timing_cache": cache_note,
        "onnx": Path(onnx_path).name,
        "onnx_sha256": sha256_file(onnx_path),
        "engine_sha256": sha256_file(engine_path),
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    write_json_atomic(Path(engine_path).parent / ENGINE_META, meta)
    del parser
    return meta


def check_engine_metadata(meta: dict, trt, gpu: dict | None, engine_path: Path) -> None:
    """Refuse an engine built by another library version, or for a GPU other than ``gpu``."""
    version = library_version(trt)
    if meta.get("version") != version:
        raise ArtifactError(
            f"engine '{engine_path}' was built with {meta.get('library')} {meta.get('version')} but this machine "
            f"has {trt.__name__} {version}; engines only load in the version that built them: rebuild it here "
            f"(xcit-export --rebuild, or xcit-export device-check on the bundle)")
    if gpu is None:
        return
    cc = gpu.get("compute_capability")
    if meta.get("library") == "tensorrt_rtx":
        wanted = meta.get("compute_capabilities")
        if wanted and f"sm_{str(cc).replace('.', '')}" not in wanted and "current GPU" not in wanted:
            raise ArtifactError(
                f"engine '{engine_path}' was built ahead-of-time for {', '.join(wanted)} but this GPU "
                f"({gpu.get('name')}) has compute capability {cc}; rebuild with -O compute_capability={cc}")
        return
    built = meta.get("built_on") or {}
    if built.get("gpu") and (built.get("gpu") != gpu.get("name") or built.get("compute_capability") != cc):
        raise ArtifactError(
            f"engine '{engine_path}' was built for {built.get('gpu')} (compute capability "
            f"{built.get('compute_capability')}) but this GPU is {gpu.get('name')} (compute capability {cc}); "
            f"TensorRT engines are specific to the GPU: rebuild it on this device")


# --------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------

class CpuStandInRunner(OnnxRuntimeRunner):
    """The precision-ready ONNX on onnxruntime CPU, standing in for an engine that cannot run here.

    Its accuracy is the ONNX-level accuracy; its timings say nothing about the engine, so
    ``measures_latency`` is False.
    """

    measures_latency = False

    def __init__(self, path: Path, threads: int | None, reason: str):
        super().__init__(path, threads=threads)
        self.device = f"CPU (onnxruntime on the precision-ready ONNX, standing in for the engine: {reason})"


def _check(cudart, result, what: str):
    """cuda-python returns ``(err, *values)``; raise on an error, return the value(s)."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise ArtifactError(f"CUDA call {what} failed: {err}")
    return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)


class EngineRunner:
    """A serialized engine on a CUDA GPU, through the Python API ``tensorrt`` 10.x and
    ``tensorrt_rtx`` share. UNVERIFIED ON HARDWARE: written and reviewed against the
    documentation only; no machine available to this project has run it yet.

    * I/O by tensor name (``engine.get_tensor_name``/``get_tensor_mode``), never by binding index;
    * dynamic batch: ``context.set_input_shape`` per call, output shapes read back from the context,
      buffers allocated once for the profile's largest batch; larger inputs are run in chunks;
    * CUDA through cuda-python's runtime bindings (``cuda.bindings.runtime``): NVIDIA's TensorRT
      samples use it, it installs from PyPI on x86-64 and aarch64 (Jetson, matching the JetPack
      CUDA major), links the CUDA runtime statically and needs only the driver; PyCUDA needs a
      compiler and torch.cuda a whole PyTorch build for Jetson;
    * one non-default stream, pinned host buffers, ``execute_async_v3``;
    * ``cuda_graph=True``: TensorRT-RTX's built-in capture (``IRuntimeConfig.cuda_graph_strategy``);
      with ``tensorrt``, a stream capture per input shape after one warm-up enqueue (TensorRT's
      documented recipe: the first enqueue after a shape change may do deferred work);
    * :meth:`gpu_latency_ms` times execution alone with CUDA events (what trtexec calls GPU compute
      time); ``infer`` timed by the pipeline is end to end, copies included.
    """

    measures_latency = True

    def __init__(self, engine_path: Path, library: str, threads: int | None = None, cuda_graph: bool = False):
        trt = import_library(library)
        cudart = _cudart()
        if trt is None or cudart is None:
            raise BackendUnavailableError(f"the engine runner needs {library} and cuda-python (pip install cuda-python)")
        self.trt, self.cudart, self.threads = trt, cudart, threads
        self.logger = _make_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise ArtifactError(f"{library} {library_version(trt)} cannot load engine '{engine_path}': "
                                f"{_clean(' | '.join(self.logger.errors())) or 'no error message'}; rebuild it here")
        self.cuda_graph = bool(cuda_graph)
        self._rtx_graph = False
        if self.cuda_graph and hasattr(self.engine, "create_runtime_config") and hasattr(trt, "CudaGraphStrategy"):
            rc = self.engine.create_runtime_config()
            rc.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            self.context = self.engine.create_execution_context(rc)
            self._rtx_graph = True
        else:
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1:
            raise ArtifactError(f"engine '{engine_path}' has {len(self.inputs)} inputs; XCiT engines have one")
        self.input = self.inputs[0]
        shape = tuple(self.engine.get_tensor_shape(self.input))
        if shape[0] == -1:
            self.max_shape = tuple(self.engine.get_tensor_profile_shape(self.input, 0)[2])
        else:
            self.max_shape = shape
        self.max_batch = int(self.max_shape[0])
        self.stream = _check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int, np.ndarray]] = {}  # name -> (device ptr, host ptr, host view)
        self.context.set_input_shape(self.input, self.max_shape)
        for name in names:
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            count = int(np.prod(self.context.get_tensor_shape(name)))
            nbytes = max(1, count * dtype.itemsize)
            dev = _check(cudart, cudart.cudaMalloc(nbytes), "cudaMalloc")
            host = _check(cudart, cudart.cudaMallocHost(nbytes), "cudaMallocHost")
            view = np.ctypeslib.as_array(ctypes.cast(host, ctypes.POINTER(np.ctypeslib.as_ctypes_type(dtype))), (count,))
            self._buffers[name] = (int(dev), int(host), view)
            self.context.set_tensor_address(name, int(dev))
        self._graphs: dict[tuple, Any] = {}
        try:
            gpu = gpu_info() or {}
            self.device = f"GPU {gpu.get('name', '?')} ({library} {library_version(trt)}, engine)"
        except Exception:
            self.device = f"GPU ({library} {library_version(trt)}, engine)"

    def _enqueue(self, shape: tuple) -> None:
        cudart = self.cudart
        if not self.cuda_graph or self._rtx_graph:
            if not self.context.execute_async_v3(int(self.stream)):
                raise ArtifactError(f"execute_async_v3 failed: {_clean(' | '.join(self.logger.errors()))}")
            return
        graph_exec = self._graphs.get(shape)
        if graph_exec is None:
            # Warm-up enqueue first (deferred shape-dependent work must not be captured), then capture.
            if not self.context.execute_async_v3(int(self.stream)):
                raise ArtifactError(f"execute_async_v3 failed: {_clean(' | '.join(self.logger.errors()))}")
            _check(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
            _check(cudart, cudart.cudaStreamBeginCapture(
                self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture")
            self.context.execute_async_v3(int(self.stream))
            graph = _check(cudart, cudart.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")
            graph_exec = _check(cudart, cudart.cudaGraphInstantiateWithFlags(graph, 0), "cudaGraphInstantiate")
            _check(cudart, cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")
            self._graphs[shape] = graph_exec
        _check(cudart, cudart.cudaGraphLaunch(graph_exec, self.stream), "cudaGraphLaunch")

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        cudart = self.cudart
        shape = tuple(x.shape)
        if not self.context.set_input_shape(self.input, shape):
            raise ArtifactError(f"input shape {shape} is outside the engine's profile (max {self.max_shape})")
        dev, host, view = self._buffers[self.input]
        flat = np.ascontiguousarray(x, dtype=view.dtype).reshape(-1)
        view[:flat.size] = flat
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart, cudart.cudaMemcpyAsync(dev, host, flat.nbytes, h2d, self.stream), "cudaMemcpyAsync")
        self._enqueue(shape)
        shapes = {}
        for name in self.outputs:
            out_shape = tuple(self.context.get_tensor_shape(name))
            shapes[name] = out_shape
            odev, ohost, oview = self._buffers[name]
            nbytes = int(np.prod(out_shape)) * oview.dtype.itemsize
            _check(cudart, cudart.cudaMemcpyAsync(ohost, odev, nbytes, d2h, self.stream), "cudaMemcpyAsync")
        _check(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return [self._buffers[n][2][:int(np.prod(shapes[n]))].reshape(shapes[n]).astype(np.float32) for n in self.outputs]

    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        if len(x) <= self.max_batch:
            return self._run(x)
        parts = [self._run(x[i:i + self.max_batch]) for i in range(0, len(x), self.max_batch)]
        return [np.concatenate(p) for p in zip(*parts)]

    def gpu_latency_ms(self, x: np.ndarray, warmup: int = 10, iterations: int = 100) -> list[float]:
        """Per-inference GPU execution times (CUDA events around the enqueue only), in ms."""
        cudart = self.cudart
        self._run(x)  # sets the shape and uploads the input
        start = _check(cudart, cudart.cudaEventCreate(), "cudaEventCreate")
        end = _check(cudart, cudart.cudaEventCreate(), "cudaEventCreate")
        try:
            for _ in range(warmup):
                self._enqueue(tuple(x.shape))
            times = []
            for _ in range(iterations):
                _check(cudart, cudart.cudaEventRecord(start, self.stream), "cudaEventRecord")
                self._enqueue(tuple(x.shape))
                _check(cudart, cudart.cudaEventRecord(end, self.stream), "cudaEventRecord")
                _check(cudart, cudart.cudaEventSynchronize(end), "cudaEventSynchronize")
                times.append(float(_check(cudart, cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime")))
            return times
        finally:
            cudart.cudaEventDestroy(start)
            cudart.cudaEventDestroy(end)

    def close(self) -> None:
        cudart = getattr(self, "cudart", None)
        if cudart is None:
            return
        for graph_exec in getattr(self, "_graphs", {}).values():
            cudart.cudaGraphExecDestroy(graph_exec)
        for dev, host, _ in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(dev)
            cudart.cudaFreeHost(host)
        self._buffers, self._graphs = {}, {}
        if getattr(self, "stream", None) is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = self.engine = None


def open_engine_or_standin(folder: Path, onnx_path: Path, engine_name: str | None, library: str,
                           threads: int | None = None, cuda_graph: bool = False):
    """The engine runner when it can run here, else the CPU stand-in (with the reason in ``device``).

    An engine built by another library version, or for another GPU, is refused (ArtifactError),
    not silently replaced by the stand-in.
    """
    engine = folder / engine_name if engine_name else None
    if engine is None or not engine.exists():
        return CpuStandInRunner(onnx_path, threads, "no engine was built")
    trt = import_library(library)
    if trt is None:
        return CpuStandInRunner(onnx_path, threads, f"{library} is not installed here")
    meta_path = folder / ENGINE_META
    if not meta_path.exists():
        raise ArtifactError(f"engine '{engine}' has no {ENGINE_META} beside it; rebuild the target")
    meta = json.loads(meta_path.read_text())
    if meta.get("engine_sha256") and meta["engine_sha256"] != sha256_file(engine):
        raise ArtifactError(f"engine '{engine}' does not match the hash in {ENGINE_META} (changed or truncated); "
                            f"rebuild the target")
    gpu = gpu_info()
    check_engine_metadata(meta, trt, gpu, engine)
    if gpu is None:
        return CpuStandInRunner(onnx_path, threads, "no CUDA GPU here")
    if _cudart() is None:
        return CpuStandInRunner(onnx_path, threads, "cuda-python is not installed (pip install cuda-python)")
    return EngineRunner(engine, library, threads=threads, cuda_graph=cuda_graph)


# --------------------------------------------------------------------------------------------
# Golden data, ONNX-level check
# --------------------------------------------------------------------------------------------

def _ort_outputs(path: Path, x: np.ndarray, batch: int | None, threads: int | None) -> np.ndarray:

    runner = OnnxRuntimeRunner(path, threads=threads)
    try:
        return run_in_batches(runner.infer, x, batch or 16)[0]
    finally:
        runner.close()


def _graph_input_dtype(path: Path) -> np.dtype:
    import onnx

    elem = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.elem_type
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))


def write_golden(ctx: BuildContext, precision_onnx: Path, count: int) -> dict:
    """Golden inputs (evaluation set, else seeded), the FP32 ONNX's outputs as the reference and the
    precision ONNX's outputs, in ``golden.npz``; returns the ONNX-level agreement."""
    if ctx.evaluation is not None and len(ctx.evaluation[0]):
        x_all, labels_all = ctx.evaluation
        x = np.asarray(x_all[:count])  # already in the graph's input format (float32 or uint8)
        labels = None if labels_all is None else np.asarray(labels_all[:count])
        source = "evaluation set"
    else:
        rng = np.random.default_rng(20240607)
        if _graph_input_dtype(ctx.onnx_path) == np.uint8:
            x = rng.integers(0, 256, (count, *ctx.input_shape), dtype=np.uint8)
        else:
            x = rng.standard_normal((count, *ctx.input_shape), dtype=np.float32)
        labels, source = None, "seeded random inputs (seed 20240607)"
    if ctx.batch and len(x) % ctx.batch:  # a static-batch ONNX takes whole batches only
        keep = max(ctx.batch, len(x) // ctx.batch * ctx.batch)
        x = np.resize(x, (keep, *x.shape[1:]))
        labels = None if labels is None else np.resize(labels, keep)
    reference = _ort_outputs(ctx.onnx_path, x, ctx.batch, ctx.threads)
    output = _ort_outputs(precision_onnx, x, ctx.batch, ctx.threads)
    result = compare_outputs(output, reference)
    if not result["finite"]:
        raise ExportError(f"the precision-ready ONNX '{precision_onnx.name}' gives non-finite outputs on "
                          f"onnxruntime CPU: an FP16 overflow; keep more nodes in FP32 (-O keep_fp32_nodes=...)")
    arrays = {"x": x, "reference": reference, "onnx_output": output}
    if labels is not None:
        arrays["labels"] = labels
    with atomic_path(ctx.out_dir / GOLDEN_FILE) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return {"source": source, **result}


def _calibration_provenance(ctx: BuildContext, precision: str, options: dict) -> dict | None:
    """Which images calibrated the precision-ready ONNX (INT8 scales; FP16's FP32-keep ranges)."""
    if ctx.calibration is None or precision == "fp32":
        return None
    from ..precision import FP16_MAX_REFERENCE_IMAGES

    arr = np.ascontiguousarray(ctx.calibration)
    if precision == "int8":
        use = f"INT8 activation scales ({options.get('calibration_method', 'entropy')})"
        if str(options.get("high_precision", "fp16")) == "fp16":
            use += f"; FP16 range check on the first {min(len(arr), FP16_MAX_REFERENCE_IMAGES)}"
    else:
        use = f"FP16 range check (AutoCast data_max) on the first {min(len(arr), FP16_MAX_REFERENCE_IMAGES)}"
    return {"id": ctx.calibration_id, "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
            "count": int(len(arr)), "shape": list(arr.shape[1:]), "used_for": use,
            "method": options.get("calibration_method", "entropy") if precision == "int8" else "autocast"}


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------

def _note_no_library(library: str) -> str:
    other = "tensorrt_rtx" if library == "tensorrt" else "tensorrt"
    if import_library(other) is None:
        return ("no engine built: neither tensorrt nor tensorrt_rtx is installed; the precision-ready ONNX "
                "was validated on onnxruntime CPU")
    hint = "tensorrt-rtx-* targets" if other == "tensorrt_rtx" else "tensorrt-* targets"
    return (f"no engine built: {library} is not installed ({other} is: the {hint} use it); the precision-ready "
            f"ONNX was validated on onnxruntime CPU")


def _build(ctx: BuildContext, family: str, precision: str) -> Artifact:
    from .. import precision as prec

    library = LIBRARIES[family]
    name = f"{family}-{precision}"
    options = dict(ctx.options)
    mode = str(options.get("engine", "auto")).lower()
    if mode not in ENGINE_MODES:
        raise XcitExportError(f"option engine={mode!r} is not one of {', '.join(ENGINE_MODES)}")
    trt = import_library(library) if mode != "skip" else None
    if mode == "required" and trt is None:
        raise BackendUnavailableError(
            f"target {name} was asked for an engine (-O engine=required) but {library} is not installed; "
            + ("install TensorRT-RTX (pip install tensorrt-rtx-cu13)" if library == "tensorrt_rtx" else
               "install TensorRT (JetPack ships it; pip install tensorrt on x86-64)")
            + ", or drop engine=required to get the precision-ready ONNX and a device bundle")
    profile = batch_profile(ctx.batch, options)

    # 1. precision-ready ONNX
    onnx_out = ctx.out_dir / f"model.{precision}.onnx"
    if precision == "fp32":
        shutil.copyfile(ctx.onnx_path, onnx_out)
        summary: dict[str, Any] = {"precision": "fp32"}
    elif precision == "fp16":
        summary = prec.to_fp16(ctx.onnx_path, onnx_out, ctx.calibration,
                               keep_nodes=_as_list(options.get("keep_fp32_nodes")))
    else:
        if ctx.calibration is None:
            raise XcitExportError(f"target {name} needs calibration images: pass --calib")
        summary = prec.to_int8(ctx.onnx_path, onnx_out, ctx.calibration,
                               method=str(options.get("calibration_method", "entropy")),
                               exclude_op_types=_exclude_op_types(options.get("exclude_op_types")),
                               exclude_nodes=_as_list(options.get("exclude_nodes")),
                               high_precision=str(options.get("high_precision", "fp16")))
        summary.update(prec.int8_search(onnx_out, ctx))  # issue 11 hook: sensitivity / max_drop options

    # 2. ONNX-level check on onnxruntime CPU + golden data for the device bundle
    golden_count = _as_int(options, "golden_count", DEFAULT_GOLDEN)
    onnx_check = write_golden(ctx, onnx_out, golden_count)

    metadata: dict[str, Any] = {
        "model": getattr(ctx.spec, "name", None), "library": library, "precision": precision,
        "onnx": onnx_out.name, "golden": GOLDEN_FILE, "input_shape": list(ctx.input_shape),
        "batch": ctx.batch or "dynamic", "profile": profile, "precision_conversion": summary,
        "onnx_check": onnx_check, "calibration": _calibration_provenance(ctx, precision, options),
        "engine": None,
    }
    files = [onnx_out]

    # 3. engine
    if mode == "skip":
        metadata["note"] = ("no engine built (engine=skip); the precision-ready ONNX was validated on "
                            "onnxruntime CPU")
    elif trt is None:
        metadata["note"] = _note_no_library(library)
    else:
        gpu = gpu_info()
        if library == "tensorrt" and gpu is None:
            msg = (f"no engine built: tensorrt {library_version(trt)} is installed but no CUDA GPU is usable here "
                   f"(TensorRT builds for the GPU it runs on); the precision-ready ONNX was validated on "
                   f"onnxruntime CPU: build on the device with xcit-export device-check")
            if mode == "required":
                raise BackendUnavailableError(msg.replace("no engine built: ", "cannot build the engine: "))
            metadata["note"] = msg
        else:
            engine_path = ctx.out_dir / ENGINE_FILE
            engine_meta = build_engine(
                onnx_out, engine_path, library, precision, profile, tuple(ctx.input_shape),
                workspace_mb=_as_int(options, "workspace_mb", DEFAULT_WORKSPACE_MB),
                compute_capability=options.get("compute_capability"),
                timing_cache=options.get("timing_cache"))
            files += [engine_path, ctx.out_dir / ENGINE_META]
            metadata["engine"] = ENGINE_FILE
            metadata["engine_info"] = {k: engine_meta[k] for k in ("library", "version", "built_for", "strongly_typed",
                                                                   "workspace_mb", "timing_cache", "build_seconds")}
            if gpu is None:
                metadata["note"] = (f"engine built with {library} {engine_meta['version']} ({engine_meta['built_for']}); "
                                    f"no GPU here to run it: accuracy is the precision-ready ONNX on onnxruntime "
                                    f"CPU and no latency is reported")
    path = ctx.out_dir / ENGINE_FILE if metadata["engine"] else onnx_out
    return Artifact(target=name, path=path, files=files, metadata=metadata)


def _load(artifact: Artifact, threads: int | None = None, cuda_graph=False, **_options):
    folder = artifact.path.parent
    meta = artifact.metadata
    onnx_name = meta.get("onnx")
    if not onnx_name:
        raise ArtifactError(f"'{folder}' holds no precision-ready ONNX record; rebuild the target")
    return open_engine_or_standin(folder, folder / onnx_name, meta.get("engine"), meta.get("library", "tensorrt"),
                                  threads=threads, cuda_graph=_as_bool(cuda_graph))


def trtexec_command(onnx_name: str, precision: str, profile: dict, input_shape, input_name: str = "input",
                    workspace_mb: int = DEFAULT_WORKSPACE_MB, static: bool = False, library: str = "tensorrt") -> str:
    """The equivalent ``trtexec`` command line (TensorRT 10.x on the device), plus the 8.6 variant."""
    shape = "x".join(str(d) for d in input_shape)
    parts = ["trtexec", f"--onnx={onnx_name}", "--stronglyTyped"]
    if not static:
        parts += [f"--minShapes={input_name}:{profile['min']}x{shape}",
                  f"--optShapes={input_name}:{profile['opt']}x{shape}",
                  f"--maxShapes={input_name}:{profile['max']}x{shape}"]
    if precision == "fp32":
        parts.append("--noTF32")  # as build_engine: an FP32 engine computes in FP32
    parts += [f"--memPoolSize=workspace:{workspace_mb}", "--timingCacheFile=timing.cache",
              "--saveEngine=model.engine"]
    legacy = [p for p in parts if p != "--stronglyTyped"]
    legacy += {"fp32": [], "fp16": ["--fp16"], "int8": ["--fp16", "--int8"]}[precision]
    legacy = [p.replace("--memPoolSize=workspace:", "--workspace=") for p in legacy]
    text = (" ".join(parts) + "\n"
            + "# TensorRT 8.6 (JetPack 5), which has no strongly typed networks (FP32 layers are then not pinned):\n# "
            + " ".join(legacy) + "\n")
    if library == "tensorrt_rtx":
        text += ("# This bundle targets TensorRT-RTX: trtexec above is for TensorRT 10.x; for TensorRT-RTX use\n"
                 "# xcit-export device-check (same build settings through the tensorrt_rtx Python API).\n")
    return text


def _register(family: str, precision: str) -> None:
    library = LIBRARIES[family]
    options = dict(_COMMON_OPTIONS)
    options.update(_RTX_OPTIONS if family == "tensorrt-rtx" else _TRT_OPTIONS)
    if precision == "fp16":
        options.update(_FP16_OPTIONS)
    if precision == "int8":
        options.update(_INT8_OPTIONS)
    where = ("Jetson (JetPack 6, TensorRT 10.x) and data-centre/desktop GPUs" if family == "tensorrt"
             else "RTX PCs (TensorRT for RTX; builds ahead of time without a GPU)")
    what = {"fp32": "FP32", "fp16": "FP16 (ModelOpt AutoCast, norms in FP32)",
            "int8": "INT8 Q/DQ (ModelOpt PTQ) + FP16"}[precision]
    requires = ("onnxruntime",) if precision == "fp32" else ("onnxruntime", "modelopt", "onnx_graphsurgeon")
    verified = ("precision-ready ONNX: x86-64 CPU (onnxruntime); "
                + ("engine: TensorRT-RTX 1.7 ahead-of-time build on a CPU-only x86-64 host; " if family == "tensorrt-rtx"
                   else "engine build: not exercised (no tensorrt here); ")
                + "engine runner: unverified on hardware")
    register(Target(
        name=f"{family}-{precision}", backend=family, precision=precision,
        description=f"{what} engine for {where}; precision-ready ONNX validated on the host ({library})",
        build=lambda ctx, f=family, p=precision: _build(ctx, f, p),
        load=_load, requires=requires, needs_calibration=precision == "int8",
        verified=verified, options=options))


for _family in ("tensorrt", "tensorrt-rtx"):
    for _precision in ("fp32", "fp16", "int8"):
        _register(_family, _precision)
