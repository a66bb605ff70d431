"""Power and sensors (device/energy.py, device/sensors.py) on recorded tegrastats lines and fake sysfs trees."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from xcit_export.device import energy, sensors

FIXTURES = Path(__file__).parent / "fixtures" / "tegrastats"


def _lines(name):
    return [line for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name, rails, total, what", [
    ("jetpack6_orin_nano.txt", {"VDD_IN": 4702, "VDD_CPU_GPU_CV": 481, "VDD_SOC": 1420}, 4702, "VDD_IN"),
    ("jetpack5_agx_orin.txt", {"VDD_GPU_SOC": 3580, "VDD_CPU_CV": 397, "VIN_SYS_5V0": 2626, "NC": 0,
                               "VDDQ_VDD2_1V8AO": 302}, 3580 + 397 + 2626 + 302, "sum of"),
    ("jetpack4_nano.txt", {"POM_5V_IN": 2238, "POM_5V_GPU": 40, "POM_5V_CPU": 401}, 2238, "POM_5V_IN"),
    ("jetpack4_tx2.txt", {"VDD_IN": 13990, "VDD_CPU": 2215, "VDD_GPU": 6850, "VDD_SOC": 1371, "VDD_WIFI": 19,
                          "VDD_DDR": 2702}, 13990, "VDD_IN"),
    ("r38_three_values.txt", {"VDD_IN": 9420, "VDD_CPU_GPU_CV": 4016, "VDD_SOC": 1790}, 9420, "VDD_IN"),
])
def test_tegrastats_rails_of_every_jetpack_format(name, rails, total, what):
    parsed = energy.parse_tegrastats(_lines(name)[0])
    assert parsed["rails"] == {k: float(v) for k, v in rails.items()}  # RAM/SWAP/IRAM X/Y are not rails
    got, label = energy.total_mw(parsed["rails"])
    assert got == total and label.startswith(what)
    assert "NC" not in label


def test_tegrastats_temperatures_and_gpu_clock():
    orin = energy.parse_tegrastats(_lines("jetpack5_agx_orin.txt")[1])
    assert orin["temps"]["tj"] == pytest.approx(47.062) and "CV0" not in orin["temps"]  # -256C: sensor off
    assert orin["gpu_load"] == 96 and orin["gpu_mhz"] == 1300
    nano6 = energy.parse_tegrastats(_lines("jetpack6_orin_nano.txt")[1])
    assert nano6["gpu_mhz"] == 624 and nano6["rails_avg"]["VDD_IN"] == 7279


def test_summarise_averages_current_values_and_names_the_total():
    samples = [energy.parse_tegrastats(line)["rails"] for line in _lines("jetpack6_orin_nano.txt")[1:]]
    rec = energy.summarise(samples, 2.0, "tegrastats")
    assert rec["average_mw"] == pytest.approx((9856 + 10012) / 2) and rec["joules"] == pytest.approx(19.868, rel=1e-3)
    assert rec["rails_mw"]["VDD_SOC"] == pytest.approx(2302.0) and "VDD_IN" in rec["total_is"]
    empty = energy.summarise([], 0.05, "tegrastats")
    assert empty["available"] is False and "no sample" in empty["reason"]


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for tegrastats")
def test_tegrastats_recorder_runs_the_utility_and_averages_its_lines(tmp_path):
    fake = tmp_path / "tegrastats"
    lines = _lines("jetpack6_orin_nano.txt")[1:]
    body = "\n".join(f"  echo '{line}'" for line in lines)
    fake.write_text(f"#!/bin/sh\n[ \"$1\" = --interval ] || exit 2\nwhile true; do\n{body}\n  sleep 0.01\ndone\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    recorder = energy.meter(tegrastats=str(fake), interval_ms=10)()
    time.sleep(0.3)
    rec = recorder.stop()
    assert rec["available"] and rec["source"] == "tegrastats" and rec["samples"] >= 2
    assert 9856 <= rec["average_mw"] <= 10012 and rec["temperatures_c"]["tj"] > 40
    assert recorder.proc.poll() is not None  # the utility was stopped


def _ina3221(root: Path, channels: dict) -> None:
    hw = root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    hw.mkdir(parents=True)
    (hw / "name").write_text("ina3221\n")
    for n, (label, mv, ma) in channels.items():
        (hw / f"in{n}_label").write_text(label + "\n")
        (hw / f"in{n}_input").write_text(f"{mv}\n")
        (hw / f"curr{n}_input").write_text(f"{ma}\n")


def test_ina3221_sysfs_channels_give_power_as_volts_times_amps(tmp_path):
    _ina3221(tmp_path, {1: ("VDD_IN", 5080, 1200), 2: ("VDD_CPU_GPU_CV", 5080, 160), 3: ("VDD_SOC", 5080, 300)})
    channels = energy.ina3221_channels(str(tmp_path))
    assert sorted(channels) == ["VDD_CPU_GPU_CV", "VDD_IN", "VDD_SOC"]
    assert energy.read_ina3221(channels)["VDD_IN"] == pytest.approx(6096.0)
    recorder = energy.meter(root=str(tmp_path), interval_ms=5)()
    time.sleep(0.05)
    rec = recorder.stop()
    assert rec["source"].startswith("INA3221") and rec["average_mw"] == pytest.approx(6096.0)


def _rapl(root: Path, energy_uj: int, top: int = 262143328850, mode: int = 0o444) -> Path:
    d = root / "sys/class/powercap/intel-rapl:0"
    (d / "intel-rapl:0:0").mkdir(parents=True)  # a sub-zone: not counted twice
    (d / "name").write_text("package-0\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{top}\n")
    os.chmod(d / "energy_uj", mode)
    return d


def test_rapl_energy_between_start_and_stop_with_one_wrap(tmp_path):
    d = _rapl(tmp_path, 1_000_000_000 - 2_000_000, top=1_000_000_000)
    assert energy.rapl_domains(str(tmp_path)) == [str(d)]
    recorder = energy.meter(root=str(tmp_path))()
    (d / "energy_uj").write_text("3000000\n")  # wrapped: 2 J before the top, 3 J after
    rec = recorder.stop()
    assert rec["joules"] == pytest.approx(5.0) and "CPU package" in rec["total_is"]


def test_rapl_readable_by_root_only_is_said_plainly(tmp_path, monkeypatch):
    _rapl(tmp_path, 5, mode=0o400)

    def denied(domain):  # what a 0400 energy_uj gives a user other than root (root reads it anyway)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(energy, "_read_uj", denied)
    rec = energy.meter(root=str(tmp_path))().stop()
    assert rec["available"] is False and "only root" in rec["reason"]


def test_nothing_here_is_said_plainly(tmp_path):
    rec = energy.meter(root=str(tmp_path))().stop()
    assert rec["available"] is False and rec["reason"].startswith("energy not available here")
    assert energy.rapl_problem(str(tmp_path)).startswith("not available here")


def test_sensor_snapshot_reads_jetson_and_x86_trees(tmp_path):
    cpu = tmp_path / "sys/devices/system/cpu"
    for i, khz in enumerate((1510400, 729600)):
        (cpu / f"cpu{i}/cpufreq").mkdir(parents=True)
        (cpu / f"cpu{i}/cpufreq/scaling_cur_freq").write_text(f"{khz}\n")
    for i, (kind, milli) in enumerate((("cpu-thermal", 47031), ("cv0-thermal", -256000))):
        z = tmp_path / f"sys/class/thermal/thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(f"{milli}\n")
    gpu = tmp_path / "sys/class/devfreq/17000000.gpu"
    gpu.mkdir(parents=True)
    (gpu / "cur_freq").write_text("624750000\n")
    snap = sensors.snapshot(str(tmp_path))
    assert snap["cpu_mhz"] == {"source": "cpufreq scaling_cur_freq", "cores": 2, "min": 729.6, "mean": 1120.0,
                               "max": 1510.4}
    assert snap["temperatures_c"] == {"thermal:cpu-thermal": 47.0}  # the -256 C sentinel is left out
    assert snap["devfreq_mhz"] == {"17000000.gpu": 624.8}
    assert sensors.snapshot(str(tmp_path / "empty"))["available"] is False
