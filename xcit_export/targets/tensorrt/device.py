"""TensorRT libraries and the CUDA GPU on this machine (device side: no torch, onnx or click).

Which TensorRT library imports, cuda-python's runtime bindings, the GPU's name and compute
capability, and a TensorRT logger that keeps messages for our errors. Shared by the engine build
(:mod:`.engine`), the engine runner (:mod:`.runner`) and ``device-check``.
"""

from __future__ import annotations

import importlib

# The cuda-python that matches the device's CUDA: its major version must not be newer than the
# driver's CUDA (cuda-python 13.x needs a CUDA 13 driver; JetPack 6 ships CUDA 12.6).
CUDA_PYTHON_HINT = ("cuda-python matching the device's CUDA: JetPack 6 (CUDA 12.6): pip install 'cuda-python==12.6.*'; "
                    "JetPack 7 (CUDA 13.0): pip install 'cuda-python==13.0.*'; other machines: the CUDA version "
                    "nvidia-smi reports")


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


def cuda_python_version() -> str | None:
    """The installed cuda-python (or cuda-bindings) version, for messages."""
    from importlib import metadata

    for dist in ("cuda-python", "cuda-bindings"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def gpu_status(device: int = 0) -> tuple:
    """``(gpu, problem)``: name and compute capability of CUDA device ``device`` (or None), and what
    stops cuda-python from using it (None when nothing does).

    cuda-python first (the runner needs it anyway). Its failure is kept, not turned into "no GPU":
    a cuda-python built for a newer CUDA than the driver's returns ``cudaErrorInsufficientDriver``
    from ``cudaGetDeviceCount`` (cuda-python 13.x on JetPack 6's CUDA 12.6). ``nvidia-smi`` is then
    asked, as it is when cuda-python is missing (on Jetsons before JetPack 6 it may be absent too).
    """
    problem = None
    cudart = _cudart()
    if cudart is not None:
        version = cuda_python_version() or "?"
        try:
            err, count = cudart.cudaGetDeviceCount()
            if err != cudart.cudaError_t.cudaSuccess:
                name = getattr(err, "name", str(err))
                problem = f"cuda-python {version}: cudaGetDeviceCount() returned {name}"
                if "InsufficientDriver" in name or "CompatNotSupported" in name:
                    problem += (f" (no CUDA driver here, or one older than this cuda-python needs; on a GPU "
                                f"machine install the {CUDA_PYTHON_HINT})")
            elif count > device:
                err, prop = cudart.cudaGetDeviceProperties(device)
                if err == cudart.cudaError_t.cudaSuccess:
                    raw = prop.name
                    name = raw.decode(errors="replace").rstrip("\x00") if isinstance(raw, bytes) else str(raw)
                    return {"name": name, "compute_capability": f"{prop.major}.{prop.minor}"}, None
                problem = f"cuda-python {version}: cudaGetDeviceProperties({device}) returned {getattr(err, 'name', err)}"
        except Exception as exc:  # a broken binding must not read as "no GPU"
            problem = f"cuda-python {version} failed: {type(exc).__name__}: {exc}"
    from ...fingerprint import _gpus

    rows = _gpus()
    if len(rows) > device:
        parts = [p.strip() for p in rows[device].split(",")]
        if len(parts) >= 2:
            return {"name": parts[0], "compute_capability": parts[1]}, problem
    return None, problem


def engine_status(library: str) -> tuple:
    """``(trt, gpu, why)``: the ``library`` module (``tensorrt`` or ``tensorrt_rtx``) or None, the
    CUDA GPU (:func:`gpu_status`) or None, and why an engine cannot run on this machine, or None
    when it can: it needs the library, a CUDA GPU that cuda-python can use, and cuda-python."""
    trt = import_library(library)
    if trt is None:
        return None, None, f"{library} is not installed"
    gpu, problem = gpu_status()
    if problem:
        return trt, gpu, problem
    if gpu is None:
        return trt, None, f"no CUDA GPU here ({library} {library_version(trt)} is installed)"
    if _cudart() is None:
        return trt, gpu, f"cuda-python is not installed (install the {CUDA_PYTHON_HINT})"
    return trt, gpu, None


def engine_unavailable_reason(library: str) -> str | None:
    """Why an engine of ``library`` cannot run on this machine, or None when it can."""
    return engine_status(library)[2]


def gpu_info(device: int = 0) -> dict | None:
    """Name and compute capability of CUDA device ``device``, or None (see :func:`gpu_status`)."""
    return gpu_status(device)[0]


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


