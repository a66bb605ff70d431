"""Engine build: precision-ready ONNX -> serialized TensorRT / TensorRT-RTX engine + ``engine.json``.

Device side too (``device-check`` builds the engine on the Jetson): no torch, onnx or click.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ...errors import ArtifactError, BackendUnavailableError, ExportError, XcitExportError
from ...io import atomic_path, sha256_file
from .device import _clean, _make_logger, gpu_info, import_library, library_version
from .options import DEFAULT_WORKSPACE_MB, _cc_text, compute_capabilities, profile_shapes

ENGINE_FILE = "model.engine"
ENGINE_META = "engine.json"
# Engines carry their layers' names and types (IEngineInspector JSON "LayerType"), which the layer
# profile groups by. ProfilingVerbosity is documented as "the verbosity levels of layer information
# exposed in NVTX annotations and in IEngineInspector" (TensorRT API, ``ProfilingVerbosity``), a
# reporting setting, not an optimisation one; trtexec's ``--profilingVerbosity=detailed`` and NVIDIA's
# TREx build the engines they profile with it. No NVIDIA text found says in as many words that it
# leaves tactics alone; on TensorRT-RTX 1.7 here (ahead of time, no GPU) a DETAILED engine of the nano
# features head at 64x64 differed from a LAYER_NAMES_ONLY one in 27 of 20.7 M bytes, fewer than two
# DETAILED builds differ from each other (846). TensorRT (timed tactics on a GPU): unverified.
# Recorded in engine.json; device-check reuses an engine only if it was built with it.
PROFILING_VERBOSITY = "DETAILED"
# What TensorRT-RTX targets when no compute capability is named (its documented default).
RTX_PORTABLE = "portable ahead-of-time build (TensorRT-RTX default: compute capability 8.0, 8.6, 8.9, 12.0 and later)"


def cache_dir() -> Path:
    """``$XCIT_EXPORT_CACHE/tensorrt`` (``~/.cache/xcit-export/tensorrt``); not weights.cache_dir,
    which would import torch, absent on a Jetson running device-check."""
    base = Path(os.environ.get("XCIT_EXPORT_CACHE", Path.home() / ".cache" / "xcit-export"))
    return base / "tensorrt"


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


def mark_points(network, points) -> dict:
    """Mark every point's tensor as an extra network output (``--explain`` in device-check).

    ``points``: ``[(module, [tensor names, first preferred])]`` in model order, the ONNX tensor names
    of :mod:`xcit_export.diagnose.locate`; the ONNX parser names each ``ITensor`` after its ONNX
    tensor. Returns ``{module: marked tensor name}``; a point whose tensors the network lacks is left
    out. Written after Polygraphy's ``polygraphy/backend/trt/util.py`` ``mark_outputs`` (a name ->
    ``ITensor`` map over every layer's inputs and outputs, then
    ``INetworkDefinition.mark_output``), except that the graph's own outputs stay marked.
    ``mark_output`` on an intermediate tensor makes it a binding the engine must write, so TensorRT
    cannot fuse across it (NVIDIA/TensorRT#252: marking outputs is the documented way to disable a
    fusion): a marked engine is slower and can round differently from the deployed one, which is why
    device-check also compares the marked engine's final output with the unmarked engine's
    (``marking_effect``). In a strongly typed network a marked tensor keeps its type (FP16 in an
    FP16 region); the runner widens every output to float32.

    UNVERIFIED ON HARDWARE: an engine built from a marked network is checked to build ahead of time
    with TensorRT-RTX on a CPU-only host (tests/targets/test_tensorrt_rtx.py); no marked engine has run on a GPU.
    """
    tensors = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            tensor = layer.get_output(j)
            if tensor is not None:
                tensors.setdefault(tensor.name, tensor)
    marked = {}
    for module, names in points:
        name = next((n for n in names if n in tensors), None)
        if name is None:
            continue
        if not tensors[name].is_network_output:
            network.mark_output(tensors[name])
        marked[module] = name
    return marked


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
                 compute_capability=None, timing_cache: Path | None = None, points=None) -> dict:
    """Build ``engine_path`` from ``onnx_path`` with ``library`` and write ``engine.json`` beside it.

    Returns the engine metadata. ``tensorrt`` needs a CUDA GPU; ``tensorrt_rtx`` builds ahead of
    time without one for ``compute_capability`` (None: its portable default). ``points``
    (``[(module, [tensor names])]``) marks them as extra outputs (:func:`mark_points`); the metadata
    then lists them under ``points`` and their tensors among ``output_names``.
    """
    trt = import_library(library)
    if trt is None:
        raise BackendUnavailableError(f"{library} is not installed; install it to build engines "
                                      f"({'pip install tensorrt-rtx-cu13' if library == 'tensorrt_rtx' else 'JetPack ships it; pip install tensorrt on x86-64'})")
    t0 = time.perf_counter()
    rtx = library == "tensorrt_rtx"
    ccs = compute_capabilities(trt, compute_capability) if rtx else []
    if compute_capability not in (None, "", []) and not rtx:
        raise XcitExportError("compute_capability applies to TensorRT-RTX only: TensorRT builds for the GPU it runs on")
    gpu = gpu_info()
    builder, network, parser, logger, strongly_typed = parse_onnx(trt, onnx_path)
    marked = mark_points(network, points) if points else None
    config, tf32 = _builder_config(trt, builder, network, precision, workspace_mb, strongly_typed)
    inp = network.get_input(0)
    _add_profile(builder, config, inp, profile, input_shape, onnx_path)
    _set_compute_capabilities(trt, config, ccs, library, logger)
    cache_note, cache_path = _timing_cache(trt, config, library, gpu, timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = _clean(' | '.join(logger.errors())) or "no error message"
        if gpu is None and any(_cc_text(c) == "current GPU" for c in ccs):
            detail = "compute_capability 'current' needs a usable CUDA GPU here; name the target, e.g. 8.6"
        raise ExportError(f"{library} {library_version(trt)} could not build an engine from '{onnx_path}': {detail}")
    if cache_path is not None:
        cache_note = _save_timing_cache(config, cache_path, cache_note)
    meta = _engine_record(trt, library, precision, strongly_typed, tf32, ccs, gpu, network, profile, input_shape,
                          workspace_mb, cache_note, onnx_path)
    meta["points"] = marked
    meta["build_seconds"] = round(time.perf_counter() - t0, 2)
    _write_engine(Path(engine_path), serialized, meta)
    del parser
    return meta


def _builder_config(trt, builder, network, precision: str, workspace_mb: int, strongly_typed: bool):
    """The builder config: workspace, profiling verbosity, no TF32 for FP32; for TensorRT 8.6 (no
    strongly typed networks), precision by builder flags with the ONNX's FP32 layers pinned.
    Returns the config and whether TF32 is on (None where the library has no such flag)."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    config.profiling_verbosity = getattr(trt.ProfilingVerbosity, PROFILING_VERBOSITY)
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
    return config, tf32


def _add_profile(builder, config, inp, profile: dict, input_shape, onnx_path: Path) -> None:
    """One optimisation profile for a dynamic batch and/or (--dynamic-size) height and width."""
    dims = tuple(inp.shape)
    if not any(d == -1 for d in dims):
        return
    if profile.get("size") is None and any(d == -1 for d in dims[1:]):
        raise ExportError(f"'{onnx_path}' has a dynamic height/width but the profile has no size range; "
                          f"build it from a --dynamic-size run (the profile spans --eval-sizes)")
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(inp.name, *profile_shapes(profile, input_shape))
    config.add_optimization_profile(opt_profile)


def _set_compute_capabilities(trt, config, ccs: list, library: str, logger) -> None:
    """TensorRT-RTX's ahead-of-time targets; one the library refuses is an error, never recorded."""
    if not ccs:
        return
    config.num_compute_capabilities = len(ccs)
    for i, cc in enumerate(ccs):
        # set_compute_capability returns False for a refused one (e.g. CURRENT with others, or
        # CURRENT on a machine without a GPU): it must not appear in engine.json as a target.
        if not config.set_compute_capability(cc, i):
            raise XcitExportError(
                f"{library} {library_version(trt)} refused compute_capability {_cc_text(cc)} (position {i}): "
                f"'current' needs a GPU here and must be the only one; "
                f"{_clean(' | '.join(logger.errors())) or 'no error message'}")


def _timing_cache(trt, config, library: str, gpu: dict | None, timing_cache) -> tuple[str, Path | None]:
    """The timing cache attached to ``config`` (TensorRT; a no-op in TensorRT-RTX): its note and path."""
    if library == "tensorrt_rtx":
        return "not used: TensorRT-RTX made timing caches a no-op (it caches JIT kernels at runtime)", None
    cache_path = Path(timing_cache) if timing_cache else (
        cache_dir() / f"{library_version(trt)}-{(gpu or {}).get('name', 'gpu').replace(' ', '_')}.timing-cache")
    return _attach_timing_cache(config, cache_path), cache_path


def _engine_record(trt, library: str, precision: str, strongly_typed: bool, tf32, ccs: list, gpu: dict | None,
                   network, profile: dict, input_shape, workspace_mb: int, cache_note: str, onnx_path: Path) -> dict:
    """``engine.json``: what built the engine, for what, from what (``engine_sha256`` filled on write)."""
    if library == "tensorrt_rtx":
        target = ("ahead-of-time for " + ", ".join(_cc_text(c) for c in ccs)) if ccs else RTX_PORTABLE
    else:
        target = f"GPU {gpu['name']} (compute capability {gpu['compute_capability']})" if gpu else "the GPU of the build machine"
    inp = network.get_input(0)
    # The network's outputs are marked by the ONNX parser in the ONNX graph's output order; the
    # runner returns outputs in this order, by name (the engine's own I/O order is not promised).
    output_names = [network.get_output(k).name for k in range(network.num_outputs)]
    return {
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
        "input_name": inp.name,
        "output_names": output_names,
        "profile": profile_record(inp.name, profile, input_shape),
        "workspace_mb": int(workspace_mb),
        "profiling_verbosity": PROFILING_VERBOSITY.lower(),
        "timing_cache": cache_note,
        "onnx": Path(onnx_path).name,
        "onnx_sha256": sha256_file(onnx_path),
        "engine_sha256": None,
    }


def _write_engine(engine_path: Path, serialized, meta: dict) -> None:
    """model.engine and engine.json replaced together, engine.json first: a crash between the two
    renames leaves a json whose engine_sha256 does not match, which loading refuses."""
    with atomic_path(engine_path) as tmp_engine, atomic_path(engine_path.parent / ENGINE_META) as tmp_meta:
        with open(tmp_engine, "wb") as fh:
            fh.write(memoryview(serialized))
        meta["engine_sha256"] = sha256_file(tmp_engine)
        tmp_meta.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")


def profile_record(input_name: str, profile: dict, input_shape) -> dict:
    """The optimisation profile as ``engine.json`` records it (and engine reuse compares it)."""
    lo, opt, hi = profile_shapes(profile, input_shape)
    return {"input": input_name, "min": list(lo), "opt": list(opt), "max": list(hi)}


def _attach_timing_cache(config, path: Path) -> str:
    """Load ``path`` into the builder's timing cache; one the library refuses is replaced by an empty one.

    ``set_timing_cache(cache, ignore_mismatch=False)`` returns False for a cache made on another
    GPU or TensorRT version (TensorRT Python API, ``IBuilderConfig.set_timing_cache``).
    """
    data = b""
    note = str(path)
    if path.exists():
        try:
            data = path.read_bytes()
        except OSError as exc:
            note = f"{path} (unreadable: {exc.strerror or exc}; started empty)"
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, False):
        note = f"{path} (made on another GPU or TensorRT version: ignored, started empty)"
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, False):
            return "not used: the builder refused an empty timing cache"
    return note


def _save_timing_cache(config, path: Path, note: str) -> str:
    """Write the builder's timing cache back; ``get_timing_cache()`` is None when none was attached."""
    cache = config.get_timing_cache()
    if cache is None:
        return note if note.startswith("not used") else f"{path} (no timing cache attached: not written)"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(bytes(memoryview(cache.serialize())))
    except OSError as exc:
        return f"{path} (could not be written: {exc.strerror or exc})"
    return note


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


def trtexec_command(onnx_name: str, precision: str, profile: dict, input_shape, input_name: str = "input",
                    workspace_mb: int = DEFAULT_WORKSPACE_MB, static: bool = False, library: str = "tensorrt") -> str:
    """The equivalent ``trtexec`` command line (TensorRT 10.x on the device), plus the 8.6 variant."""
    parts = ["trtexec", f"--onnx={onnx_name}", "--stronglyTyped"]
    if not static or profile.get("size"):
        lo, opt, hi = ("x".join(str(d) for d in s) for s in profile_shapes(profile, input_shape))
        parts += [f"--minShapes={input_name}:{lo}", f"--optShapes={input_name}:{opt}",
                  f"--maxShapes={input_name}:{hi}"]
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
