"""Per-point figures, accumulated batch by batch (nothing but sums is kept between batches).

For each point: the relative L2 error over every element of every image (``rel_error``), the
per-image cosine (mean and minimum), the largest absolute error, how many images hold a NaN or an
infinity (``nonfinite_count``, counted like :func:`xcit_export.evaluate.validate.compare_outputs`),
all of the *marked* graph (error accumulated from the input); and ``added``, the error the point
adds by itself.

``added`` is measured where the graph can be cut (:mod:`.mark`: ONNX and OpenVINO): the relative
error of the point when the segment before it is fed PyTorch's value of the previous point
(``added_method: "isolated"``). Where it cannot (a TensorRT engine on the device), it is the jump
of the accumulated relative error from the previous point (``"jump"``), which understates a later
block: independent errors add in quadrature, so a new error ``b`` on an accumulated ``a`` moves
the norm by about ``b^2 / 2a``. Either way the first point where a target turns non-finite on its
own outranks every finite error (:func:`worst`), since every later figure is then undefined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class PointStats:
    """Sums over images for one point (float64; see the module docstring for each figure)."""

    err_sq: float = 0.0
    ref_sq: float = 0.0
    max_abs: float = 0.0
    cos_sum: float = 0.0
    cos_min: float = 1.0
    cos_count: int = 0
    nonfinite: int = 0
    count: int = 0

    def add(self, target: np.ndarray, reference: np.ndarray) -> None:
        from ..evaluate.validate import per_sample_errors  # the one per-image cosine (NaN where not finite)

        t, r, err, cos, _ = per_sample_errors(np.asarray(target), np.asarray(reference))
        self.count += len(t)
        self.nonfinite += int((~np.isfinite(t).all(axis=1)).sum())
        ok = np.isfinite(cos)  # rows where both are finite
        if not ok.any():
            return
        self.err_sq += float((err[ok] ** 2).sum())
        self.ref_sq += float((r[ok] ** 2).sum())
        self.max_abs = max(self.max_abs, float(err[ok].max()) if err[ok].size else 0.0)
        self.cos_sum += float(cos[ok].sum())
        self.cos_min = min(self.cos_min, float(cos[ok].min()))
        self.cos_count += int(ok.sum())

    @property
    def rel_error(self) -> float:
        if self.cos_count == 0:
            return float("nan")
        if self.ref_sq == 0:
            return 0.0 if self.err_sq == 0 else float("inf")
        return math.sqrt(self.err_sq / self.ref_sq)

    def to_dict(self) -> dict:
        mean = self.cos_sum / self.cos_count if self.cos_count else float("nan")
        return {"rel_error": _num(self.rel_error), "cosine_mean": _num(mean),
                "cosine_min": _num(self.cos_min if self.cos_count else float("nan")),
                "max_abs_error": _num(self.max_abs if self.cos_count else float("nan")),
                "nonfinite_count": self.nonfinite, "count": self.count}


def _num(value: float) -> float | None:
    """A figure for JSON: rounded to 6 significant digits; None for NaN (JSON has none)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if math.isinf(value):
        return value
    return float(f"{value:.6g}")


def with_jumps(rows: list[dict]) -> list[dict]:
    """``rows`` (points in model order, each with ``rel_error``) with ``added`` set to the jump of
    ``rel_error`` from the previous point (the first point: its own error); None where undefined."""
    previous = 0.0
    for row in rows:
        err = row.get("rel_error")
        row["added"] = None if err is None or previous is None else _num(err - previous)
        previous = err
    return rows


def worst(rows: list[dict]) -> dict | None:
    """The point that adds the most error (``{"module", "added", "reason"}``; None without rows):

    1. the first point that turns non-finite by itself (``added_nonfinite``, cut graphs), or, with
       jumps, the first whose accumulated values turn non-finite while the point before was finite;
    2. else the largest ``added``."""
    before = 0
    for row in rows:
        own = row.get("added_nonfinite")
        if own:
            return {"module": row["module"], "added": row.get("added"),
                    "reason": f"turns non-finite by itself on {own} of {row['count']} images"}
        if own is None and row.get("nonfinite_count", 0) > before:
            return {"module": row["module"], "added": row.get("added"),
                    "reason": f"non-finite values first appear here ({row['nonfinite_count']} of {row['count']} images)"}
        before = row.get("nonfinite_count", 0)
    scored = [r for r in rows if isinstance(r.get("added"), (int, float))]
    if not scored:
        return None
    top = max(scored, key=lambda r: r["added"])
    rest = sorted((r["added"] for r in scored if r is not top), reverse=True)
    reason = f"adds {top['added']:.3g} relative error"
    if rest:
        reason += f" ({top['added'] / rest[0]:.1f}x the next largest, {rest[0]:.3g}; median {float(np.median(rest)):.3g})" \
            if rest[0] > 0 else f" (every other point adds {rest[0]:.3g} or less)"
    return {"module": top["module"], "added": top["added"], "reason": reason}
