"""OpenVINO requests in flight: the multi-stream and offline scenarios' mechanism for the IR targets.

What ``benchmark_app -hint throughput`` does (openvino/tools/benchmark/benchmark.py,
``async_inference_only``): the IR is compiled with ``PERFORMANCE_HINT=THROUGHPUT`` (the CPU plugin
then splits its cores into several *streams*, each running one request at a time), an
``AsyncInferQueue`` holds the requests, each request's input tensor is filled once, and the loop
waits for an idle request (``get_idle_request_id``) and starts it (``start_async``) again and
again; a callback on each completion records the time. ``requests`` None asks for the compiled
model's ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` (benchmark_app's default ``-nireq``); ``cpu_streams``
sets ``NUM_STREAMS`` instead of leaving it to the hint (a point of the offline search). Like
benchmark_app, no Python callback runs on completion (one would make every request wait for the
GIL before it is handed back): a request's latency is OpenVINO's own (``InferRequest.latency``),
read when the request comes back idle, and its completion time is its start plus that latency.

The runner's other properties (device, ``INFERENCE_PRECISION_HINT``, ``INFERENCE_NUM_THREADS``)
are the single-request runner's (:func:`~xcit_export.targets.openvino.compile_config`), so the
pool computes what the evaluated target computes; :meth:`OpenVINOPool.outputs` lets the scenario
pass prove it on one request.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import ArtifactError


class OpenVINOPool:
    """An ``AsyncInferQueue`` over the IR at ``xml``, every request's input set to ``x``.

    ``config`` holds the single-request runner's compile properties with ``PERFORMANCE_HINT``
    set to ``THROUGHPUT`` (``openvino.open_pool`` makes it); ``core`` is the process's ``ov.Core``.
    """

    def __init__(self, core, xml: Path, x: np.ndarray, device: str, config: dict, requests: int | None = None,
                 cpu_streams: int | None = None):
        import openvino as ov

        self.device = device
        config = dict(config)
        if cpu_streams:
            config["NUM_STREAMS"] = int(cpu_streams)
        model = core.read_model(str(xml))
        shape = model.input(0).get_partial_shape()
        self.reshaped = shape.is_dynamic  # a dynamic IR is compiled static at the scenario's shape
        if shape.is_dynamic:
            model.reshape({model.input(0): ov.PartialShape(list(x.shape))})
        try:
            self.compiled = core.compile_model(model, self.device, config)
        except Exception as exc:
            raise ArtifactError(f"OpenVINO cannot compile '{xml}' for {self.device} with {config} "
                                f"({str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__})"
                                ) from None
        optimal = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.streams = int(requests or optimal)
        self.batch = int(len(x))
        self.queue = ov.AsyncInferQueue(self.compiled, self.streams)
        x = np.ascontiguousarray(x, dtype=self.compiled.input(0).get_element_type().to_dtype())
        for i in range(len(self.queue)):
            self.queue[i].set_input_tensor(ov.Tensor(x.copy()))  # each request its own buffer, filled once
        self._in_flight: dict = {}  # request id -> (done, start)
        try:
            self.cpu_streams = int(self.compiled.get_property("NUM_STREAMS"))
        except Exception:  # a device without the property
            self.cpu_streams = None
        self._config = {k: str(v) for k, v in config.items()}
        self._optimal = optimal

    def _collect(self, rid: int) -> None:
        """Report request ``rid``'s last run, if it had one, now that it is idle again."""
        pending = self._in_flight.pop(rid, None)
        if pending is not None:
            done, start = pending
            done(start, start + self.queue[rid].latency / 1e3)

    def submit(self, done: Callable[[float, float], None]) -> None:
        # benchmark_app's loop: wait for an idle request, start it. Only this thread starts requests, so
        # the one start_async() takes is the one get_idle_request_id() named.
        rid = self.queue.get_idle_request_id()
        self._collect(rid)
        self._in_flight[rid] = (done, time.perf_counter())
        self.queue.start_async()

    def wait_all(self) -> None:
        self.queue.wait_all()
        for rid in list(self._in_flight):
            self._collect(rid)

    def outputs(self) -> list[np.ndarray]:
        request = self.queue[0]
        request.infer()
        return [request.get_output_tensor(i).data.copy() for i in range(len(self.compiled.outputs))]

    def describe(self) -> dict:
        return {"mechanism": f"OpenVINO AsyncInferQueue, {self.streams} requests on {self.cpu_streams} "
                             f"{self.device} stream(s), PERFORMANCE_HINT=THROUGHPUT",
                "requests": self.streams, "cpu_streams": self.cpu_streams,
                "optimal_requests": self._optimal, **({"reshaped_static": True} if self.reshaped else {})}

    def close(self) -> None:
        if getattr(self, "queue", None) is not None:
            self.queue.wait_all()
        self.queue = None
        self.compiled = None

