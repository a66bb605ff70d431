"""TensorRT targets: precision-ready ONNX (host) -> engine (where a TensorRT library is importable).

Targets ``tensorrt-{fp32,fp16,int8}`` use NVIDIA's ``tensorrt`` (Jetson/JetPack, data-centre and
desktop GPUs); ``tensorrt-rtx-{fp32,fp16,int8}`` use ``tensorrt_rtx`` (TensorRT for RTX PCs).

Build, in order:

1. **Precision-ready ONNX** (:mod:`xcit_export.quantize.precision`): FP32 is the simplified ONNX; FP16 is
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

Modules, one per job: :mod:`.precision_onnx` (precision-ready ONNX, golden data), :mod:`.engine`
(engine build, ``engine.json``, ``trtexec`` line), :mod:`.runner` (the engine runner, readable
alone on the device), :mod:`.device` (TensorRT library, cuda-python, GPU detection),
:mod:`.options` (target options); this module registers the targets.

The engine runner (:class:`EngineRunner`) is written against the API shared by ``tensorrt`` 10.x
and ``tensorrt_rtx`` and checked against their documentation, but it has NOT been run on a GPU
yet: nothing here has one. Treat its figures as unverified until it has been exercised on a
Jetson or an RTX machine (the README's targets table says the same).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import ArtifactError, BackendUnavailableError, ExportError
from ...io import sha256_file
from .. import register
from ..base import (SEARCH_OPTIONS, Artifact, Boolean, BuildContext, Choice, HeightWidth, Option, Target, Text,
                    Whole, Words)
from ..onnxruntime import OnnxRuntimeRunner
from .device import (CUDA_PYTHON_HINT, _cudart, engine_unavailable_reason, gpu_info, gpu_status, import_library,
                     library_version)
from .engine import (ENGINE_FILE, ENGINE_META, RTX_PORTABLE, build_engine, cache_dir, check_engine_metadata,
                     parse_onnx, trtexec_command)
from .options import (DEFAULT_GOLDEN, DEFAULT_MAX_BATCH, DEFAULT_WORKSPACE_MB, ComputeCapabilities, _cc_text,
                      batch_profile, compute_capabilities, size_profile)
from .precision_onnx import GOLDEN_FILE, _calibration_provenance, make_precision_onnx, write_golden
from .runner import EngineRunner

LIBRARIES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
ENGINE_MODES = ("auto", "required", "skip")

_COMMON_OPTIONS = (
    Option("engine", Choice(*ENGINE_MODES), "auto",
           "auto: build the engine when the library is importable and can build here; required: fail if no engine "
           "can be built; skip: precision-ready ONNX only", example="skip"),
    Option("min_batch", Whole(1), None, "optimisation profile: smallest batch (default 1; dynamic-batch exports only)",
           example=2),
    Option("opt_batch", Whole(1), None, "optimisation profile: batch the kernels are tuned for (default 1)", example=4),
    Option("max_batch", Whole(1), None, f"optimisation profile: largest batch (default {DEFAULT_MAX_BATCH})",
           example=32),
    Option("min_size", HeightWidth(), None, "optimisation profile, --dynamic-size: smallest HxW (default: the smallest "
                                            "of the export size and --eval-sizes)", example=[32, 32]),
    Option("opt_size", HeightWidth(), None, "optimisation profile, --dynamic-size: HxW the kernels are tuned for "
                                            "(default: the export size)", example=[96, 96]),
    Option("max_size", HeightWidth(), None, "optimisation profile, --dynamic-size: largest HxW (default: the largest "
                                            "of the export size and --eval-sizes)", example=[512, 768]),
    Option("workspace_mb", Whole(1), DEFAULT_WORKSPACE_MB, "builder workspace limit in MiB", example=2048),
    Option("golden_count", Whole(1), DEFAULT_GOLDEN, "golden inputs kept for the device bundle", example=8),
    Option("cuda_graph", Boolean(), False, "runner: replay inference as a CUDA graph", example=True),
)
_TRT_OPTIONS = (
    Option("timing_cache", Text(), None,
           "timing cache file (default: $XCIT_EXPORT_CACHE/tensorrt/<version>-<gpu>.timing-cache)",
           example="trt.timing-cache"),
)
_RTX_OPTIONS = (
    Option("compute_capability", ComputeCapabilities(), None,
           "ahead-of-time target(s), e.g. 8.6 or 8.6,8.9,12.0 or current (default: TensorRT-RTX's portable set)",
           example=["8.6"]),
)
_FP16_OPTIONS = (
    Option("keep_fp32_nodes", Words(), [], "extra node names (regular expressions, comma-separated) to keep in FP32",
           example=["head"]),
)
_INT8_OPTIONS = (
    # the methods of quantize.precision.INT8_METHODS (tests/test_options.py checks they agree; that module
    # needs onnx, which the device side lacks)
    Option("calibration_method", Choice("entropy", "max"), "entropy", "entropy or max", example="max"),
    Option("exclude_op_types", Words(), [], "op types left unquantized besides the residual Adds (default), "
                                            "comma-separated, e.g. BatchNormalization; 'none' quantizes the Adds too",
           example=["none"]),
    Option("exclude_nodes", Words(), [], "node names left unquantized (regular expressions, comma-separated)",
           example=["head"]),
    Option("high_precision", Choice("fp16", "fp32"), "fp16",
           "type of the unquantized rest: fp16 (as TensorRT runs INT8) or fp32", example="fp32"),
    *SEARCH_OPTIONS,  # sensitivity, max_drop, search_images (xcit_export/quantize/sensitivity.py)
)


class CpuStandInRunner(OnnxRuntimeRunner):
    """The precision-ready ONNX on onnxruntime CPU, standing in for an engine that cannot run here.

    Its accuracy is the ONNX-level accuracy; its timings say nothing about the engine, so
    ``measures_latency`` is False.
    """

    measures_latency = False

    def __init__(self, path: Path, threads: int | None, reason: str):
        super().__init__(path, threads=threads)
        self.device = f"CPU (onnxruntime on the precision-ready ONNX, standing in for the engine: {reason})"


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
    gpu, problem = gpu_status()
    check_engine_metadata(meta, trt, gpu, engine)
    if gpu is not None and problem:
        raise BackendUnavailableError(f"a CUDA GPU ({gpu['name']}) is here but cuda-python cannot use it: {problem}")
    if gpu is None:
        return CpuStandInRunner(onnx_path, threads, problem or "no CUDA GPU here")
    if _cudart() is None:
        return CpuStandInRunner(onnx_path, threads, f"cuda-python is not installed ({CUDA_PYTHON_HINT})")
    return EngineRunner(engine, library, threads=threads, cuda_graph=cuda_graph,
                        output_names=meta.get("output_names"))


def onnx_io_names(path: Path) -> tuple:
    """``(input_name, output_names)`` of an ONNX file, in the graph's order (host side: needs onnx)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    return inputs[0], [o.name for o in graph.output]


def _note_no_library(library: str) -> str:
    other = "tensorrt_rtx" if library == "tensorrt" else "tensorrt"
    if import_library(other) is None:
        return ("no engine built: neither tensorrt nor tensorrt_rtx is installed; the precision-ready ONNX "
                "was validated on onnxruntime CPU")
    hint = "tensorrt-rtx-* targets" if other == "tensorrt_rtx" else "tensorrt-* targets"
    return (f"no engine built: {library} is not installed ({other} is: the {hint} use it); the precision-ready "
            f"ONNX was validated on onnxruntime CPU")


def _build(ctx: BuildContext, family: str, precision: str) -> Artifact:
    library = LIBRARIES[family]
    name = f"{family}-{precision}"
    options = ctx.options  # parsed (Target.parse_options): every option, canonical
    mode = options["engine"]
    trt = import_library(library) if mode != "skip" else None
    if mode == "required" and trt is None:
        raise BackendUnavailableError(
            f"target {name} was asked for an engine (-O engine=required) but {library} is not installed; "
            + ("install TensorRT-RTX (pip install tensorrt-rtx-cu13)" if library == "tensorrt_rtx" else
               "install TensorRT (JetPack ships it; pip install tensorrt on x86-64)")
            + ", or drop engine=required to get the precision-ready ONNX and a device bundle")
    profile = batch_profile(ctx.batch, options)
    size_range = size_profile(ctx.input_shape, ctx.dynamic_size, ctx.sizes, options)
    if size_range is not None:  # --dynamic-size: the profile spans the sizes asked for (options.size_profile)
        profile["size"] = size_range

    # 1. precision-ready ONNX
    onnx_out = ctx.out_dir / f"model.{precision}.onnx"
    summary = make_precision_onnx(ctx, name, precision, options, onnx_out)

    # 2. ONNX-level check on onnxruntime CPU + golden data for the device bundle
    golden_count = options["golden_count"]
    onnx_check = write_golden(ctx, onnx_out, golden_count)
    input_name, output_names = onnx_io_names(onnx_out)
    golden_sizes = _golden_sizes(ctx, onnx_out, golden_count, size_range)

    metadata: dict[str, Any] = {
        "model": getattr(ctx.spec, "name", None), "library": library, "precision": precision,
        "onnx": onnx_out.name, "golden": GOLDEN_FILE, "input_shape": list(ctx.input_shape),
        "batch": ctx.batch or "dynamic", "profile": profile, "precision_conversion": summary,
        "onnx_check": onnx_check, "calibration": _calibration_provenance(ctx, precision, options),
        "engine": None, "input_name": input_name, "output_names": output_names,
        "support_files": [GOLDEN_FILE, *[g["file"] for g in golden_sizes.values()]],  # not deployed: size_bytes
    }
    if size_range is not None:  # the runner refuses sizes outside the profile (targets/base.py)
        metadata["input_size"] = {"min": size_range["min"], "max": size_range["max"]}
    if golden_sizes:  # device-check runs the golden inputs at every size (golden_<H>x<W>.npz)
        metadata["golden_sizes"] = golden_sizes
    # every file the artifact holds is listed (and so hashed and checked on reuse): golden data included
    files = [onnx_out, ctx.out_dir / GOLDEN_FILE, *[ctx.out_dir / g["file"] for g in golden_sizes.values()]]

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
                workspace_mb=options["workspace_mb"], compute_capability=options.get("compute_capability"),
                timing_cache=options.get("timing_cache"))
            if engine_meta["output_names"] != output_names:
                raise ExportError(f"the {library} engine's outputs {engine_meta['output_names']} are not the ONNX's "
                                  f"{output_names} (in order); the runner could not return them by name")
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


def _golden_sizes(ctx: BuildContext, onnx_out, count: int, size_range: dict | None) -> dict:
    """Golden data at each ``--eval-sizes`` size other than the export size: ``{"HxW": {"file", ...check}}``."""
    from .precision_onnx import golden_file

    if size_range is None:
        return {}
    shape = tuple(ctx.input_shape)
    export = (shape[1], shape[2]) if size_range["layout"] == "nchw" else (shape[0], shape[1])
    out = {}
    for size in ctx.sizes:
        size = (int(size[0]), int(size[1]))
        if size == tuple(export):
            continue
        check = write_golden(ctx, onnx_out, count, size=size)
        out[f"{size[0]}x{size[1]}"] = {"file": golden_file(size), **check}
    return out


def engine_key(library: str, options: dict) -> dict:
    """What decides a TensorRT artifact besides its options (``Target.key_inputs``, in its build key):
    the ``library`` module that imports here and its version (None: not installed, so the build has
    no engine), and the CUDA GPU a build here targets (name and compute capability; None: none
    visible). A folder built engine-less, reused where an engine can be built, and an engine built for
    GPU A, reused on GPU B, would both be stale: a different key rebuilds them. ``engine=skip``
    builds no engine anywhere, so neither counts."""
    if str(options.get("engine", "auto")).strip().lower() == "skip":
        return {"engine": "skip"}
    trt = import_library(library)
    if trt is None:
        return {"library": library, "version": None, "gpu": None}
    gpu = gpu_info()
    return {"library": library, "version": library_version(trt),
            "gpu": None if gpu is None else {"name": gpu.get("name"), "compute_capability": gpu.get("compute_capability")}}


def _load(artifact: Artifact, threads: int | None = None, cuda_graph=False, **_options):
    folder = artifact.path.parent
    meta = artifact.metadata
    onnx_name = meta.get("onnx")
    if not onnx_name:
        raise ArtifactError(f"'{folder}' holds no precision-ready ONNX record; rebuild the target")
    return open_engine_or_standin(folder, folder / onnx_name, meta.get("engine"), meta.get("library", "tensorrt"),
                                  threads=threads, cuda_graph=cuda_graph)


def _register(family: str, precision: str) -> None:
    library = LIBRARIES[family]
    options = (*_COMMON_OPTIONS, *(_RTX_OPTIONS if family == "tensorrt-rtx" else _TRT_OPTIONS),
               *(_FP16_OPTIONS if precision == "fp16" else ()), *(_INT8_OPTIONS if precision == "int8" else ()))
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
        # golden.npz and onnx_check come from the evaluation set; FP16's AutoCast and INT8 read the calibration set
        reads=("evaluation",) if precision == "fp32" else ("calibration", "evaluation"),
        runs_here=lambda: engine_unavailable_reason(library), verified=verified, options=options,
        key_inputs=lambda opts, lib=library: engine_key(lib, opts)))


for _family in ("tensorrt", "tensorrt-rtx"):
    for _precision in ("fp32", "fp16", "int8"):
        _register(_family, _precision)


__all__ = ["CpuStandInRunner", "ENGINE_FILE", "ENGINE_META", "EngineRunner", "GOLDEN_FILE", "LIBRARIES", "RTX_PORTABLE",
           "batch_profile", "build_engine", "cache_dir", "check_engine_metadata", "compute_capabilities", "gpu_info",
           "import_library", "library_version", "open_engine_or_standin", "parse_onnx", "trtexec_command",
           "write_golden"]
