"""TensorRT libraries and the CUDA GPU on this machine (device side: no torch, onnx or click).

Which TensorRT library imports, cuda-python's runtime bindings, the GPU's name and compute
capability, and a TensorRT logger that keeps messages for our errors. Shared by the engine build
(:mod:`.engine`), the engine runner (:mod:`.runner`) and ``device-check``.
"""

from __future__ import annotations

import importlib

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
    from ...fingerprint import _gpus

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


