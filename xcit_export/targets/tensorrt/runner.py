"""The engine runner: a serialized TensorRT / TensorRT-RTX engine on a CUDA GPU.

This module is what runs on the device (a Jetson, an RTX PC). It can be read alone: it needs
numpy, the TensorRT library that built the engine (``tensorrt`` or ``tensorrt_rtx``) and
cuda-python (see :data:`.device.CUDA_PYTHON_HINT` for the version); it imports neither torch,
onnx nor click, and stays Python 3.8 compatible (JetPack's Python may be old).

UNVERIFIED ON HARDWARE: written and reviewed against NVIDIA's documentation and samples only; no
machine available to this project has a TensorRT-capable GPU. Its control flow (buffers, output
order, chunking, CUDA-graph recapture) is tested against a recording double of the CUDA and
TensorRT APIs (tests/targets/test_trt_runner.py), which says nothing about the hardware.

Sources: TensorRT 10 Python API (``IExecutionContext``, ``ICudaEngine``), NVIDIA's
``samples/python/common_runtime.py`` (byte host buffers, ``cuda_call``), TensorRT-RTX
``samples/apiUsage/python/api_usage.py`` (``IRuntimeConfig``), TensorRT's best-practices guide,
section "CUDA Graphs", and cuda-python's ``cuda.bindings.runtime``.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import ArtifactError, BackendUnavailableError
from .device import CUDA_PYTHON_HINT, _clean, _cudart, _make_logger, gpu_info, import_library, library_version


def _check(cudart, result, what: str):
    """cuda-python returns ``(err, *values)``; raise on an error, return the value(s)."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise ArtifactError(f"CUDA call {what} failed: {err}")
    return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)


# --------------------------------------------------------------------------------------------
# Host buffers and data types
# --------------------------------------------------------------------------------------------

def host_dtype(trt, trt_dtype) -> np.dtype:
    """The numpy type a host buffer of ``trt_dtype`` is viewed as.

    ``trt.nptype`` raises for BF16, FP8, INT4, FP4; BF16 is viewed as its raw ``uint16`` bits
    and widened by :func:`to_float32`. FP8/FP4/INT4 I/O is refused: XCiT exports keep FP32 (or
    uint8/FP16) I/O, and guessing a scale for an 8-bit float output would be silently wrong.
    """
    try:
        return np.dtype(trt.nptype(trt_dtype))
    except TypeError:
        name = str(getattr(trt_dtype, "name", trt_dtype)).split(".")[-1]
        if name == "BF16":
            return np.dtype(np.uint16)
        raise ArtifactError(f"engine I/O tensor type {name} has no numpy equivalent; re-export with FP32, FP16 "
                            f"or uint8 inputs and outputs") from None


def _is_bf16(trt_dtype) -> bool:
    return str(getattr(trt_dtype, "name", trt_dtype)).split(".")[-1] == "BF16"


def to_float32(values: np.ndarray, bf16: bool = False) -> np.ndarray:
    """Engine output -> float32 (BF16 bits: the upper half of an IEEE float32)."""
    if bf16:
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float32)


def from_float32(values: np.ndarray, dtype: np.dtype, bf16: bool = False) -> np.ndarray:
    """Input -> the engine's input type (BF16: round to nearest even on the upper 16 bits)."""
    if bf16:
        bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.ascontiguousarray(values, dtype=dtype)


def host_view(pointer: int, nbytes: int) -> np.ndarray:
    """A ``uint8`` numpy view of ``nbytes`` at ``pointer`` (pinned host memory), to be ``.view(dtype)``-ed.

    Byte buffers, as NVIDIA's ``samples/python/common_runtime.py`` (``HostDeviceMem``) does, because
    ``np.ctypeslib.as_ctypes_type`` has no ctypes type for float16 (or BF16/FP8).
    """
    return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_uint8)), (nbytes,))


# --------------------------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------------------------

def plan_chunks(count: int, min_batch: int, max_batch: int) -> list:
    """``(start, stop, padded_batch)`` for running ``count`` inputs on a profile of ``min..max``.

    Chunks take at most ``max_batch``; one smaller than ``min_batch`` (the remainder, or a small
    call) is padded to ``min_batch`` by repeating its last input, and its padded outputs are cut,
    because ``set_input_shape`` refuses a shape outside the optimisation profile.
    """
    if count < 1:
        raise ArtifactError("no inputs to run")
    chunks = []
    for start in range(0, count, max_batch):
        stop = min(start + max_batch, count)
        chunks.append((start, stop, max(stop - start, min_batch)))
    return chunks


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------

class EngineRunner:
    """A serialized engine on a CUDA GPU, through the Python API ``tensorrt`` 10.x and
    ``tensorrt_rtx`` share. UNVERIFIED ON HARDWARE (see the module docstring).

    * I/O by tensor name, never by binding index; outputs are returned in ``output_names`` order
      (the ONNX's, recorded at build time): TensorRT does not promise that its I/O order matches
      the ONNX's, and ``--output features`` has four outputs;
    * dynamic batch: ``context.set_input_shape`` per call, output shapes read back from the
      context, byte buffers allocated once for the profile's largest batch; inputs beyond the
      profile's maximum run in chunks, chunks below its minimum are padded (:func:`plan_chunks`);
    * CUDA through cuda-python's runtime bindings (``cuda.bindings.runtime``, ``cuda.cudart``
      before 12.6): NVIDIA's TensorRT samples use it, it installs from PyPI on x86-64 and aarch64,
      and needs only the driver; its major version must match the device's CUDA
      (:data:`.device.CUDA_PYTHON_HINT`);
    * one non-default stream, pinned host buffers, ``execute_async_v3`` (its bool checked);
    * ``cuda_graph=True``: with TensorRT-RTX, its built-in capture
      (``IRuntimeConfig.cuda_graph_strategy = WHOLE_GRAPH_CAPTURE``, which handles shape changes
      itself: "Working with RTX CUDA Graphs" in the TensorRT-RTX docs); with ``tensorrt``, one
      stream capture, redone whenever the input shape differs from the previous call's. TensorRT's
      best-practices guide ("CUDA Graphs") asks for one plain ``execute_async_v3`` after any shape
      change before capturing (the first enqueue may do deferred, shape-dependent work), and a
      graph replayed after the context's shape changed is undefined;
    * TensorRT-RTX: ``dynamic_shapes_kernel_specialization_strategy = EAGER``, so the shape-
      specialised kernels are compiled at the first enqueue of a shape and the timed runs do not
      use the fallback kernels while the real ones compile in the background (the default LAZY);
    * :meth:`gpu_latency_ms` times execution alone with CUDA events (what trtexec calls GPU compute
      time); ``infer`` timed by the pipeline is end to end, copies included.

    ``modules=(trt, cudart)`` replaces the imported TensorRT and cuda-python modules (the tests'
    recording double); ``None`` imports ``library`` and cuda-python.
    """

    measures_latency = True

    def __init__(self, engine_path: Path, library: str, threads: int | None = None, cuda_graph: bool = False,
                 output_names: Sequence[str] | None = None, modules: tuple | None = None, shared: "EngineRunner | None" = None):
        trt, cudart = modules if modules is not None else (import_library(library), _cudart())
        if trt is None or cudart is None:
            raise BackendUnavailableError(f"the engine runner needs {library} and cuda-python ({CUDA_PYTHON_HINT})")
        self.trt, self.cudart, self.threads = trt, cudart, threads
        self.engine_path = Path(engine_path)
        self._graphs: dict = {}
        self._buffers: dict = {}
        self.stream = None
        if shared is not None:
            # Another execution context of ``shared``'s engine (targets/tensorrt/pool.py): only for an engine
            # without dynamic inputs, whose contexts may run concurrently on one optimisation profile.
            self.logger, self.runtime, self.engine = shared.logger, shared.runtime, shared.engine
        else:
            self.logger = _make_logger(trt)
            self.runtime = trt.Runtime(self.logger)
            self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise ArtifactError(f"{library} {library_version(trt)} cannot load engine '{engine_path}': "
                                f"{_clean(' | '.join(self.logger.errors())) or 'no error message'}; rebuild it here")
        self.cuda_graph = bool(cuda_graph)
        self._rtx_graph = False
        if hasattr(self.engine, "create_runtime_config"):  # TensorRT-RTX (and TensorRT >= 10.11)
            rc = self.engine.create_runtime_config()
            strategy = getattr(trt, "DynamicShapesKernelSpecializationStrategy", None)
            if strategy is not None:
                rc.dynamic_shapes_kernel_specialization_strategy = strategy.EAGER
            if self.cuda_graph and hasattr(trt, "CudaGraphStrategy"):
                rc.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
                self._rtx_graph = True
            self.context = self.engine.create_execution_context(rc)
        else:
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise ArtifactError(f"{library} could not create an execution context for '{engine_path}': "
                                f"{_clean(' | '.join(self.logger.errors())) or 'no error message'}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        engine_outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1:
            raise ArtifactError(f"engine '{engine_path}' has {len(inputs)} inputs; XCiT engines have one")
        if output_names is not None and sorted(output_names) != sorted(engine_outputs):
            raise ArtifactError(f"engine '{engine_path}' has outputs {engine_outputs} but its ONNX recorded "
                                f"{list(output_names)}; rebuild the engine from this bundle's ONNX")
        self.input = inputs[0]
        self.outputs = list(output_names) if output_names is not None else engine_outputs
        shape = tuple(self.engine.get_tensor_shape(self.input))
        if shape[0] == -1:
            lo, _opt, hi = self.engine.get_tensor_profile_shape(self.input, 0)
            self.min_batch, self.max_shape = int(lo[0]), tuple(hi)
        else:
            self.min_batch, self.max_shape = int(shape[0]), shape
        self.max_batch = int(self.max_shape[0])
        self.dynamic = any(int(d) == -1 for d in shape)  # dynamic inputs: one context per optimisation profile
        self._types = {n: self.engine.get_tensor_dtype(n) for n in names}
        self.stream = _check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        if not self.context.set_input_shape(self.input, self.max_shape):
            raise ArtifactError(f"engine '{engine_path}' refused its own largest input shape {self.max_shape}")
        for name in names:
            dtype = host_dtype(trt, self._types[name])
            count = int(np.prod(self.context.get_tensor_shape(name)))
            nbytes = max(1, count * dtype.itemsize)
            dev = _check(cudart, cudart.cudaMalloc(nbytes), "cudaMalloc")
            host = _check(cudart, cudart.cudaMallocHost(nbytes), "cudaMallocHost")
            self._buffers[name] = (int(dev), int(host), host_view(int(host), nbytes), dtype)
            if not self.context.set_tensor_address(name, int(dev)):
                raise ArtifactError(f"set_tensor_address failed for tensor '{name}'")
        self._shape: tuple | None = None  # input shape of the last execution (graph capture rule)
        gpu = gpu_info() if modules is None else None
        self.device = f"GPU {(gpu or {}).get('name', '?')} ({library} {library_version(trt)}, engine)"

    # -- execution ------------------------------------------------------------------------------

    def _execute(self) -> None:
        if not self.context.execute_async_v3(int(self.stream)):
            raise ArtifactError(f"execute_async_v3 failed: {_clean(' | '.join(self.logger.errors())) or 'no message'}")

    def _drop_graphs(self) -> None:
        for graph_exec in self._graphs.values():
            self.cudart.cudaGraphExecDestroy(graph_exec)
        self._graphs = {}

    def _capture(self, shape: tuple) -> None:
        """Capture one ``execute_async_v3`` on the stream into an executable graph for ``shape``."""
        cudart = self.cudart
        _check(cudart, cudart.cudaStreamBeginCapture(
            self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture")
        ok = self.context.execute_async_v3(int(self.stream))
        graph = _check(cudart, cudart.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")  # always end it
        if not ok:
            cudart.cudaGraphDestroy(graph)
            raise ArtifactError(f"execute_async_v3 failed during CUDA graph capture (the engine may not be stream-"
                                f"capturable; run without --cuda-graph): {_clean(' | '.join(self.logger.errors()))}")
        graph_exec = _check(cudart, cudart.cudaGraphInstantiateWithFlags(graph, 0), "cudaGraphInstantiate")
        _check(cudart, cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")
        self._graphs[shape] = graph_exec

    def _enqueue(self, shape: tuple) -> None:
        """Enqueue one inference of ``shape`` (already set on the context) on the stream."""
        if not self.cuda_graph or self._rtx_graph:
            self._execute()
        elif shape != self._shape or shape not in self._graphs:
            # Shape changed (or first call): the graphs captured so far belong to another context
            # state, so drop them; one plain enqueue does this call's work and TensorRT's deferred
            # shape-dependent work; the graph is captured after it, for the next calls.
            self._drop_graphs()
            self._execute()
            _check(self.cudart, self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
            self._capture(shape)
        else:
            _check(self.cudart, self.cudart.cudaGraphLaunch(self._graphs[shape], self.stream), "cudaGraphLaunch")
        self._shape = shape

    def _set_shape(self, shape: tuple) -> None:
        if not self.context.set_input_shape(self.input, shape):
            raise ArtifactError(f"input shape {shape} is outside the engine's profile (batch {self.min_batch}.."
                                f"{self.max_batch}, {self.max_shape[1:]})")

    def _upload(self, x: np.ndarray) -> None:
        """Copy ``x`` into the input's pinned host buffer and enqueue it to the device buffer."""
        cudart = self.cudart
        dev, host, raw, dtype = self._buffers[self.input]
        data = from_float32(x, dtype, _is_bf16(self._types[self.input])).reshape(-1)
        nbytes = data.nbytes
        raw[:nbytes] = data.view(np.uint8)
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(cudart, cudart.cudaMemcpyAsync(dev, host, nbytes, h2d, self.stream), "cudaMemcpyAsync")

    def _run(self, x: np.ndarray) -> list:
        cudart = self.cudart
        shape = tuple(x.shape)
        self._set_shape(shape)
        self._upload(x)
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._enqueue(shape)
        shapes = {}
        for name in self.outputs:
            out_shape = tuple(self.context.get_tensor_shape(name))
            shapes[name] = out_shape
            odev, ohost, _, odtype = self._buffers[name]
            out_bytes = int(np.prod(out_shape)) * odtype.itemsize
            _check(cudart, cudart.cudaMemcpyAsync(ohost, odev, out_bytes, d2h, self.stream), "cudaMemcpyAsync")
        _check(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        outs = []
        for name in self.outputs:
            _, _, oraw, odtype = self._buffers[name]
            n = int(np.prod(shapes[name]))
            values = oraw[:n * odtype.itemsize].view(odtype).reshape(shapes[name])
            outs.append(to_float32(values, _is_bf16(self._types[name])))  # a copy: the buffer is reused
        return outs

    # -- requests in flight (targets/tensorrt/pool.py) ----------------------------------------------

    def prepare(self, x: np.ndarray) -> None:
        """Set ``x``'s shape and copy it into the pinned input buffer, once, for :meth:`launch`."""
        if not self.min_batch <= len(x) <= self.max_batch:
            raise ArtifactError(f"batch {len(x)} is outside the engine's profile {self.min_batch}..{self.max_batch}")
        self._set_shape(tuple(x.shape))
        self._upload(x)
        _check(self.cudart, self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        self._prepared = tuple(x.shape)

    def launch(self) -> None:
        """Enqueue one inference of the prepared input on this runner's stream, without waiting:
        host-to-device copy (from the pinned buffer), execution (a CUDA graph replay when asked),
        device-to-host copies of every output. :meth:`finish` waits for it."""
        cudart, shape = self.cudart, self._prepared
        dev, host, _, dtype = self._buffers[self.input]
        nbytes = int(np.prod(shape)) * dtype.itemsize
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(cudart, cudart.cudaMemcpyAsync(dev, host, nbytes, h2d, self.stream), "cudaMemcpyAsync")
        self._enqueue(shape)
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.outputs:
            odev, ohost, _, odtype = self._buffers[name]
            out_bytes = int(np.prod(self.context.get_tensor_shape(name))) * odtype.itemsize
            _check(cudart, cudart.cudaMemcpyAsync(ohost, odev, out_bytes, d2h, self.stream), "cudaMemcpyAsync")

    def finish(self) -> None:
        """Wait until everything launched on this runner's stream is done."""
        _check(self.cudart, self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def infer(self, x: np.ndarray) -> list:
        """Outputs for ``x`` (any batch), float32, in :attr:`outputs` order."""
        parts = []
        for start, stop, padded in plan_chunks(len(x), self.min_batch, self.max_batch):
            chunk = x[start:stop]
            if padded > len(chunk):
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], padded - len(chunk), axis=0)])
            parts.append([o[:stop - start] for o in self._run(np.ascontiguousarray(chunk))])
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(p) for p in zip(*parts)]

    def gpu_latency_ms(self, x: np.ndarray, warmup: int = 10, iterations: int = 100) -> list:
        """Per-inference GPU execution times (CUDA events around the enqueue only), in ms."""
        cudart = self.cudart
        if not self.min_batch <= len(x) <= self.max_batch:
            raise ArtifactError(f"timing batch {len(x)} is outside the engine's profile {self.min_batch}..{self.max_batch}")
        self._run(x)  # sets the shape, uploads the input, captures a graph if asked
        shape = tuple(x.shape)
        start = _check(cudart, cudart.cudaEventCreate(), "cudaEventCreate")
        end = _check(cudart, cudart.cudaEventCreate(), "cudaEventCreate")
        try:
            for _ in range(warmup):
                self._enqueue(shape)
            times = []
            for _ in range(iterations):
                _check(cudart, cudart.cudaEventRecord(start, self.stream), "cudaEventRecord")
                self._enqueue(shape)
                _check(cudart, cudart.cudaEventRecord(end, self.stream), "cudaEventRecord")
                _check(cudart, cudart.cudaEventSynchronize(end), "cudaEventSynchronize")
                times.append(float(_check(cudart, cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime")))
            return times
        finally:
            cudart.cudaEventDestroy(start)
            cudart.cudaEventDestroy(end)

    # -- layer profile ---------------------------------------------------------------------------

    def _plain_context(self):
        """A second execution context without TensorRT-RTX's built-in CUDA graph capture, bound to
        the same buffers (the capture strategy is fixed when a context is created)."""
        rc = self.engine.create_runtime_config()
        strategy = getattr(self.trt, "DynamicShapesKernelSpecializationStrategy", None)
        if strategy is not None:
            rc.dynamic_shapes_kernel_specialization_strategy = strategy.EAGER
        rc.cuda_graph_strategy = self.trt.CudaGraphStrategy.DISABLED
        context = self.engine.create_execution_context(rc)
        if context is None:
            raise ArtifactError(f"could not create an execution context for profiling: "
                                f"{_clean(' | '.join(self.logger.errors())) or 'no error message'}")
        for name, (dev, _, _, _) in self._buffers.items():
            if not context.set_tensor_address(name, dev):
                raise ArtifactError(f"set_tensor_address failed for tensor '{name}' (profiling context)")
        return context

    def layer_profile(self, x: np.ndarray, runs: int = 20, node_types: dict | None = None) -> dict:
        """TensorRT's per-layer times for ``x`` grouped by layer type: the report's ``op_profile``.

        ``runs`` synchronous inferences with a ``trt.IProfiler`` attached to the context
        (``IExecutionContext.profiler``, restored to its previous value afterwards); the first run
        is discarded (lazy initialisation, EAGER kernel compilation on TensorRT-RTX). Each run is a
        plain ``execute_async_v3`` and a stream sync, never a CUDA graph, even when the runner was
        made with ``cuda_graph=True``: trtexec turns ``--useCudaGraph`` off whenever its profiler
        is on ("Profiler does not work when CUDA graph is enabled. Ignored --useCudaGraph flag and
        disabled CUDA graph.", samples/trtexec/trtexec.cpp), and with ``enqueue_emits_profile``
        left at True the enqueue itself computes the layer times, which a stream capture cannot
        hold. TensorRT-RTX's built-in capture belongs to the context, so there a second context
        without it is profiled. ``wall_ms`` is each run's enqueue + sync wall time (no copies).
        Layer types: :mod:`.layer_profile` (``node_types``: the bundle's ONNX node op types).
        UNVERIFIED ON HARDWARE, like the rest of this runner.
        """
        import time

        from ...evaluate.profiling import breakdown
        from . import layer_profile as lp

        if runs < 2:
            raise ArtifactError(f"layer profile runs must be 2 or more (the first is discarded), got {runs}")
        if not self.min_batch <= len(x) <= self.max_batch:
            raise ArtifactError(f"profiling batch {len(x)} is outside the engine's profile {self.min_batch}..{self.max_batch}")
        cudart, shape = self.cudart, tuple(x.shape)
        context = self._plain_context() if self._rtx_graph else self.context
        if not context.set_input_shape(self.input, shape):
            raise ArtifactError(f"input shape {shape} is outside the engine's profile")
        if context is self.context:
            self._shape = shape  # graphs captured for another shape are recaptured by the next _enqueue
        self._upload(x)
        collector = lp.make_profiler(self.trt)
        previous = context.profiler
        context.profiler = collector
        per_run, wall = [], []
        try:
            for _ in range(runs):
                t0 = time.perf_counter()
                if not context.execute_async_v3(int(self.stream)):
                    raise ArtifactError(f"execute_async_v3 failed while profiling: "
                                        f"{_clean(' | '.join(self.logger.errors())) or 'no message'}")
                _check(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
                wall.append((time.perf_counter() - t0) * 1e3)
                per_run.append(collector.take())
        finally:
            context.profiler = previous
        per_run, wall = per_run[1:], wall[1:]
        if not any(per_run):
            raise ArtifactError("TensorRT reported no layer times to the profiler (IProfiler.report_layer_time "
                                "was never called)")
        inspector_error = None
        try:
            types = lp.inspector_types(self.trt, self.engine, context)
        except Exception as exc:  # costs the LayerType names only (layers are then typed by name); reported
            types, inspector_error = {}, f"{type(exc).__name__}: {str(exc)[:200]}"
        grouped = [lp.group_by_type(run, types, node_types) for run in per_run]
        result = breakdown(lp.SOURCE, grouped, wall, len(x))
        result["layers"] = len({layer for run in per_run for layer in run})
        result["layer_types_from"] = lp.type_sources({layer for run in per_run for layer in run}, types, node_types)
        if inspector_error:
            result["inspector_error"] = inspector_error
        return result

    def close(self) -> None:
        cudart = getattr(self, "cudart", None)
        if cudart is None:
            return
        self._drop_graphs()
        for dev, host, _, _ in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(dev)
            cudart.cudaFreeHost(host)
        self._buffers = {}
        if getattr(self, "stream", None) is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = self.engine = None


__all__ = ["EngineRunner", "from_float32", "host_dtype", "host_view", "plan_chunks", "to_float32"]
