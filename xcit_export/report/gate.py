"""Accuracy-regression gates: does a report still hold against its limits and a baseline?

Every target of the report is judged by the one verdict (:func:`xcit_export.verdict.judge`): its
status (a target that is not ``ok`` fails, whether or not the baseline has it; ``built``, nothing
run here, is a SKIP line saying so), the output rule on every output, and its limits: a recipe's
thresholds (``gate --recipe``), else those the report recorded, else the default limits of its
precision class. Then :func:`baseline_checks`: no figure may be worse than the accepted baseline by
more than a tolerance (labelled top-1 and top-1/top-5 agreement: 1 point; mean cosine: 1e-3), on
every output, when the two reports were evaluated on the same kind and number of inputs.

:func:`read_report` reads a run's ``report.json``, a device-check ``report.json`` and a matrix's
``matrix.json`` (each cell a target named ``<model>/<target>@<kind>``), and refuses anything else in
one line; :func:`gate` refuses a baseline of another model or input size or kind of report.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ReportError
from ..verdict import Check, judge, limits_for, recorded_failures
from .document import SCHEMA_VERSION, evaluated_on, report_entries

DEFAULT_TOLERANCES = {"top1": 0.01, "top1_agreement": 0.01, "top5_agreement": 0.01, "cosine_mean": 1e-3}

__all__ = ["Check", "DEFAULT_TOLERANCES", "baseline_checks", "checks_to_dicts", "gate", "read_report",
           "threshold_checks", "winner_check"]


def threshold_checks(entry: dict, thresholds: dict, budget: dict) -> list[Check]:
    """The verdict's checks of one report entry against a recipe's ``thresholds`` and latency ``budget``
    (over the default limits of its precision class)."""
    limits = limits_for(entry.get("precision"), thresholds, budget, entry.get("inference_precision"))
    return judge(entry, limits).checks


def _outputs_of(entry: dict) -> dict:
    return entry.get("outputs") or ({"": entry["accuracy"]} if entry.get("accuracy") else {})


def baseline_checks(entry: dict, base: dict, tolerances: dict[str, float] = DEFAULT_TOLERANCES) -> list[Check]:
    """Relative checks: no figure of ``entry`` (on any output) may be worse than the baseline entry's
    beyond ``tolerances``. Only for a target whose status holds (the verdict fails the others)."""
    name = entry["target"]
    checks: list[Check] = []
    new_outputs, old_outputs = _outputs_of(entry), _outputs_of(base)
    for out, old_acc in old_outputs.items():
        new_acc = new_outputs.get(out, {} if len(new_outputs) > 1 else next(iter(new_outputs.values()), {}))
        for metric, tol in tolerances.items():
            new, old = new_acc.get(metric), old_acc.get(metric)
            if old is None:
                continue
            label = metric if len(old_outputs) == 1 else f"{metric} [{out}]"
            ok = new is not None and new == new and new >= old - tol
            checks.append(Check(name, label, new, round(old - tol, 6), ok,
                                "ok" if ok else f"dropped from baseline {old:.6g} by more than {tol:g}"))
    return checks


def read_report(path: str | Path) -> dict:
    """A report JSON (run, device-check, matrix or merged), checked to be one this version reads."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"report '{path}' does not exist") from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"report '{path}' is not readable JSON ({exc})") from None
    version = report.get("schema_version") if isinstance(report, dict) else None
    if not isinstance(version, int):
        raise ReportError(f"'{path}' is not an xcit-export report (no schema_version)")
    if version > SCHEMA_VERSION:
        raise ReportError(f"report '{path}' has schema version {version}, newer than this xcit-export reads "
                          f"({SCHEMA_VERSION}); upgrade xcit-export")
    return report


def winner_check(report: dict, required: str) -> Check:
    """Is ``required`` the ``--target auto`` recommendation of ``report``? (CI notices a change.)"""
    rec = report.get("recommendation")
    if rec is None:
        return Check("recommendation", "winner", None, required, False,
                     "missing: the report is not from --target auto")
    ok = rec.get("target") == required
    return Check("recommendation", "winner", rec.get("target"), required, ok,
                 "ok" if ok else "changed: the best choice on this device is now another candidate")


def _recommendation_checks(report: dict, recorded_winner: bool = True) -> list[Check]:
    """A ``--target auto`` report (or an auto matrix) whose recommendation found no winner fails,
    unless the run allowed none (``--allow-no-winner``); so does one whose run required a winner that
    lost (``recorded_winner``; gate's own ``--require-winner`` replaces it)."""
    recs = [report["recommendation"]] if report.get("recommendation") else list(report.get("recommendations") or [])
    out = []
    for rec in recs:
        where = " ".join(str(rec[k]) for k in ("model", "device_kind") if rec.get(k))
        label = f"recommendation{' ' + where if where else ''}"
        if rec.get("target") is None and not rec.get("allow_no_winner"):
            out.append(Check(label, "winner", None, "a candidate within the budget", False,
                             "none: no candidate holds the accuracy budget (--allow-no-winner accepts that)"))
        elif recorded_winner and rec.get("require_winner") and not rec["require_winner"].get("ok"):
            out.append(Check(label, "winner", rec.get("target"), rec["require_winner"].get("target"), False,
                             "changed: the run's required winner was not recommended"))
    return out


def _check_same_model(report: dict, baseline: dict) -> None:
    kinds = (report.get("kind", "run"), baseline.get("kind", "run"))
    if ("matrix" in kinds or "merged" in kinds) and kinds[0] != kinds[1]:
        raise ReportError(f"the report is a {kinds[0]} report and the baseline a {kinds[1]} report; gate a "
                          f"matrix.json against a matrix.json, a report.json against a report.json")
    if kinds[0] == "matrix":
        return  # each cell names its model; cells are matched by model, target and device kind
    if not isinstance(baseline.get("model"), dict) or not isinstance(report.get("model"), dict):
        raise ReportError("the report or the baseline names no model; both must be report.json files xcit-export wrote")
    for field in ("name", "num_classes", "input_size"):
        if baseline["model"].get(field) != report["model"].get(field):
            raise ReportError(
                f"baseline is for model {baseline['model'].get('name')} "
                f"({baseline['model'].get('num_classes')} classes, input {baseline['model'].get('input_size')}) "
                f"but the report is for {report['model'].get('name')} ({report['model'].get('num_classes')} "
                f"classes, input {report['model'].get('input_size')}); compare like with like or pass "
                f"--update-baseline to start a new baseline")


def gate(report: dict, baseline: dict | None, thresholds: dict[str, dict] | None = None,
         tolerances: dict[str, float] = DEFAULT_TOLERANCES, require_winner: str | None = None) -> list[Check]:
    """Every check for every target; the gate holds when all are ``ok``.

    ``thresholds``: a recipe's (``Recipe.thresholds()``), by target name; a target without them is
    judged by the limits its report recorded, else the defaults of its precision class.
    """
    entries, outputs = report_entries(report)
    if baseline is not None:
        _check_same_model(report, baseline)
    checks: list[Check] = []
    by_name = {e["target"]: e for e in entries}
    for entry in entries:
        given = (thresholds or {}).get(entry["target"])
        limits = None
        if given is not None:
            limits = limits_for(entry.get("precision"), given.get("thresholds"), given.get("latency_budget"),
                                entry.get("inference_precision"))
        verdict = judge(entry, limits, outputs=outputs.get(entry["target"]))
        checks += verdict.checks
        checks += recorded_failures(entry, verdict.checks) if limits is None else []
        if verdict.status == "built":
            checks.append(Check(entry["target"], "status", "built", "ok", True,
                                f"skipped: built, not run here ({(entry.get('note') or 'no runner').splitlines()[0]})"))
    if baseline is not None:
        base_entries, _ = report_entries(baseline)
        same_inputs = evaluated_on(report) == evaluated_on(baseline)
        for base in base_entries:
            entry = by_name.get(base["target"])
            if entry is None:
                checks.append(Check(base["target"], "present", "missing", "present", False,
                                    "in the baseline but not in the report"))
            elif not same_inputs:
                checks.append(Check(base["target"], "baseline", None, None, True,
                                    f"skipped: not comparable: the report was evaluated on "
                                    f"{_inputs(evaluated_on(report))}, the baseline on "
                                    f"{_inputs(evaluated_on(baseline))}"))
            elif entry.get("status") in ("ok", "built"):
                checks += baseline_checks(entry, base, tolerances)
    for name in (thresholds or {}):
        if name not in by_name:
            checks.append(Check(name, "present", "missing", "present", False, "has thresholds but is not in the report"))
    checks += _recommendation_checks(report, recorded_winner=not require_winner)
    if require_winner:
        checks.append(winner_check(report, require_winner))
    return checks


def _inputs(identity: tuple) -> str:
    kind, count = identity
    return {"run": f"{count} inputs of a run", "golden": f"{count} golden inputs of a device bundle"}.get(
        kind, f"the cells' evaluation sets ({count})")


def checks_to_dicts(checks: list[Check]) -> list[dict]:
    return [c.to_dict() for c in checks]

