"""What the machine's clocks and temperatures were, where the OS exposes them (device side too).

A sustained scenario (``--sustain``) records :func:`snapshot` before and after it, so a figure
that drifted can be read beside the CPU frequency that fell or the temperature that rose. Sources,
all read-only files, each optional:

* CPU frequency: ``/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq`` (kHz; the cpufreq
  driver's view), else ``/proc/cpuinfo``'s ``cpu MHz`` (x86; a virtual machine often reports its
  nominal clock there);
* temperatures: ``/sys/class/thermal/thermal_zone*/{type,temp}`` (millidegrees; a Jetson's ``cpu``,
  ``gpu``, ``soc0``..., ``tj``), and ``/sys/class/hwmon/hwmon*/{name,temp*_input}`` (``k10temp`` on
  AMD, ``coretemp`` on Intel);
* other clocks: ``/sys/class/devfreq/*/cur_freq`` (Hz; a Jetson's GPU ``17000000.gpu`` or
  ``17000000.ga10b``, and its memory controller where the kernel exposes it).

Whatever is missing is left out, and an empty snapshot says so plainly (a container often sees
none of these). Device-side module: Python 3.8, standard library only.
"""

from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _number(path: str) -> Optional[float]:
    text = _read(path)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def cpu_mhz(root: str = "/") -> Optional[dict]:
    """Per-core CPU frequency now: ``{"source", "min", "mean", "max", "cores"}`` in MHz, or None."""
    values: List[float] = []
    source = "cpufreq scaling_cur_freq"
    for path in sorted(glob.glob(os.path.join(root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"))):
        khz = _number(path)
        if khz is not None:
            values.append(khz / 1e3)
    if not values:
        source = "/proc/cpuinfo cpu MHz"
        text = _read(os.path.join(root, "proc/cpuinfo")) or ""
        for line in text.splitlines():
            if line.lower().startswith("cpu mhz"):
                try:
                    values.append(float(line.split(":", 1)[1]))
                except (IndexError, ValueError):
                    pass
    if not values:
        return None
    return {"source": source, "cores": len(values), "min": round(min(values), 1),
            "mean": round(sum(values) / len(values), 1), "max": round(max(values), 1)}


def temperatures_c(root: str = "/") -> Dict[str, float]:
    """Every readable temperature in degrees C, named ``thermal:<type>`` or ``hwmon:<name>:<label>``."""
    out: Dict[str, float] = {}
    for zone in sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*"))):
        kind = _read(os.path.join(zone, "type")) or os.path.basename(zone)
        milli = _number(os.path.join(zone, "temp"))
        # a sensor that is off reads a sentinel (Jetson CV clusters: -256 C); keep only plausible values
        if milli is not None and -40 <= milli / 1e3 <= 150:
            out[f"thermal:{kind}"] = round(milli / 1e3, 1)
    for hw in sorted(glob.glob(os.path.join(root, "sys/class/hwmon/hwmon*"))):
        name = _read(os.path.join(hw, "name")) or os.path.basename(hw)
        for inp in sorted(glob.glob(os.path.join(hw, "temp*_input"))):
            label = _read(inp.replace("_input", "_label")) or os.path.basename(inp).split("_")[0]
            milli = _number(inp)
            if milli is not None and -40 <= milli / 1e3 <= 150:
                out[f"hwmon:{name}:{label}"] = round(milli / 1e3, 1)
    return out


def devfreq_mhz(root: str = "/") -> Dict[str, float]:
    """Current frequency of every devfreq device (a Jetson's GPU, memory controller) in MHz."""
    out: Dict[str, float] = {}
    for dev in sorted(glob.glob(os.path.join(root, "sys/class/devfreq/*"))):
        hz = _number(os.path.join(dev, "cur_freq"))
        if hz is not None:
            out[os.path.basename(dev)] = round(hz / 1e6, 1)
    return out


def snapshot(root: str = "/") -> dict:
    """Clocks and temperatures now; ``{"available": False, "reason": ...}`` when the OS exposes none."""
    out: dict = {}
    cpu = cpu_mhz(root)
    if cpu:
        out["cpu_mhz"] = cpu
    temps = temperatures_c(root)
    if temps:
        out["temperatures_c"] = temps
    clocks = devfreq_mhz(root)
    if clocks:
        out["devfreq_mhz"] = clocks
    if "temperatures_c" not in out:
        out["temperatures_note"] = ("not available here: no readable /sys/class/thermal or /sys/class/hwmon "
                                    "temperature (a container or virtual machine often has none)")
    if not out.get("cpu_mhz") and not temps and not clocks:
        return {"available": False, "reason": "not available here: no cpufreq, /proc/cpuinfo MHz, thermal zone, "
                                              "hwmon or devfreq reading"}
    return out


__all__ = ["cpu_mhz", "devfreq_mhz", "snapshot", "temperatures_c"]
