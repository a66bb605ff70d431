"""Comparison counts: the sufficient statistics of comparing a target's outputs with the reference's.

:class:`AccuracyCounts` holds, for one output over some inputs, correct top-1/top-5, agreements, the
number of inputs, exact sums (as :class:`fractions.Fraction`) of per-input cosines and absolute
errors, minima and maxima. Adding counts is exact and order-free; averaging per-shard or per-batch
percentages is neither, so it is never done. The streaming pass (:mod:`.stream`) adds them per
batch, the sharded matrix (:mod:`xcit_export.scale.sharding`) per shard: the totals are identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np


def _nan_max(a: float, b: float) -> float:
    """max() that keeps a NaN (as numpy's max over the whole set would), in either order."""
    return a if a != a else b if b != b else max(a, b)


@dataclass
class AccuracyCounts:
    """Sufficient statistics of :func:`xcit_export.evaluate.validate.compare_outputs`, addable across shards."""

    count: int = 0
    finite: bool = True
    nonfinite: int = 0  # samples with a NaN or inf in the target's output (their errors/cosines are not summed)
    elements: int = 0
    abs_err_max: float = 0.0
    abs_err_sum: Fraction = Fraction(0)
    cos_sum: Fraction = Fraction(0)
    cos_min: float = float("inf")
    rel_sum: Fraction = Fraction(0)  # per-input relative L2 errors (validate.per_sample_errors), exact sum...
    rel_max: float = 0.0
    rel_unsummed: float = 0.0  # ...and the plain sum of the non-finite ones (inf or NaN: order-free)
    # Whether every output so far is the same (the first row kept to compare across shards).
    t_first: Any = None
    t_constant: bool = True
    r_first: Any = None
    r_constant: bool = True
    classify: bool = False
    top1_agree: int = 0
    top5_agree: int = 0
    labelled: int = 0
    top1: int = 0
    top5: int = 0
    ref_top1: int = 0
    ref_top5: int = 0
    unsummed: int = 0  # rows left out of the exact sums (non-finite figures)...
    err_unsummed: float = 0.0  # ...and their absolute errors' plain float sum

    @classmethod
    def of(cls, target: np.ndarray, reference: np.ndarray, labels: np.ndarray | None = None,
           classify: bool = True) -> "AccuracyCounts":
        from .validate import _topk, constant_outputs, per_sample_errors

        t, r, err, cos, rel = per_sample_errors(target, reference)
        ok = np.isfinite(cos) & np.isfinite(err).all(axis=1)  # rows whose figures can be summed exactly
        rel_ok = np.isfinite(rel)
        c = cls(count=len(t), finite=bool(np.isfinite(t).all()), nonfinite=int((~np.isfinite(t)).any(axis=1).sum()),
                elements=int(err.size),
                abs_err_max=float(err.max()) if err.size else 0.0,
                # Per-row sums depend only on the row; their exact total does not depend on the order.
                # Fraction cannot hold NaN/inf: such rows are counted (nonfinite) and make the means NaN.
                abs_err_sum=sum((Fraction(float(v)) for v in err[ok].sum(axis=1)), Fraction(0)),
                cos_sum=sum((Fraction(float(v)) for v in cos[ok]), Fraction(0)),
                cos_min=float(cos.min()) if len(cos) else float("inf"),
                rel_sum=sum((Fraction(float(v)) for v in rel[rel_ok]), Fraction(0)),
                rel_max=float(rel.max()) if len(rel) else 0.0, rel_unsummed=float(rel[~rel_ok].sum()),
                t_first=t[0].copy() if len(t) else None, t_constant=constant_outputs(target) or len(t) == 1,
                r_first=r[0].copy() if len(r) else None, r_constant=constant_outputs(reference) or len(r) == 1)
        c.unsummed = int((~ok).sum())
        c.err_unsummed = float(err[~ok].sum())  # inf or NaN: adding them is order-free (errors are >= 0)
        if classify and target.ndim == 2 and target.shape[1] > 1:
            c.classify = True
            ref_top1 = reference.argmax(axis=1)
            tgt_top5 = _topk(target, 5)
            c.top1_agree = int((target.argmax(axis=1) == ref_top1).sum())
            c.top5_agree = int((tgt_top5 == ref_top1[:, None]).any(axis=1).sum())
            if labels is not None:
                labels = np.asarray(labels)
                ref_top5 = _topk(reference, 5)
                c.labelled = len(labels)
                c.top1 = int((tgt_top5[:, 0] == labels).sum())
                c.top5 = int((tgt_top5 == labels[:, None]).any(axis=1).sum())
                c.ref_top1 = int((ref_top5[:, 0] == labels).sum())
                c.ref_top5 = int((ref_top5 == labels[:, None]).any(axis=1).sum())
        return c

    def __add__(self, other: "AccuracyCounts") -> "AccuracyCounts":
        if self.count == 0:
            return other
        if other.count == 0:
            return self
        if self.classify != other.classify or bool(self.labelled) != bool(other.labelled):
            raise ValueError("cannot add counts of shards evaluated differently")
        from .validate import constant_outputs

        def same(a, b):
            return a is not None and b is not None and constant_outputs(np.stack([a, b]))

        out = AccuracyCounts(
            count=self.count + other.count, finite=self.finite and other.finite,
            nonfinite=self.nonfinite + other.nonfinite,
            t_first=self.t_first, t_constant=self.t_constant and other.t_constant and same(self.t_first, other.t_first),
            r_first=self.r_first, r_constant=self.r_constant and other.r_constant and same(self.r_first, other.r_first),
            elements=self.elements + other.elements, abs_err_max=_nan_max(self.abs_err_max, other.abs_err_max),
            abs_err_sum=self.abs_err_sum + other.abs_err_sum, cos_sum=self.cos_sum + other.cos_sum,
            cos_min=-_nan_max(-self.cos_min, -other.cos_min), classify=self.classify,
            rel_sum=self.rel_sum + other.rel_sum, rel_max=_nan_max(self.rel_max, other.rel_max),
            rel_unsummed=self.rel_unsummed + other.rel_unsummed,
            top1_agree=self.top1_agree + other.top1_agree, top5_agree=self.top5_agree + other.top5_agree,
            labelled=self.labelled + other.labelled, top1=self.top1 + other.top1, top5=self.top5 + other.top5,
            ref_top1=self.ref_top1 + other.ref_top1, ref_top5=self.ref_top5 + other.ref_top5)
        out.unsummed = self.unsummed + other.unsummed
        out.err_unsummed = self.err_unsummed + other.err_unsummed
        return out

    def to_dict(self) -> dict:
        """The report's accuracy entry (the keys of ``compare_outputs``)."""
        n = self.count
        nan = float("nan")
        whole = self.unsummed == 0  # as compare_outputs: a NaN anywhere makes the means NaN
        out: dict[str, Any] = {
            "count": n, "finite": self.finite, "nonfinite_count": self.nonfinite,
            "max_abs_error": self.abs_err_max,
            "mean_abs_error": (float(self.abs_err_sum / self.elements) if self.elements else 0.0) if whole else
                              float(self.abs_err_sum / self.elements) + self.err_unsummed / self.elements,
            "cosine_mean": float(self.cos_sum / n) if n and whole else nan,
            "cosine_min": self.cos_min,
            "rel_error_mean": float(self.rel_sum / n) + self.rel_unsummed / n if n else nan,
            "rel_error_max": self.rel_max if n else nan,
            "constant": bool(self.t_constant and n > 1 and np.isfinite(self.t_first).all()),
            "reference_constant": bool(self.r_constant and n > 1 and np.isfinite(self.r_first).all()),
        }
        if self.classify:
            out["top1_agreement"] = self.top1_agree / n
            out["top5_agreement"] = self.top5_agree / n
            if self.labelled:
                m = self.labelled
                out.update(top1=self.top1 / m, top5=self.top5 / m, labelled_count=m,
                           reference_top1=self.ref_top1 / m, reference_top5=self.ref_top5 / m)
        return out
