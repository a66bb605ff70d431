"""Accuracy-regression gates: does a report still hold against thresholds and a baseline?

Two kinds of check, one function each, both returning :class:`Check` rows:

* :func:`threshold_checks`: absolute thresholds and latency budgets from a recipe (also run at the
  end of every recipe run, so ``xcit-export --recipe`` fails when a target misses its bar);
* :func:`baseline_checks`: no metric may be worse than the accepted baseline by more than a
  tolerance (labelled top-1 and top-1 agreement: 1 point by default; cosine: 1e-3).

:func:`gate` combines both for ``xcit-export gate``; it refuses a baseline of another model or
input size and a report of a newer schema than this tool reads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ReportError
from ..evaluate.validate import output_problems
from .document import SCHEMA_VERSION

DEFAULT_TOLERANCES = {"top1": 0.01, "top1_agreement": 0.01, "top5_agreement": 0.01, "cosine_mean": 1e-3}


@dataclass
class Check:
    target: str
    metric: str
    value: float | str | None
    limit: float | str | None
    ok: bool
    why: str

    @property
    def skipped(self) -> bool:
        return self.why.startswith("skipped")

    def line(self) -> str:
        return f"{self.target}: {self.metric} = {self.value} {self.why} (limit {self.limit})"


def _acc(entry: dict, key: str):
    return entry.get("accuracy", {}).get(key)


def output_checks(entry: dict) -> list[Check]:
    """The one rule (``validate.output_problems``) on every output of a report entry: a failing
    check per problem (NaN/inf outputs, a constant output or reference). Applied by every gate,
    also to a report whose entry says ``ok`` (one written before the rule, or edited)."""
    name = entry["target"]
    outputs = entry.get("outputs") or ({"": entry["accuracy"]} if entry.get("accuracy") else {})
    return [Check(name, f"outputs{' ' + out if out else ''}", "broken", "finite, input-dependent", False, problem)
            for out, acc in outputs.items() for problem in output_problems(acc)]


def threshold_checks(entry: dict, thresholds: dict, budget: dict) -> list[Check]:
    """Absolute checks of one report entry against a recipe's thresholds and latency budget.

    A broken output (:func:`output_checks`) fails before any threshold is looked at."""
    name = entry["target"]
    checks: list[Check] = output_checks(entry)
    if checks:
        return checks
    if entry.get("status") != "ok":
        return [Check(name, "status", entry.get("status"), "ok", False,
                      f"target did not run ({entry.get('error') or entry.get('note') or 'no detail'})")]
    acc = entry.get("accuracy", {})
    for key, limit in thresholds.items():
        if key == "max_top1_drop":
            top1, ref = acc.get("top1"), acc.get("reference_top1")
            value = None if top1 is None or ref is None else round(ref - top1, 6)
            ok = value is not None and value <= limit
            checks.append(Check(name, "top1 drop vs PyTorch", value, limit, ok, "exceeds" if not ok else "ok"))
            continue
        metric = {"min_top1_agreement": "top1_agreement", "min_top5_agreement": "top5_agreement",
                  "min_cosine": "cosine_min", "max_abs_error": "max_abs_error", "min_top1": "top1"}[key]
        value = acc.get(metric)
        # NaN compares False either way; a non-finite figure never holds a limit.
        ok = value is not None and value == value and (value <= limit if key.startswith("max") else value >= limit)
        checks.append(Check(name, metric, value, limit, ok,
                            "ok" if ok else ("missing from report" if value is None else
                                             "above maximum" if key.startswith("max") else "below minimum")))
    lat = entry.get("latency")
    for key, limit in budget.items():
        if lat is None:
            # e.g. a TensorRT target on a host without a GPU: its engine runs on the device, so the
            # budget is checked there (device-check); here it is reported as skipped, not passed.
            checks.append(Check(name, f"latency {key}", None, limit, True,
                                f"skipped: not measured on this device ({entry.get('device', 'no runner')})"))
            continue
        value = lat.get(key)
        ok = value is not None and value <= limit
        checks.append(Check(name, f"latency {key}", value, limit, ok, "ok" if ok else "over budget"))
    return checks


def baseline_checks(entry: dict, base: dict, tolerances: dict[str, float] = DEFAULT_TOLERANCES) -> list[Check]:
    """Relative checks: ``entry`` may not be worse than the baseline entry beyond ``tolerances``."""
    name = entry["target"]
    if base.get("status") == "ok" and entry.get("status") != "ok":
        return [Check(name, "status", entry.get("status"), "ok", False,
                      f"passed in the baseline, now {entry.get('status')}: {entry.get('error', '')}")]
    checks = output_checks(entry)
    if checks:
        return checks
    for metric, tol in tolerances.items():
        new, old = _acc(entry, metric), _acc(base, metric)
        if old is None:
            continue
        ok = new is not None and new == new and new >= old - tol
        checks.append(Check(name, metric, new, round(old - tol, 6), ok,
                            "ok" if ok else f"dropped from baseline {old:.6g} by more than {tol:g}"))
    return checks


def read_report(path: str | Path) -> dict:
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


def gate(report: dict, baseline: dict | None, thresholds: dict[str, dict] | None = None,
         tolerances: dict[str, float] = DEFAULT_TOLERANCES, require_winner: str | None = None) -> list[Check]:
    """Every check for every target; the gate holds when all are ``ok``."""
    if baseline is not None:
        for field in ("name", "num_classes", "input_size"):
            if baseline["model"].get(field) != report["model"].get(field):
                raise ReportError(
                    f"baseline is for model {baseline['model'].get('name')} "
                    f"({baseline['model'].get('num_classes')} classes, input {baseline['model'].get('input_size')}) "
                    f"but the report is for {report['model'].get('name')} ({report['model'].get('num_classes')} "
                    f"classes, input {report['model'].get('input_size')}); compare like with like or pass "
                    f"--update-baseline to start a new baseline")
    entries = {t["target"]: t for t in report["targets"]}
    checks: list[Check] = []
    if baseline is not None:
        for base in baseline["targets"]:
            if base["target"] not in entries:
                checks.append(Check(base["target"], "present", "missing", "present", False,
                                    "in the baseline but not in the report"))
            else:
                checks += baseline_checks(entries[base["target"]], base, tolerances)
    for name, limits in (thresholds or {}).items():
        if name not in entries:
            checks.append(Check(name, "present", "missing", "present", False, "has thresholds but is not in the report"))
            continue
        checks += threshold_checks(entries[name], limits.get("thresholds", {}), limits.get("latency_budget", {}))
    if thresholds is None:
        # Without a recipe the report's own stored thresholds (from the run's recipe) apply.
        for entry in report["targets"]:
            checks += [Check(**c) for c in entry.get("checks", [])]
    # Every target in the report, thresholds or not: a broken output never passes a gate.
    seen = {(c.target, c.metric, c.why) for c in checks}
    for entry in report["targets"]:
        checks += [c for c in output_checks(entry) if (c.target, c.metric, c.why) not in seen]
    if require_winner:
        checks.append(winner_check(report, require_winner))
    return checks


def checks_to_dicts(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
