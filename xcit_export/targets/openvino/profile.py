"""Per-operator-type time from OpenVINO's performance counters."""

from __future__ import annotations

import numpy as np

from ..base import Artifact
from .options import HINTS, _core, check_device_available, precision_hint
from .runner import compile_config


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

    from ...evaluate.profiling import DEFAULT_RUNS, OUTSIDE_OPERATORS, breakdown

    runs = runs or DEFAULT_RUNS
    device = options["device"]
    check_device_available(device)
    config = compile_config(device, HINTS[options["hint"]],
                            precision_hint(options["inference_precision"], artifact.metadata.get("precision", "fp32")),
                            threads)
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
