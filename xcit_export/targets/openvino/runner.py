"""The OpenVINO runner: a compiled IR with one reused ``InferRequest``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ArtifactError, DataError
from ..base import Artifact
from .options import HINTS, _core, check_device_available, last_line, precision_hint


def compile_config(device: str, hint: str, precision_hint: str | None, threads: int | None) -> dict[str, Any]:
    """``compile_model`` properties of a runner; the profiler compiles with the same ones (+ PERF_COUNT)."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    if threads and device.startswith("CPU"):
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def runner_config(device: str, hint: str, inference_precision: str | None, precision: str,
                  threads: int | None) -> dict[str, Any]:
    """``compile_model`` properties of a runner from its parsed options (``hint``: ``latency`` or
    ``throughput``) and its artifact's precision: what :class:`OpenVINORunner` compiles with, and
    what a copy of its IR (``--explain``'s marked graphs) must compile with to run the same way."""
    return compile_config(device, HINTS[hint], precision_hint(inference_precision, precision), threads)


class OpenVINORunner:
    """A compiled IR with one reused ``InferRequest``: ``infer`` copies nothing in, one copy out.

    The arrays ``infer`` returns belong to the caller (later calls do not overwrite them).
    """

    measures_latency = True

    def __init__(self, xml: Path, bin_size: int | None = None, precision: str = "fp32",
                 threads: int | None = None, device: str = "CPU", hint: str = "latency",
                 inference_precision: str | None = None, shapes: str = "static"):
        """Values as :data:`COMMON_OPTIONS` parse them (``load`` receives them parsed)."""
        self.device = device
        self.hint = HINTS[hint]
        xml = Path(xml)
        bin_path = xml.with_suffix(".bin")
        for path in (xml, bin_path):
            if not path.exists():
                raise ArtifactError(f"OpenVINO IR file '{path}' does not exist; rebuild the target (--rebuild)")
        if bin_size is not None and bin_path.stat().st_size != bin_size:
            raise ArtifactError(f"OpenVINO weights '{bin_path}' are {bin_path.stat().st_size} bytes but were "
                                f"built as {bin_size}: the file is truncated or was replaced; rebuild the target "
                                f"(--rebuild)")
        check_device_available(self.device)
        config = runner_config(self.device, hint, inference_precision, precision, threads)
        core = _core()
        try:
            model = core.read_model(str(xml))
        except Exception as exc:
            raise ArtifactError(f"OpenVINO cannot read '{xml}' with '{bin_path}' "
                                f"({last_line(exc)}): the IR is damaged; rebuild the target (--rebuild)") from None
        try:
            self.compiled = core.compile_model(model, self.device, config)
        except Exception as exc:
            raise ArtifactError(f"OpenVINO cannot compile '{xml}' for {self.device} with {config} "
                                f"({last_line(exc)})") from None
        self.threads = threads
        try:
            if self.device.startswith("CPU"):
                self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
            value = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            self.inference_precision = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
        except Exception:
            self.inference_precision = config.get("INFERENCE_PRECISION_HINT") or "device default"
        self.request = self.compiled.create_infer_request()
        self.output_ports = list(self.compiled.outputs)
        self.output_count = len(self.output_ports)
        import openvino as ov

        self._ov = ov
        shape = self.compiled.input(0).get_partial_shape()
        self.static_batch = None if shape[0].is_dynamic else shape[0].get_length()
        self.input_dtype = self.compiled.input(0).get_element_type().to_dtype()
        # A --dynamic-size IR (symbolic height/width): OpenVINO's CPU plugin is faster on static shapes,
        # so by default each input shape gets its own static compile (``reshape`` at first use, cached);
        # ``shapes=dynamic`` runs the dynamic compile instead. ``shape_mode`` says which one is timed.
        size_dynamic = any(shape[i].is_dynamic for i in range(1, len(shape)))
        self.shape_mode = shapes if size_dynamic else "static"
        self._model, self._core, self._config = (model, core, config) if size_dynamic else (None, None, None)
        self._per_shape: dict[tuple, Any] = {}

    def _request_for(self, shape: tuple):
        """The static-shape request for ``shape`` (reshaped from the dynamic IR and compiled once)."""
        request = self._per_shape.get(shape)
        if request is None:
            model = self._model.clone()
            try:
                model.reshape({model.input(0): self._ov.PartialShape(list(shape))})
                compiled = self._core.compile_model(model, self.device, self._config)
            except Exception as exc:
                raise ArtifactError(f"OpenVINO cannot compile this IR for input shape {shape} "
                                    f"({last_line(exc)}); try -O shapes=dynamic") from None
            request = self._per_shape[shape] = compiled.create_infer_request()
        return request

    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        if self.static_batch is not None and len(x) != self.static_batch:
            raise ArtifactError(f"this IR has a static batch {self.static_batch}; got a batch of {len(x)} "
                                f"(rebuild with --batch {len(x)} or without --batch for a dynamic batch)")
        if x.dtype != self.input_dtype:
            if not (np.issubdtype(x.dtype, np.floating) and np.issubdtype(self.input_dtype, np.floating)):
                raise DataError(f"this IR takes {self.input_dtype} input, got {x.dtype}: convert the data to the "
                                f"model's --input-format")
            x = x.astype(self.input_dtype)
        if not x.flags.c_contiguous or not x.flags.writeable:
            # ov.Tensor(shared_memory=True) needs a writeable C-contiguous buffer; a read-only array
            # (e.g. one Ray hands out from its object store) is copied once here.
            x = np.array(x, order="C")
        # Zero-copy in: the request reads the caller's buffer (``shared_memory=True``); the call is
        # synchronous, so the buffer outlives its use. Plain ``infer()`` on the reused request, with
        # no input dict and no OVDict of results, is the cheapest Python call OpenVINO offers
        # (BENCHMARKS.md, "Runner overhead"). One copy out: the request writes its output tensors
        # in place on the next call, and callers (run_in_batches, reports) keep what infer returned.
        request = self.request if self._model is None or self.shape_mode == "dynamic" else self._request_for(x.shape)
        request.set_input_tensor(self._ov.Tensor(x, shared_memory=True))
        request.infer()
        return [request.get_output_tensor(i).data.copy() for i in range(self.output_count)]

    def close(self) -> None:
        self.request = None
        self.compiled = None
        self._per_shape = {}
        self._model = None


def load(artifact: Artifact, threads: int | None = None, **options) -> OpenVINORunner:
    """Open the IR with the parsed options; build-only ones (subset_size, preset...) are ignored."""
    return OpenVINORunner(artifact.path, bin_size=artifact.metadata.get("bin_size_bytes"),
                          precision=artifact.metadata.get("precision", "fp32"), threads=threads,
                          device=options["device"], hint=options["hint"],
                          inference_precision=options["inference_precision"], shapes=options["shapes"])


def open_pool(artifact: Artifact, x: np.ndarray, streams: int | None = None, threads: int | None = None,
              cpu_streams: int | None = None, **options) -> Any:
    """Requests in flight on the IR (``Target.pool``; :mod:`.pool`): the runner's device, precision
    and threads, ``PERFORMANCE_HINT=THROUGHPUT``; ``streams`` requests (None: the compiled model's
    optimal number), on ``cpu_streams`` CPU streams (None: the hint decides). Options parsed, as
    :func:`load` receives them."""
    from .pool import OpenVINOPool

    device = options["device"]
    check_device_available(device)
    precision = precision_hint(options["inference_precision"], artifact.metadata.get("precision", "fp32"))
    return OpenVINOPool(_core(), artifact.path, x, device, compile_config(device, "THROUGHPUT", precision, threads),
                        requests=streams, cpu_streams=cpu_streams)
