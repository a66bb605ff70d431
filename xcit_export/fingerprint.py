"""Device fingerprint stored in every report: CPU model and ISA flags, GPU, OS, library versions."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import shutil
import struct
import subprocess
from dataclasses import dataclass

# ISA features that decide INT8/FP16 speed on CPUs (VNNI/AMX accelerate INT8 dot products; on
# aarch64 the dot-product (asimddp) and int8 matrix-multiply (i8mm) extensions). Linux's names.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "asimd",
             "asimddp", "i8mm")

LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxsim", "openvino", "nncf", "nvidia-modelopt", "tensorrt",
             "tensorrt_rtx_cu13", "tensorrt_rtx_cu12", "numpy")

# x86 CPUID bits: (leaf, subleaf, register index in EAX/EBX/ECX/EDX, bit) -> flag (Intel SDM vol. 2A,
# CPUID, tables 3-8 and 3-17). Each one is also gated on the OS saving the register state (XCR0).
_X86_BITS = {
    "avx2": (7, 0, 1, 5), "avx512f": (7, 0, 1, 16), "avx512_vnni": (7, 0, 2, 11),
    "amx_tile": (7, 0, 3, 24), "amx_int8": (7, 0, 3, 25), "avx_vnni": (7, 1, 0, 4), "avx512_bf16": (7, 1, 0, 5),
}
_XCR0_AVX = 0x6  # XMM | YMM state
_XCR0_AVX512 = 0xE6  # + opmask, ZMM_Hi256, Hi16_ZMM
_XCR0_AMX = 0x60000  # XTILECFG | XTILEDATA
_NEEDS_XCR0 = {"avx2": _XCR0_AVX, "avx_vnni": _XCR0_AVX, "avx512f": _XCR0_AVX512, "avx512_vnni": _XCR0_AVX512,
               "avx512_bf16": _XCR0_AVX512, "amx_tile": _XCR0_AMX, "amx_int8": _XCR0_AMX}
# aarch64 HWCAP bits (Linux arch/arm64/include/uapi/asm/hwcap.h).
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_ARM_HWCAP = {"asimd": (_AT_HWCAP, 1 << 1), "asimddp": (_AT_HWCAP, 1 << 20), "i8mm": (_AT_HWCAP2, 1 << 13)}

# x86-64 System V machine code, run through ctypes from an executable anonymous page:
#   cpuid(leaf=edi, subleaf=esi, out=rdx): push rbx; mov eax,edi; mov ecx,esi; mov r8,rdx; cpuid;
#     mov [r8],eax; mov [r8+4],ebx; mov [r8+8],ecx; mov [r8+12],edx; pop rbx; ret
#   xgetbv(): xor ecx,ecx; xgetbv; shl rdx,32; or rax,rdx; ret
_CPUID_CODE = bytes([0x53, 0x89, 0xF8, 0x89, 0xF1, 0x49, 0x89, 0xD0, 0x0F, 0xA2, 0x41, 0x89, 0x00, 0x41, 0x89,
                     0x58, 0x04, 0x41, 0x89, 0x48, 0x08, 0x41, 0x89, 0x50, 0x0C, 0x5B, 0xC3])
_XGETBV_CODE = bytes([0x31, 0xC9, 0x0F, 0x01, 0xD0, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0xC3])


@dataclass(frozen=True)
class CpuCapabilities:
    """What the CPU can do for INT8, as the runtimes see it.

    ``flags``: the :data:`CPU_FLAGS` present; ``source``: where they were read (``cpuid``,
    ``auxv``, ``/proc/cpuinfo``). On x86 this is the CPUID instruction itself, as onnxruntime's
    MLAS and OpenVINO's oneDNN read it, not ``/proc/cpuinfo``: under an emulator such as
    ``qemu-x86_64 -cpu Haswell`` only CPUID tells the truth (the kernel's file describes the host).
    """

    arch: str
    flags: tuple
    source: str

    @property
    def vnni(self) -> bool:
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(self.flags))

    @property
    def isa_class(self) -> str:
        """The INT8-relevant class of this CPU: ``x86-vnni``, ``x86-avx2``, ``x86``, ``arm64-dotprod``,
        ``arm64`` or the bare architecture. Artifacts whose numbers depend on it are keyed by it."""
        if self.arch in ("x86_64", "amd64", "i386", "i686", "x86"):
            return "x86-vnni" if self.vnni else "x86-avx2" if "avx2" in self.flags else "x86"
        if self.arch in ("aarch64", "arm64"):
            return "arm64-dotprod" if "asimddp" in self.flags else "arm64"
        return self.arch or "unknown"


def _x86_cpuid_flags() -> list:
    """Flags from the CPUID/XGETBV instructions (x86-64 only); raises OSError where that cannot run."""
    import ctypes
    import mmap

    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    try:
        page.write(_CPUID_CODE + _XGETBV_CODE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
        regs_t = ctypes.c_uint32 * 4
        cpuid = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(regs_t))(addr)

        def query(leaf: int, sub: int = 0) -> list:
            regs = regs_t()
            cpuid(leaf, sub, ctypes.byref(regs))
            return list(regs)

        max_leaf = query(0)[0]
        osxsave = bool(query(1)[2] & (1 << 27)) if max_leaf >= 1 else False
        xcr0 = ctypes.CFUNCTYPE(ctypes.c_uint64)(addr + len(_CPUID_CODE))() if osxsave else 0
        leaves = {(7, 0): query(7, 0)} if max_leaf >= 7 else {}
        max_sub7 = leaves[(7, 0)][0] if leaves else -1  # leaf 7 reports its last subleaf in EAX
        flags = []
        for name, (leaf, sub, reg, bit) in _X86_BITS.items():
            if leaf > max_leaf or (leaf == 7 and sub > max_sub7):
                continue
            if (leaf, sub) not in leaves:
                leaves[(leaf, sub)] = query(leaf, sub)
            regs = leaves[(leaf, sub)]
            if regs[reg] & (1 << bit) and (xcr0 & _NEEDS_XCR0[name]) == _NEEDS_XCR0[name]:
                flags.append(name)
        del cpuid, addr
        return flags
    finally:
        try:
            page.close()
        except BufferError:  # a ctypes view is still alive; the page is freed with it
            pass


def _auxv_hwcaps() -> dict:
    """``AT_HWCAP``/``AT_HWCAP2`` from ``/proc/self/auxv`` (64-bit little-endian pairs)."""
    with open("/proc/self/auxv", "rb") as fh:
        raw = fh.read()
    words = struct.unpack("<%dQ" % (len(raw) // 8), raw[:len(raw) // 8 * 8])
    return {words[i]: words[i + 1] for i in range(0, len(words) - 1, 2)}


@functools.lru_cache(maxsize=None)
def cpu_capabilities() -> CpuCapabilities:
    """The CPU's INT8-relevant capabilities, read once per process (see :class:`CpuCapabilities`)."""
    arch = platform.machine().lower()
    _, proc_flags = _cpuinfo()
    if arch in ("x86_64", "amd64"):
        try:
            return CpuCapabilities(arch, tuple(f for f in CPU_FLAGS if f in _x86_cpuid_flags()), "cpuid")
        except (OSError, ValueError, AttributeError):  # no executable mapping allowed: trust the kernel
            pass
    elif arch in ("aarch64", "arm64"):
        try:
            caps = _auxv_hwcaps()
            found = [f for f, (key, bit) in _ARM_HWCAP.items() if caps.get(key, 0) & bit]
            return CpuCapabilities(arch, tuple(f for f in CPU_FLAGS if f in found), "auxv")
        except (OSError, struct.error):
            pass
    return CpuCapabilities(arch, tuple(proc_flags), "/proc/cpuinfo")


def _cpuinfo() -> tuple:
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
    model, _ = _cpuinfo()
    caps = cpu_capabilities()
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "cpu_flags": list(caps.flags),
        "cpu_flags_source": caps.source,
        "isa_class": caps.isa_class,
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "gpus": _gpus(),
        "libraries": library_versions(),
    }
