"""Device fingerprint stored in every report: CPU model and ISA flags, GPU, OS, library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess

# ISA features that decide INT8/FP16 speed on CPUs (VNNI/AMX accelerate INT8 dot products).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "neon", "asimddp")

LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxsim", "openvino", "nncf", "nvidia-modelopt", "tensorrt",
             "tensorrt_rtx_cu13", "tensorrt_rtx_cu12", "numpy")


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and value.strip():
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        pass
    return model, [f for f in CPU_FLAGS if f in flags]


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        res = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return [line.strip() for line in res.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


def device_fingerprint() -> dict:
    model, flags = _cpuinfo()
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "cpu_flags": flags,
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "gpus": _gpus(),
        "libraries": library_versions(),
    }
