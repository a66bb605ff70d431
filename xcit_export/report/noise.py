"""Are the latency figures stable enough to read? One rule, used by report.json, the terminal and the HTML.

A latency figure is *noisy* when, in its timed loop,

* the 90th percentile is more than :data:`P90_OVER_MEDIAN_MAX` times the median (on an idle
  machine the two are within a few per cent for these models; a loaded one stalls some runs
  for whole scheduler slices), or
* the host's 1-minute load average, read as the loop ended, was above
  :data:`LOAD_PER_CORE_MAX` times the cores this process may use (other work was competing for
  them: a median taken then can be several times the idle one, and so can a speed-up).

A noisy run is not failed (accuracy does not depend on it): the report says so, in
``report["latency_noise"]`` (docs/report-schema.md), the terminal and report.html, so nobody quotes
its figures as the device's speed.
"""

from __future__ import annotations

import os

P90_OVER_MEDIAN_MAX = 1.5
LOAD_PER_CORE_MAX = 1.0
ADVICE = ("medians and speed-ups may be far from this machine's idle figures; rerun when `uptime` shows a load "
          "below the core count")


def usable_cores() -> int:
    """Cores this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _timings(report: dict) -> list[tuple[str, dict]]:
    """Every timed loop of the report, named: PyTorch, each target, and each ``--eval-sizes`` size."""
    out: list[tuple[str, dict]] = []
    ref = (report.get("reference") or {}).get("latency")
    if ref:
        out.append(("pytorch-eager", ref))
    for t in report.get("targets", []):
        if t.get("latency"):
            out.append((t["target"], t["latency"]))
    sizes = report.get("sizes") or {}
    for r in sizes.get("reference", []):
        if r.get("latency"):
            out.append((f"pytorch-eager at {r['size']}", r["latency"]))
    for t in report.get("targets", []):
        for r in t.get("sizes", []):
            if r.get("latency"):
                out.append((f"{t['target']} at {r['size']}", r["latency"]))
    return out


def latency_noise(report: dict, cores: int | None = None) -> dict:
    """The report's ``latency_noise`` section: ``stable``, the ``bounds``, the ``cores``, each timed
    loop's ``p90_over_median`` and ``load_avg_1m`` (``timings``), and ``reasons`` (one sentence
    each) when it is not stable."""
    cores = cores or usable_cores()
    timings, spread, loaded = [], [], []
    for name, lat in _timings(report):
        median, p90 = lat.get("median_ms"), lat.get("p90_ms")
        ratio = round(p90 / median, 3) if median and p90 else None
        load = lat.get("load_avg_1m")
        noisy_spread = ratio is not None and ratio > P90_OVER_MEDIAN_MAX
        noisy_load = load is not None and load > LOAD_PER_CORE_MAX * cores
        timings.append({"timed": name, "p90_over_median": ratio, "load_avg_1m": load,
                        "noisy": noisy_spread or noisy_load})
        if noisy_spread:
            spread.append((ratio, name))
        if noisy_load:
            loaded.append(load)
    n = len(timings)
    reasons = []
    if spread:
        ratio, name = max(spread)
        reasons.append(f"p90 over median above {P90_OVER_MEDIAN_MAX:g}x in {len(spread)} of {n} timed loops "
                       f"(worst: {name} {ratio:.1f}x)")
    if loaded:
        reasons.append(f"load average up to {max(loaded):.1f} on {cores} core{'s' if cores != 1 else ''} while "
                       f"timing {len(loaded)} of {n} loops")
    return {"stable": not reasons, "bounds": {"p90_over_median": P90_OVER_MEDIAN_MAX,
                                              "load_avg_over_cores": LOAD_PER_CORE_MAX},
            "cores": cores, "timings": timings, "reasons": reasons}


def noise_reasons(report: dict) -> list[str]:
    """Why the latency figures a person reads are noisy; empty when they are stable, or when no
    target was timed (PyTorch's figure alone is only a reference)."""
    noise = report.get("latency_noise")
    if not noise or noise.get("stable", True) or not any(t.get("latency") for t in report.get("targets", [])):
        return []
    return list(noise["reasons"])


def noise_line(report: dict) -> str | None:
    """One sentence for the terminal and the reports when the latency figures are noisy; else None."""
    reasons = noise_reasons(report)
    return "latency figures are noisy (" + "; ".join(reasons) + "): " + ADVICE if reasons else None
