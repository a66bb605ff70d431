"""onnxruntime requests in flight: concurrent ``run`` calls on one session (the multi-stream and
offline scenarios' mechanism for the onnxruntime targets).

``InferenceSession::Run()`` "is guaranteed to be thread-safe meaning multiple threads can call this
function concurrently" (microsoft/onnxruntime PR #19301, commit 674afbe), and the Python binding
releases the GIL while it runs, so ``streams``
Python threads each calling ``run`` keep that many inferences in flight. The session's intra-op
pool is shared by those calls, so each gets ``threads // streams`` intra-op threads (at least one:
the calling thread itself), which is how a server splits a CPU between concurrent requests;
batching is the other axis, searched by the offline scenario on a dynamic-batch artifact.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import ArtifactError


class OnnxRuntimePool:
    """``streams`` worker threads calling ``run`` on one session, all on the input ``x``."""

    def __init__(self, path: Path, x: np.ndarray, session_options: Callable[[int], Any], streams: int | None = None,
                 threads: int | None = None):
        import onnxruntime as ort

        cores = threads or 1
        self.streams = int(streams or cores)
        self.batch = int(len(x))
        self.intra = max(1, cores // self.streams)
        try:
            self.session = ort.InferenceSession(str(path), session_options(self.intra),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"onnxruntime cannot load '{path}': {str(exc).splitlines()[0][:300]}") from None
        self.feed = {self.session.get_inputs()[0].name: np.ascontiguousarray(x)}
        self.names = [o.name for o in self.session.get_outputs()]
        self.executor = ThreadPoolExecutor(max_workers=self.streams, thread_name_prefix="xcit-ort-pool")
        self.slots = threading.Semaphore(self.streams)
        self.pending: set = set()
        self.lock = threading.Lock()
        self.error: BaseException | None = None

    def _run(self, done: Callable[[float, float], None], start: float) -> None:
        try:
            self.session.run(self.names, self.feed)
            done(start, time.perf_counter())
        except BaseException as exc:  # surfaced by the next submit or wait_all
            self.error = exc
        finally:
            self.slots.release()

    def _raise(self) -> None:
        if self.error is not None:
            exc, self.error = self.error, None
            raise ArtifactError(f"onnxruntime run failed in a concurrent request: {type(exc).__name__}: {exc}")

    def submit(self, done: Callable[[float, float], None]) -> None:
        self._raise()
        self.slots.acquire()  # blocks while `streams` requests are in flight
        future = self.executor.submit(self._run, done, time.perf_counter())
        with self.lock:
            self.pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future) -> None:
        with self.lock:
            self.pending.discard(future)

    def wait_all(self) -> None:
        while True:
            with self.lock:
                futures = list(self.pending)
            if not futures:
                break
            for f in futures:
                f.result()
        self._raise()

    def outputs(self) -> list[np.ndarray]:
        return [np.array(o) for o in self.session.run(self.names, self.feed)]

    def describe(self) -> dict:
        return {"mechanism": f"onnxruntime: {self.streams} concurrent run() calls on one session, "
                             f"{self.intra} intra-op thread(s) each",
                "requests": self.streams, "intra_op_threads": self.intra}

    def close(self) -> None:
        if getattr(self, "executor", None) is not None:
            self.executor.shutdown(wait=True)
            self.executor = None
        self.session = None

