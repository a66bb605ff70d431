"""Input sizes: checking ``--eval-sizes`` and the cost-vs-tokens fit (one artifact, many sizes).

``--eval-sizes 224,384,512x768,800x1344`` lists (height, width) sizes; a bare number is square
(parsed by :func:`xcit_export.values.parse_sizes`).
Every size must be a positive multiple of the model's patch size (checked by :func:`check_sizes`
before any work). :func:`fit_slope` fits ``log(latency) = a + slope * log(tokens)``: XCiT's
cross-covariance attention is linear in the token count (slope near 1), a ViT's token attention
quadratic (slope rising toward 2 as the tokens grow).
"""

from __future__ import annotations

import math
from typing import Iterable

from ..errors import XcitExportError


def check_sizes(sizes: Iterable[tuple[int, int]], patch: int, model: str) -> None:
    """Every size a positive multiple of ``patch``, or an error naming the size and a fix."""
    for h, w in sizes:
        if h <= 0 or w <= 0 or h % patch or w % patch:
            raise XcitExportError(
                f"--eval-sizes: {h}x{w} does not fit {model}: height and width must be multiples of the patch "
                f"size {patch} (e.g. {max(patch, h // patch * patch)}x{max(patch, w // patch * patch)})")


def label(size: tuple[int, int]) -> str:
    h, w = size
    return f"{h}x{w}"


def tokens(size: tuple[int, int], patch: int) -> int:
    """Patch tokens at ``size`` (the class token aside)."""
    return (size[0] // patch) * (size[1] // patch)


def fit_slope(points: Iterable[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) against log(x) over ``(x, y)`` points (None below 2 distinct x)."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    return sxy / sxx


def check_run(sizes: Iterable[tuple[int, int]], patch: int, model: str, dynamic_size: bool) -> None:
    """``--eval-sizes`` is usable: the export is ``--dynamic-size`` and every size fits the patch grid."""
    if not dynamic_size:
        raise XcitExportError("--eval-sizes needs --dynamic-size: one artifact runs at every size (a static export "
                              "takes its --input-size only); add --dynamic-size (recipe: [export] dynamic_size = true)")
    check_sizes(sizes, patch, model)


# What a size's record keeps of its accuracy: every figure the verdict reads (a finished matrix cell
# is judged again from these when a rerun reuses it), not the per-output breakdown.
_KEEP_ACCURACY = ("count", "finite", "nonfinite_count", "constant", "reference_constant", "max_abs_error",
                  "mean_abs_error", "cosine_mean", "cosine_min", "rel_error_mean", "rel_error_max", "top1_agreement",
                  "top5_agreement", "top1", "top5", "reference_top1", "reference_top5")


def reference_record(size: tuple[int, int], patch: int, latency: dict, inputs: str) -> dict:
    """The report's ``sizes.reference`` row: PyTorch's latency at ``size`` and what it ran on."""
    return {"size": label(size), "height": size[0], "width": size[1], "tokens": tokens(size, patch),
            "latency_median_ms": latency.get("median_ms"), "latency": latency, "inputs": inputs}


def add_size_record(entry: dict, size: tuple[int, int], patch: int | None, sized: dict, checks: list | None) -> dict:
    """Record ``sized`` (the target's result at ``size``) in ``entry["sizes"]``.

    A size that did not run, or misses the target's limits (``checks``: the verdict's checks of
    ``sized``, verdict.judge, the same limits as at the export size), fails the
    target: the export size alone passing is not a pass.
    """
    from dataclasses import asdict

    record: dict = {"size": label(size), "height": size[0], "width": size[1], "tokens": tokens(size, patch) if patch else sized.get("tokens"),
                    "status": sized.get("status")}
    if "accuracy" in sized:
        record["accuracy"] = {k: v for k, v in sized["accuracy"].items() if k in _KEEP_ACCURACY}
    if "outputs" in sized:  # a multi-output model: every output's figures, each held by the verdict
        record["outputs"] = {name: {k: v for k, v in acc.items() if k in _KEEP_ACCURACY}
                             for name, acc in sized["outputs"].items()}
        record["worst_output"] = sized.get("worst_output")
    if "latency" in sized:
        record["latency_median_ms"] = sized["latency"].get("median_ms")
        record["latency"] = sized["latency"]
    for key in ("shape_mode", "error", "device"):
        if key in sized:
            record[key] = sized[key]
    entry.setdefault("sizes", []).append(record)
    if sized.get("status") not in ("ok", "built") and entry.get("status") in ("ok", "built"):
        entry["status"] = "failed"
        entry["error"] = f"at size {label(size)}: {sized.get('error', 'did not run')}"
    if checks:
        for c in checks:
            c.metric = f"{c.metric} @ {label(size)}"
        record["passed"] = all(c.ok for c in checks)
        entry.setdefault("checks", []).extend(asdict(c) for c in checks)
        entry["passed"] = bool(entry.get("passed", True)) and record["passed"]
    return record


def slopes(reference: list[dict], entries: list[dict]) -> dict:
    """Fitted log-log slope of median latency against tokens, for PyTorch and every timed target."""
    out = {"pytorch": fit_slope((r["tokens"], r["latency_median_ms"]) for r in reference
                                if r.get("latency_median_ms"))}
    for entry in entries:
        points = [(r["tokens"], r["latency_median_ms"]) for r in entry.get("sizes", []) if r.get("latency_median_ms")]
        out[entry["target"]] = fit_slope(points)
    return {k: (None if v is None else round(v, 3)) for k, v in out.items()}


def size_rows(report: dict) -> tuple[list[str], list[list[str]], list[dict]]:
    """The report's per-size table (header, rows of text) and the latency-vs-tokens series."""
    sec = report.get("sizes") or {}
    slope = sec.get("slopes") or {}

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    head = ["size", "tokens", "target", "status", "top-1 agreement", "cosine (min)", "top-1", "median (ms)", "timed as"]
    rows: list[list[str]] = []
    series = [{"label": "pytorch-eager", "slope": slope.get("pytorch"), "dashed": True,
               "points": [(r["tokens"], r["latency_median_ms"]) for r in sec.get("reference", [])
                          if r.get("latency_median_ms")]}]
    for r in sec.get("reference", []):
        rows.append([r["size"], str(r["tokens"]), "pytorch-eager (reference)", "-", "-", "-", "-",
                     fmt(r.get("latency_median_ms"), ".2f"), "-"])
    for entry in report.get("targets", []):
        points = []
        for r in entry.get("sizes", []):
            acc = r.get("accuracy") or {}
            status = r.get("status") or "-"
            if r.get("passed") is False:
                status += " (thresholds missed)"
            rows.append([r["size"], str(r["tokens"]), entry["target"], status, fmt(acc.get("top1_agreement"), ".2%"),
                         fmt(acc.get("cosine_min"), ".5f"), fmt(acc.get("top1"), ".2%"),
                         fmt(r.get("latency_median_ms"), ".2f"), r.get("shape_mode") or "-"])
            if r.get("latency_median_ms"):
                points.append((r["tokens"], r["latency_median_ms"]))
        if entry.get("sizes"):
            series.append({"label": entry["target"], "slope": slope.get(entry["target"]), "points": points})
    rows.sort(key=lambda row: (int(row[1]), row[0]))
    return head, rows, series
