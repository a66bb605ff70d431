"""The engine runner: a serialized TensorRT / TensorRT-RTX engine on a CUDA GPU (device side)."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ArtifactError, BackendUnavailableError
from .device import _clean, _cudart, _make_logger, gpu_info, import_library, library_version


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
