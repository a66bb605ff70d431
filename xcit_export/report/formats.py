"""How figures are written for people: one format per kind of figure, for the terminal and report.html.

Accuracy figures are rounded, but never up to a perfect score, so that a target that is not perfect
never reads as perfect (99.96% agreement is ``99.9%``, not ``100.0%``; a cosine of 0.999996 is
``0.99999``);
latencies carry three significant figures (the run-to-run noise of a shared machine is larger).
"""

from __future__ import annotations

from typing import Any


def fmt_percent(value: Any) -> str:
    """A fraction as a percentage with one decimal (``18.8%``), never rounded up to a perfect
    ``100%`` (99.96% agreement is ``99.9%``); ``100%`` only when it is exactly one; ``-`` when
    it was not measured."""
    if value is None:
        return "-"
    if value >= 1:
        return "100%"
    return f"{min(round(100 * value, 1), 99.9):.1f}%"


def fmt_cosine(value: Any) -> str:
    """Five decimals, never rounded up to a perfect ``1.00000`` (a cosine of 0.999996 is ``0.99999``)."""
    if value is None:
        return "-"
    return "1.00000" if value >= 1 else f"{min(round(value, 5), 0.99999):.5f}"


def fmt_ms(value: Any) -> str:
    """Milliseconds to three significant figures or whole milliseconds: ``3.42``, ``52.6``, ``879``."""
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def fmt_speedup(value: Any) -> str:
    return "-" if not value else (f"{value:.2f}x" if value < 10 else f"{value:.1f}x" if value < 100 else f"{value:,.0f}x")


def size_rows(report: dict) -> tuple[list[dict], list[str]]:
    """``--eval-sizes`` results as rows for the terminal and report.html: per size (fewest tokens
    first) PyTorch's latency, then every target's accuracy and latency there, written as above.

    Each row: ``size``, ``tokens``, ``target``, ``reference`` (PyTorch's row), ``entry`` (the
    target's record at that size: ``status``, ``passed``) and ``cells`` by column; the columns are
    those some row has a figure for, of ``top-1``, ``agree``, ``cos min``, ``med ms``,
    ``speed-up`` (PyTorch's median at that size over the target's), ``timed as`` (OpenVINO's
    static or dynamic form)."""
    sec = report.get("sizes") or {}
    ref_ms = {r["size"]: r.get("latency_median_ms") for r in sec.get("reference", [])}
    tokens = {r["size"]: r.get("tokens", 0) for r in sec.get("reference", [])}
    per_size: dict[str, list[dict]] = {size: [] for size in ref_ms}
    for entry in report.get("targets", []):
        for r in entry.get("sizes", []):
            tokens.setdefault(r["size"], r.get("tokens", 0))
            acc = r.get("accuracy") or {}
            ms, ref = r.get("latency_median_ms"), ref_ms.get(r["size"])
            cells = {"top-1": fmt_percent(acc.get("top1")), "agree": fmt_percent(acc.get("top1_agreement")),
                     "cos min": fmt_cosine(acc.get("cosine_min")), "med ms": fmt_ms(ms),
                     "speed-up": fmt_speedup(ref / ms if ref and ms else None), "timed as": r.get("shape_mode") or "-"}
            per_size.setdefault(r["size"], []).append({"size": r["size"], "tokens": tokens[r["size"]],
                                                       "target": entry["target"], "reference": False, "entry": r,
                                                       "cells": cells})
    rows: list[dict] = []
    for size in sorted(per_size, key=lambda k: (tokens.get(k, 0), k)):
        if ref_ms.get(size) is not None:
            rows.append({"size": size, "tokens": tokens[size], "target": "pytorch-eager", "reference": True,
                         "entry": {}, "cells": {"med ms": fmt_ms(ref_ms[size])}})
        rows += per_size[size]
    columns = [c for c in ("top-1", "agree", "cos min", "med ms", "speed-up", "timed as")
               if any(r["cells"].get(c, "-") != "-" for r in rows)]
    return rows, columns
