"""``--target auto``: which artifact to ship to this device, answered with numbers.

The candidates are the registered targets that can run and be timed on this machine
(:func:`xcit_export.targets.candidates`), each at the export batch asked for and, for latency-bound use, as a static batch-1
variant (its own export under ``<out>/batch1/``, named ``<target>@batch1`` in the report). Every
candidate is built, validated and timed by the ordinary pipeline; :func:`recommend` then picks the
fastest median latency among those that hold the accuracy :class:`Budget`, and says for every
other candidate, with figures, why it lost.

The accuracy budget, with labels: top-1 drop against PyTorch on the labelled set at most
``max_top1_drop`` and top-1 agreement with PyTorch at least ``min_top1_agreement``. Without
labels (or for non-classifier outputs) there is no labelled drop; top-1 agreement and the mean
cosine similarity with PyTorch's output stand in for it, and the recommendation says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..values import as_drop, as_fraction
from ..verdict import Limits, describe, entry_limits, judge, recorded_failures

AUTO = "auto"
BATCH1 = "batch1"  # sub-folder and name suffix of the static batch-1 variant

@dataclass(frozen=True)
class Budget:
    """The accuracy a candidate must hold to be recommended (fractions, 0.01 = 1 point)."""

    max_top1_drop: float = 0.01
    min_top1_agreement: float = 0.97
    min_cosine_mean: float = 0.99  # the unlabelled stand-in (with agreement) for the labelled drop

    def check(self) -> "Budget":
        """The budget, or an :class:`~xcit_export.errors.OptionError`: fractions between 0 and 1, and a
        top-1 drop of 1 or more refused as points (``values.as_drop``, the one guard on every drop budget)."""
        as_drop(self.max_top1_drop, "max_top1_drop")
        as_fraction(self.min_top1_agreement, "min_top1_agreement")
        as_fraction(self.min_cosine_mean, "min_cosine_mean")
        return self


def variant_name(target: str, batch1: bool) -> str:
    return f"{target}@{BATCH1}" if batch1 else target


# --------------------------------------------------------------------------------------------
# Selection (pure: works on report entries, so a report can be re-checked after the fact)
# --------------------------------------------------------------------------------------------

def _pt(fraction: float) -> str:
    return f"{100 * fraction:.1f} pt"


def budget_basis(labelled: bool, classifies: bool) -> str:
    if not classifies:
        return "no class scores: mean cosine with PyTorch's output stands in for the labelled top-1 drop"
    if labelled:
        return "labelled top-1 drop vs PyTorch and top-1 agreement with PyTorch"
    return "no labels: top-1 agreement and mean cosine with PyTorch stand in for the labelled top-1 drop"


def budget_limits(budget: Budget, labelled: bool, classifies: bool) -> Limits:
    """The budget as the verdict's limits (:mod:`xcit_export.verdict`), each required in the entry:
    with labels, the labelled drop and top-1 agreement; without (or without class scores), the mean
    cosine stands in, on every output."""
    th: dict[str, float] = {}
    if classifies and labelled:
        th["max_top1_drop"] = budget.max_top1_drop
    if classifies:
        th["min_top1_agreement"] = budget.min_top1_agreement
    if not (classifies and labelled):
        th["min_cosine_mean"] = budget.min_cosine_mean
    return Limits(th, required=frozenset(th), source="the --target auto accuracy budget")


def budget_misses(entry: dict, budget: Budget, labelled: bool, classifies: bool) -> list[str]:
    """Each way ``entry`` misses the budget or its own limits (the verdict's, :func:`xcit_export.verdict.judge`:
    the output rule first, every output), with figures (empty: it holds)."""
    verdict = judge(entry, budget_limits(budget, labelled, classifies))
    if verdict.status == "failed":
        return [verdict.error or "failed"]
    misses = [describe(c, "the budget") for c in verdict.failures]
    misses += [f"its own limits: {describe(c)}" for c in judge(entry, entry_limits(entry)).failures]
    misses += [f"its own limits: {c.metric} = {c.value} (limit {c.limit})" for c in recorded_failures(entry)]
    return list(dict.fromkeys(misses))


def per_image_ms(entry: dict) -> float | None:
    """Median latency per image: the batch's median divided by its batch size. Candidates timed at
    different batches (``--batch N`` and the ``@batch1`` variants) are ranked on this figure, the
    time one image costs at the batch each was measured at, so like is compared with like."""
    lat = entry.get("latency") or {}
    if lat.get("median_ms") is None:
        return None
    return lat["median_ms"] / max(int(lat.get("batch") or 1), 1)


OBJECTIVES = ("latency", "throughput")  # --objective: single-stream median per image, or offline images/s


def offline_images_per_s(entry: dict) -> float | None:
    """The offline scenario's images/s (``--scenario offline``; evaluate/scenarios.py), or None."""
    return ((entry.get("scenarios") or {}).get("offline") or {}).get("images_per_s")


def _rank(entry: dict, objective: str) -> float:
    """Lower is better: per-image latency, or minus the offline throughput (--objective)."""
    return -offline_images_per_s(entry) if objective == "throughput" else per_image_ms(entry)


def recommend(entries: list[dict], budget: Budget, left_out: dict[str, str] | None = None, *,
              labelled: bool, classifies: bool = True, allow_no_winner: bool = False,
              objective: str = "latency") -> dict:
    """The ``recommendation`` object of ``report.json`` from the report's target entries.

    The winner is the lowest median latency per image (:func:`per_image_ms`) among entries with
    status ``ok``, a measured latency, and that hold both the budget and their own limits (the
    verdict's); ties go to the earlier entry. Every other entry and every left-out target gets one
    line saying why it lost. No winner fails the run (exit 1) unless ``allow_no_winner``.
    """
    holding, others = [], []
    for e in entries:
        lat = (e.get("latency") or {}).get("median_ms")
        if e.get("status") != "ok":
            why = (e.get("error") or e.get("note") or e.get("status", "did not run")).splitlines()[0][:160]
            others.append((e, f"{e.get('status', 'failed')}: {why}"))
        elif lat is None:
            others.append((e, "no latency measured here" + (f" ({e['note'][:120]})" if e.get("note") else "")))
        elif objective == "throughput" and not offline_images_per_s(e):
            others.append((e, "no offline throughput measured (" + str(((e.get("scenarios") or {}).get("offline") or {})
                               .get("error", "--scenario offline")) + ")"))
        else:
            misses = budget_misses(e, budget, labelled, classifies)
            if misses:
                others.append((e, "; ".join(misses)))
            else:
                holding.append(e)
    winner = min(holding, key=lambda e: _rank(e, objective)) if holding else None
    batches = sorted({int((e.get("latency") or {}).get("batch") or 1) for e in holding})
    mixed = len(batches) > 1
    candidates = []
    for e in entries:
        lat = e.get("latency") or {}
        row: dict[str, Any] = {"target": e["target"], "median_ms": lat.get("median_ms"),
                               "batch": lat.get("batch"), "per_image_ms": per_image_ms(e)}
        if objective == "throughput":
            row["images_per_s"] = offline_images_per_s(e)
        if e is winner:
            row.update(verdict="chosen", why="fastest median latency per image within the accuracy budget"
                       if objective != "throughput" else "highest offline throughput within the accuracy budget")
        elif e in holding and objective == "throughput":
            row.update(verdict="slower", why=f"{offline_images_per_s(winner) / offline_images_per_s(e):.2f}x lower "
                                             f"offline throughput than {winner['target']}")
        elif e in holding:
            ratio = per_image_ms(e) / per_image_ms(winner)
            at = f" (per image, batch {lat.get('batch')} vs {winner['latency'].get('batch')})" if mixed else ""
            row.update(verdict="slower", why=f"{ratio:.2f}x slower than {winner['target']}{at}")
        else:
            row.update(verdict="out", why=next(why for o, why in others if o is e))
        candidates.append(row)
    for name, why in (left_out or {}).items():
        candidates.append({"target": name, "median_ms": None, "verdict": "not run", "why": why})
    rec: dict[str, Any] = {"target": None, "budget": {**asdict(budget), "basis": budget_basis(labelled, classifies)},
                           "candidates": candidates, "allow_no_winner": bool(allow_no_winner),
                           "latency_basis": ("median latency per image (the batch's median / its batch size): "
                                             "candidates were timed at batches " + ", ".join(map(str, batches))
                                             if mixed else "median latency at batch " + str(batches[0])
                                             if batches else "median latency")}
    if objective == "throughput":
        rec["latency_basis"] = ("offline throughput (images/s at the best batch and requests in flight found by the "
                                "offline scenario's search)")
    rec["objective"] = objective
    if winner is not None:
        acc = winner.get("accuracy") or {}
        lat = winner["latency"]
        rec.update(target=winner["target"], artifact=(winner.get("artifact") or {}).get("path"),
                   export_batch=winner.get("export_batch"),
                   latency={**{k: lat.get(k) for k in ("median_ms", "p90_ms", "p99_ms", "batch", "throughput_ips")},
                            "per_image_ms": per_image_ms(winner),
                            **({"offline_images_per_s": offline_images_per_s(winner)} if objective == "throughput" else {})},
                   accuracy={k: acc.get(k) for k in ("top1", "reference_top1", "top1_agreement", "cosine_mean",
                                                     "cosine_min") if acc.get(k) is not None})
    rec["lines"] = recommendation_lines(rec)
    return rec


def recommendation_lines(rec: dict) -> list[str]:
    """The verdict in words: one headline, then one line per other candidate (report.md, CLI, HTML)."""
    if rec.get("target") is None:
        head = ("No recommendation: no candidate holds the accuracy budget and was timed here"
                + ("" if rec.get("allow_no_winner") else " (the run fails; --allow-no-winner accepts that)"))
    else:
        lat, acc = rec["latency"], rec["accuracy"]
        parts = [f"{lat['median_ms']:.2f} ms median at batch {lat['batch']}"]
        if lat.get("offline_images_per_s"):
            parts.insert(0, f"{lat['offline_images_per_s']:,.0f} images/s offline")
        if (lat.get("batch") or 1) > 1 and lat.get("per_image_ms") is not None:
            parts[0] += f", {lat['per_image_ms']:.2f} ms per image"
        if acc.get("top1") is not None and acc.get("reference_top1") is not None:
            parts.append(f"top-1 {acc['top1']:.1%} (PyTorch {acc['reference_top1']:.1%})")
        if acc.get("top1_agreement") is not None:
            parts.append(f"agreement {acc['top1_agreement']:.1%}")
        if acc.get("cosine_mean") is not None:
            parts.append(f"mean cosine {acc['cosine_mean']:.4f}")
        head = f"Recommended: {rec['target']} ({', '.join(parts)})"
    b = rec["budget"]
    lines = [head, f"Budget: top-1 drop <= {_pt(b['max_top1_drop'])}, agreement >= {b['min_top1_agreement']:.1%}, "
                   f"mean cosine >= {b['min_cosine_mean']} where it stands in ({b['basis']})"]
    if rec.get("latency_basis"):
        lines.append(f"Ranked by {rec['latency_basis']}")
    lines += [f"{c['target']}: {c['why']}" for c in rec["candidates"] if c["verdict"] != "chosen"]
    req = rec.get("require_winner")
    if req:
        lines.append(f"Required winner {req['target']}: {'held' if req['ok'] else 'NOT held (the best choice changed)'}")
    return lines


def require_winner(rec: dict, required: str) -> dict:
    """Record in ``rec`` whether the winner is ``required`` (exact candidate name); returns ``rec``."""
    rec["require_winner"] = {"target": required, "ok": rec.get("target") == required}
    rec["lines"] = recommendation_lines(rec)
    return rec
