"""Energy where the device tells it: average power and millijoules per image during a scenario.

Three sources, tried in this order by :func:`meter`, each read without any extra package:

* **tegrastats** (Jetson): the utility NVIDIA ships with Jetson Linux prints one line per interval
  with every power rail as ``NAME current/average`` in milliwatts: ``VDD_IN 4714mW/4714mW`` on
  JetPack 5 and 6 (L4T r35/r36), ``VDD_IN 14025/14416`` and ``POM_5V_IN 4520/4680`` (no unit) on
  older ones ("[VDD_name] X/Y: X = current power consumption in milliwatts, Y = average", Jetson
  Linux Developer Guide, tegrastats utility). :func:`parse_tegrastats` reads the rails (and the
  temperatures, ``name@42.5C``); :class:`TegrastatsRecorder` runs ``tegrastats --interval MS`` for
  the scenario and averages the *current* values it printed (its own running average starts at
  its launch, not at the scenario's).
* **INA3221 sysfs** (Jetson without tegrastats): the kernel's ina3221 hwmon driver exposes each
  channel's label (``in1_label``), bus voltage in mV (``in1_input``) and current in mA
  (``curr1_input``) (Linux Documentation/hwmon/ina3221.rst); :class:`SysfsPowerRecorder` samples
  them (power = V x I) in a thread. JetPack 5/6 put them under
  ``/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*``.
* **RAPL** (Linux x86): ``/sys/class/powercap/intel-rapl:N/energy_uj`` counts the package's energy
  in microjoules (AMD Zen too, through the same powercap interface); read before and after, with
  one wrap at ``max_energy_range_uj`` allowed. Current kernels let only root read it (the fix for
  CVE-2020-8694), which :func:`meter` says plainly when it is so.

The total: a module's input rail where it has one (``VDD_IN`` on Orin NX/Nano and Xavier NX,
``POM_5V_IN`` on Nano/TX1), else the sum of its named rails (AGX Orin: ``VDD_GPU_SOC``,
``VDD_CPU_CV``, ``VIN_SYS_5V0``, ``VDDQ_VDD2_1V8AO``; ``NC`` channels are not connected and left
out), and the record says which. RAPL is the CPU package(s) only, not the wall.

Device-side module: Python 3.8, standard library only (device_check.pyz runs it on a Jetson).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import threading
import time
from typing import Callable, Dict, List, Optional

# NAME current[mW]/average[mW][/max[mW]] followed by a space or the end: a power rail. "RAM 2813/30536MB",
# "SWAP 0/15268MB" and "IRAM 0/252kB" do not match (a unit other than mW follows their numbers).
_RAIL = re.compile(r"(?<![\w@])([A-Za-z][A-Za-z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")
_TEMP = re.compile(r"(?<![\w@])([A-Za-z][A-Za-z0-9_-]*)@(-?\d+(?:\.\d+)?)C\b")
_GR3D = re.compile(r"GR3D_FREQ (\d+)%(?:@\[?(\d+)(?:,\d+)*\]?)?")
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")  # the module's whole input, where the module has the rail
NOT_CONNECTED = ("NC",)


def parse_tegrastats(line: str) -> dict:
    """One tegrastats line -> ``{"rails": {name: mW now}, "rails_avg": {name: mW}, "temps": {name: C},
    "gpu_load": %, "gpu_mhz": MHz}`` (keys only for what the line holds)."""
    out: dict = {"rails": {}, "rails_avg": {}}
    for name, cur, avg, _peak in _RAIL.findall(line):
        out["rails"][name] = float(cur)
        out["rails_avg"][name] = float(avg)
    temps = {name: float(c) for name, c in _TEMP.findall(line) if -40 <= float(c) <= 150}
    if temps:
        out["temps"] = temps
    g = _GR3D.search(line)
    if g:
        out["gpu_load"] = float(g.group(1))
        if g.group(2):
            out["gpu_mhz"] = float(g.group(2))
    return out


def total_mw(rails: Dict[str, float]) -> tuple:
    """``(total mW, what it is)``: the input rail where there is one, else the sum of the named rails."""
    for name in INPUT_RAILS:
        if name in rails:
            return rails[name], f"{name} (the module's input rail)"
    named = {k: v for k, v in rails.items() if k not in NOT_CONNECTED}
    if not named:
        return None, "no power rail"
    return sum(named.values()), f"sum of {', '.join(named)} (this module has no input rail)"


def summarise(samples: List[Dict[str, float]], seconds: float, source: str) -> dict:
    """Average of each rail over ``samples`` (mW) and the total, as a scenario's ``energy`` record."""
    if not samples:
        return {"available": False, "source": source,
                "reason": f"{source} gave no sample during the {seconds:.2f} s run (it samples too slowly for a run "
                          f"this short: run longer, e.g. --sustain 10)"}
    names = sorted({k for s in samples for k in s})
    avg = {k: round(sum(s.get(k, 0.0) for s in samples) / len(samples), 1) for k in names}
    total, what = total_mw(avg)
    out = {"available": True, "source": source, "samples": len(samples), "seconds": round(seconds, 3),
           "rails_mw": avg, "average_mw": None if total is None else round(total, 1), "total_is": what}
    if total is not None:
        out["joules"] = round(total / 1e3 * seconds, 4)
    return out


class TegrastatsRecorder:
    """``tegrastats --interval MS`` for the duration of a run; :meth:`stop` averages its samples."""

    def __init__(self, interval_ms: int = 100, command: str = "tegrastats", clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.samples: List[Dict[str, float]] = []
        self.temps: Dict[str, float] = {}
        self.proc = subprocess.Popen([command, "--interval", str(int(interval_ms))], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.t0 = clock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            parsed = parse_tegrastats(line)
            if parsed["rails"]:
                self.samples.append(parsed["rails"])
            self.temps.update(parsed.get("temps", {}))

    def stop(self) -> dict:
        seconds = self.clock() - self.t0
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(timeout=5)
        out = summarise(list(self.samples), seconds, "tegrastats")
        if self.temps:
            out["temperatures_c"] = dict(self.temps)
        return out


def ina3221_channels(root: str = "/") -> Dict[str, tuple]:
    """``{label: (voltage mV file, current mA file)}`` of every INA3221 channel the kernel exposes."""
    found: Dict[str, tuple] = {}
    dirs = set(glob.glob(os.path.join(root, "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")))
    for hw in glob.glob(os.path.join(root, "sys/class/hwmon/hwmon*")):
        try:
            with open(os.path.join(hw, "name")) as fh:
                if fh.read().strip() == "ina3221":
                    dirs.add(hw)
        except OSError:
            continue
    for hw in sorted(dirs):
        for label_file in sorted(glob.glob(os.path.join(hw, "in[0-9]_label"))):
            n = os.path.basename(label_file)[2]
            volt, curr = os.path.join(hw, f"in{n}_input"), os.path.join(hw, f"curr{n}_input")
            try:
                with open(label_file) as fh:
                    label = fh.read().strip()
            except OSError:
                continue
            if os.path.exists(volt) and os.path.exists(curr) and label not in found:
                found[label] = (volt, curr)
    return found


def read_ina3221(channels: Dict[str, tuple]) -> Dict[str, float]:
    """Power of each channel now, in mW (mV x mA / 1000)."""
    out = {}
    for label, (volt, curr) in channels.items():
        try:
            with open(volt) as fv, open(curr) as fc:
                out[label] = float(fv.read()) * float(fc.read()) / 1e3
        except (OSError, ValueError):
            continue
    return out


class SysfsPowerRecorder:
    """Samples the INA3221 channels every ``interval_s`` in a thread for the duration of a run."""

    def __init__(self, channels: Dict[str, tuple], interval_s: float = 0.05, clock: Callable[[], float] = time.perf_counter):
        self.channels, self.interval, self.clock = channels, interval_s, clock
        self.samples: List[Dict[str, float]] = []
        self.stopping = threading.Event()
        self.t0 = clock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            reading = read_ina3221(self.channels)
            if reading:
                self.samples.append(reading)
            self.stopping.wait(self.interval)

    def stop(self) -> dict:
        seconds = self.clock() - self.t0
        self.stopping.set()
        self.thread.join(timeout=5)
        return summarise(list(self.samples), seconds, "INA3221 sysfs (hwmon)")


def rapl_domains(root: str = "/") -> List[str]:
    """The top-level RAPL package domains (``intel-rapl:0``, ``intel-rapl:1``...; not sub-zones)."""
    return sorted(d for d in glob.glob(os.path.join(root, "sys/class/powercap/intel-rapl:*"))
                  if os.path.basename(d).count(":") == 1)


def _read_uj(domain: str) -> int:
    with open(os.path.join(domain, "energy_uj")) as fh:
        return int(fh.read())


def rapl_problem(root: str = "/") -> Optional[str]:
    """Why RAPL cannot be read here (None: it can)."""
    domains = rapl_domains(root)
    if not domains:
        return ("not available here: no /sys/class/powercap/intel-rapl:* (not Linux on x86, the powercap driver is not "
                "loaded, or a container hides it)")
    try:
        for d in domains:
            _read_uj(d)
    except PermissionError:
        return ("not available here: the RAPL counters exist but only root may read energy_uj on current kernels "
                "(CVE-2020-8694); run as root or grant read access to measure CPU package energy")
    except (OSError, ValueError) as exc:
        return f"not available here: RAPL energy_uj cannot be read ({exc})"
    return None


class RaplRecorder:
    """CPU package energy from RAPL counters, read at start and stop (one counter wrap allowed)."""

    def __init__(self, root: str = "/", clock: Callable[[], float] = time.perf_counter):
        self.domains = rapl_domains(root)
        self.clock = clock
        self.ranges = []
        for d in self.domains:
            try:
                with open(os.path.join(d, "max_energy_range_uj")) as fh:
                    self.ranges.append(int(fh.read()))
            except (OSError, ValueError):
                self.ranges.append(None)
        self.start = [_read_uj(d) for d in self.domains]
        self.t0 = clock()

    def stop(self) -> dict:
        end = [_read_uj(d) for d in self.domains]
        seconds = self.clock() - self.t0
        total_uj = 0
        for a, b, top in zip(self.start, end, self.ranges):
            delta = b - a
            if delta < 0 and top:
                delta += top  # the counter wrapped once
            total_uj += max(0, delta)
        joules = total_uj / 1e6
        names = [os.path.basename(d) for d in self.domains]
        return {"available": True, "source": "RAPL (/sys/class/powercap)", "domains": names,
                "total_is": "CPU package energy (RAPL), not the whole machine", "seconds": round(seconds, 3),
                "joules": round(joules, 4), "average_mw": round(joules / seconds * 1e3, 1) if seconds > 0 else None}


class NotAvailable:
    """A recorder that records nothing and says why."""

    def __init__(self, reason: str):
        self.reason = reason

    def stop(self) -> dict:
        return {"available": False, "reason": self.reason}


def source(root: str = "/", tegrastats: Optional[str] = None, interval_ms: int = 100) -> tuple:
    """``(factory of started recorders, None)`` for the best source here (tegrastats, INA3221 sysfs,
    RAPL), or ``(None, why none is available)``, said plainly."""
    exe = tegrastats or shutil.which("tegrastats")
    if exe and (tegrastats or root == "/"):
        return (lambda: TegrastatsRecorder(interval_ms, exe)), None
    channels = ina3221_channels(root)
    if channels:
        return (lambda: SysfsPowerRecorder(channels, interval_ms / 1e3)), None
    problem = rapl_problem(root)
    if problem is None:
        return (lambda: RaplRecorder(root)), None
    return None, "energy " + problem + "; no tegrastats or INA3221 power monitor either"


def meter(root: str = "/", tegrastats: Optional[str] = None, interval_ms: int = 100) -> Callable[[], object]:
    """A factory of started recorders (``recorder = meter()(); ...; recorder.stop()``) for the best
    source here, or of :class:`NotAvailable` ones that say why there is none (:func:`source`)."""
    factory, why = source(root, tegrastats, interval_ms)
    return factory if factory is not None else (lambda: NotAvailable(why))


__all__ = ["INPUT_RAILS", "NotAvailable", "RaplRecorder", "SysfsPowerRecorder", "TegrastatsRecorder", "ina3221_channels",
           "meter", "parse_tegrastats", "source", "rapl_domains", "rapl_problem", "read_ina3221", "summarise", "total_mw"]
