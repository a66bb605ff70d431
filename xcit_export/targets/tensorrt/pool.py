"""TensorRT requests in flight: several execution contexts, each on its own CUDA stream (the
multi-stream and offline scenarios of ``device-check`` on the device).

UNVERIFIED ON HARDWARE, like :mod:`.runner` whose pieces it drives: written against NVIDIA's
documentation and checked against the recording double of tests/targets/test_trt_runner.py only.

What the documentation asks, and how this pool does it:

* "Multiple execution contexts may exist for one ICudaEngine instance, allowing the same engine to
  be used for the execution of multiple batches simultaneously. If the engine supports dynamic
  shapes, each execution context in concurrent use must use a separate optimization profile"
  (``nvinfer1::IExecutionContext``, NvInferRuntime.h, TensorRT 10.x). Our engines have one
  profile, so for an engine with a dynamic input (``--batch`` not given, or ``--dynamic-size``)
  each stream gets its own deserialized copy of the engine (what ``trtexec --streams=N`` does:
  "Instantiate N engines to use concurrently", and NVIDIA/TensorRT#1590 on why); an engine with
  static input shapes gets N contexts of one engine.
* "It is recommended that each IExecutionContext object should use a unique CUDA stream": each
  slot is an :class:`~.runner.EngineRunner` with its own ``cudaStreamCreate`` stream, device and
  pinned host buffers, and (``cuda_graph=True``) its own CUDA graph, captured after one plain
  ``execute_async_v3`` as TensorRT's best-practices guide ("CUDA Graphs") asks.
* One host thread issues everything: :meth:`EnginePool.submit` launches host-to-device copy,
  execution and device-to-host copies on the next slot's stream without waiting
  (``cudaMemcpyAsync`` on pinned memory, ``execute_async_v3``/``cudaGraphLaunch``), first waiting
  (``cudaStreamSynchronize``) for that slot's previous request if it is still in flight. Requests
  on different streams overlap on the GPU; no Python thread has to hold the GIL while one waits.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .runner import EngineRunner, _is_bf16, to_float32


class EnginePool:
    """``streams`` :class:`EngineRunner` slots (contexts + CUDA streams) on the input ``x``."""

    def __init__(self, engine_path: Path, library: str, x: np.ndarray, streams: int = 2, cuda_graph: bool = True,
                 output_names: Sequence[str] | None = None, modules: tuple | None = None):
        self.streams = int(streams)
        self.batch = int(len(x))
        self.cuda_graph = bool(cuda_graph)
        self.slots: list = []
        self._pending: list = [None] * self.streams  # per slot: (done, t_start) of the request in flight
        self._order: list = []  # slots with a request in flight, oldest first
        self._next = 0
        try:
            first = EngineRunner(engine_path, library, cuda_graph=cuda_graph, output_names=output_names,
                                 modules=modules)
            self.slots.append(first)
            self.copies = 1
            for _ in range(1, self.streams):
                shared = None if first.dynamic else first
                self.slots.append(EngineRunner(engine_path, library, cuda_graph=cuda_graph, output_names=output_names,
                                               modules=modules, shared=shared))
                self.copies += shared is None
            for slot in self.slots:
                slot.prepare(np.ascontiguousarray(x))
        except Exception:
            self.close()
            raise
        self.device = first.device

    def _finish(self, i: int) -> None:
        pending = self._pending[i]
        if pending is None:
            return
        self.slots[i].finish()
        end = time.perf_counter()
        self._pending[i] = None
        self._order.remove(i)
        done, start = pending
        done(start, end)

    def submit(self, done: Callable[[float, float], None]) -> None:
        i = self._next
        self._next = (i + 1) % self.streams
        self._finish(i)  # this slot's previous request, if still in flight
        start = time.perf_counter()
        self.slots[i].launch()
        self._pending[i] = (done, start)
        self._order.append(i)

    def wait_all(self) -> None:
        for i in list(self._order):
            self._finish(i)

    def outputs(self) -> list:
        self.wait_all()
        slot = self.slots[0]
        slot.launch()
        slot.finish()
        outs = []
        for name in slot.outputs:
            _, _, raw, dtype = slot._buffers[name]
            shape = tuple(slot.context.get_tensor_shape(name))
            n = int(np.prod(shape))
            outs.append(to_float32(raw[:n * dtype.itemsize].view(dtype).reshape(shape), _is_bf16(slot._types[name])))
        return outs

    def describe(self) -> dict:
        how = ("one engine, one execution context per stream" if self.copies == 1 else
               f"{self.copies} engine copies (a dynamic-shape engine's single optimisation profile serves one "
               f"context at a time)")
        return {"mechanism": f"TensorRT: {self.streams} execution contexts on {self.streams} CUDA streams, "
                             f"{'CUDA graphs' if self.cuda_graph else 'no CUDA graphs'}; {how}",
                "requests": self.streams, "cuda_graph": self.cuda_graph, "engine_copies": self.copies}

    def close(self) -> None:
        try:
            self.wait_all()
        except Exception:  # closing after a failure: free what can be freed
            pass
        for slot in reversed(self.slots):
            slot.close()
        self.slots = []


__all__ = ["EnginePool"]
