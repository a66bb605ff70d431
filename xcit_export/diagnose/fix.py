"""``--fix``: rebuild each explained target with its remedy, judge it again, report before and after.

The rebuild is an ordinary run (:func:`xcit_export.pipeline.run`, passed in as ``rerun``) of the
remedied targets only, in ``<out>/fixed/`` (the FP32 ONNX copied there first, so its build key lets
the run reuse it instead of exporting again), with every option the run had plus the remedy's
(:func:`fixed_options`), the same inputs, the same limits, and ``--explain``, so the blamed points'
added error can be read before and after. Each target's entry gets ``fix``:

* ``options`` and ``command``: what was added (``-O`` flags that reproduce the rebuild);
* ``before`` / ``after``: status, whether it passed, accuracy figures, median latency (where this
  machine times the target), size in bytes: what keeping the blamed blocks in higher precision costs;
* ``blamed``: per blamed module, the error it added before and after.
"""

from __future__ import annotations

import shutil
from typing import Callable

from .run import merge_options

Progress = Callable[[str], None]
FIXED_DIR = "fixed"
_ACCURACY = ("top1", "top1_agreement", "cosine_mean", "cosine_min", "max_abs_error")


def summary(entry: dict) -> dict:
    """What a before/after comparison shows of one report entry."""
    acc = entry.get("accuracy") or {}
    out = {"status": entry.get("status"), "passed": entry.get("passed"),
           **{k: acc.get(k) for k in _ACCURACY if k in acc},
           "median_ms": (entry.get("latency") or {}).get("median_ms"),
           "size_bytes": (entry.get("artifact") or {}).get("size_bytes")}
    if entry.get("error"):
        out["error"] = entry["error"]
    return out


def _added(entry: dict, module: str):
    for row in (entry.get("divergence") or {}).get("points", []):
        if row["module"] == module:
            return row.get("added")
    return None


def fixed_options(plan, remedies: dict[str, dict]):
    """The :class:`~xcit_export.options.RunOptions` of the rebuild: the run's, for the remedied targets
    only (named: ``--target auto``'s budget does not apply), each with the options it was built with
    plus its remedy's (:func:`.run.merge_options`), their thresholds, in ``<out>/fixed``, explained."""
    o = plan.options
    return o.replace(
        targets=tuple(remedies), options={}, device=None, hint=None,
        target_options={name: merge_options(plan.options_of(name), rem["options"]) for name, rem in remedies.items()},
        thresholds={k: v for k, v in o.thresholds.items() if k in remedies},
        out=plan.out_dir / FIXED_DIR, explain=True, fix=False, latency_batches=(), candidates=(),
        max_top1_drop=None, min_top1_agreement=None, min_cosine_mean=None, require_winner=None)


def apply(plan, report: dict, rerun: Callable, progress: Progress = lambda msg: None) -> None:
    """Rebuild the remedied targets of ``report`` (module docstring) with ``rerun`` (the pipeline's
    ``run(options, progress)`` on the run's own inputs, passed in so this stage does not import the
    pipeline that calls it); sets ``fix`` on their entries and ``report["fix"]`` (where the rebuild
    lives, or why nothing was)."""
    remedies = {t["target"]: t["divergence"]["remedy"] for t in report["targets"]
                if ((t.get("divergence") or {}).get("remedy") or {}).get("options")}
    if not remedies:
        report["fix"] = {"note": "no remedy to apply: no explained target has one (see each divergence's remedy)"}
        return
    fixed_dir = plan.out_dir / FIXED_DIR
    if (plan.out_dir / "onnx").is_dir():
        shutil.copytree(plan.out_dir / "onnx", fixed_dir / "onnx", dirs_exist_ok=True)
    progress(f"Fix: rebuilding {', '.join(remedies)} with the remedies in {fixed_dir}")
    fixed = rerun(fixed_options(plan, remedies), progress)
    after = {t["target"]: t for t in fixed["targets"]}
    for entry in report["targets"]:
        name = entry["target"]
        if name not in remedies:
            continue
        new = after.get(name, {})
        entry["fix"] = {"options": remedies[name]["options"], "command": remedies[name].get("command"),
                        "before": summary(entry), "after": summary(new),
                        "blamed": [{"module": m, "added_before": _added(entry, m), "added_after": _added(new, m)}
                                   for m in remedies[name]["modules"]],
                        "worst_after": (new.get("divergence") or {}).get("worst")}
    report["fix"] = {"out_dir": str(fixed_dir), "report": str(fixed_dir / "report.json"), "targets": list(remedies)}
