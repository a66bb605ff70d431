"""The verdict: whether a compared target passes, decided in one place (docs/verdict.md).

Every path that passes or fails a target calls :func:`judge`: the single run and the recipe matrix
(the one engine: ``engine/record.py``), ``--target auto`` (``evaluate/auto.py``), ``gate``
(``report/gate.py``), ``device-check`` at every size (``device/bundle.py``) and ``report merge``. It
takes one report entry (a matrix cell row and a device-check result have the same keys) and its
limits, and decides in this order:

1. the entry's own status: a target that did not build, load or run is ``failed``;
2. the output rule (:func:`output_problems`) on EVERY output: NaN/inf, a constant output or
   reference, a figure that cannot be computed: ``failed``;
3. the output count: every output the reference has must have been compared (a runner that
   returns fewer outputs than PyTorch): ``failed``;
4. the limits (:func:`limits_for`): a recipe's thresholds over the documented defaults of the
   target's precision class (:data:`DEFAULT_LIMITS`), each on every output that has the figure;
5. the latency budget (skipped, never passed, where nothing was timed).

The status is then ``failed`` (1-3), else the entry's own: ``ok`` (it ran on its runtime) or
``built`` (nothing ran the deployed artifact here: a TensorRT engine on a host; its accuracy is the
precision-ready ONNX's on a stand-in). :attr:`Verdict.passed` is a holding status and every check ok.

Standard library only, Python 3.8: this module is packed into ``device_check.pyz``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

# The statuses in which a target holds (``built``: the artifact exists and was validated where it can
# be, e.g. a TensorRT engine that can only run on the device). Anything else fails.
HOLDING_STATUSES = ("ok", "built")

# Precision classes (docs/verdict.md, "Default limits"). A target runs in its precision's class, or
# in fp16 when its runtime computes in bf16/f16 (OpenVINO's inference_precision).
PRECISION_CLASSES = ("fp32", "fp16", "int8")
_CLASS_OF = {"fp32": "fp32", "fp16": "fp16", "bf16": "fp16", "f16": "fp16", "int8": "int8"}

# Limits every target gets without a recipe, per precision class: figures against PyTorch on the
# evaluation set. The relative error (per input, ||target - PyTorch|| / ||PyTorch||) sees a scale or
# a shift of the outputs, which the cosine and the top-1 class do not (3x logits: 2.0). FP32 is held
# on its worst input; FP16/BF16 and INT8, whose worst input on a large set is a tail, on the mean,
# with a loose worst-input backstop. Measured margins are in docs/verdict.md; a recipe's threshold
# of the same key replaces the default.
DEFAULT_LIMITS: Dict[str, Dict[str, float]] = {
    "fp32": {"max_rel_error": 0.01, "min_cosine": 0.9999},
    "fp16": {"max_rel_error_mean": 0.05, "max_rel_error": 0.3, "min_cosine_mean": 0.99},
    "int8": {"max_rel_error_mean": 0.25, "max_rel_error": 1.0, "min_cosine_mean": 0.95},
}

# Every limit key: (the accuracy figure it reads, "min" or "max", the figure in words). Recipe
# thresholds (recipe.THRESHOLD_KEYS), the defaults, the --target auto budget and device-check's
# thresholds all use these keys. ``max_top1_drop`` reads two figures (reference_top1 - top1).
LIMIT_KEYS: Dict[str, tuple] = {
    "min_top1_agreement": ("top1_agreement", "min", "top-1 agreement"),
    "min_top5_agreement": ("top5_agreement", "min", "top-5 agreement"),
    "min_cosine": ("cosine_min", "min", "cosine (worst input)"),
    "min_cosine_mean": ("cosine_mean", "min", "mean cosine"),
    "max_abs_error": ("max_abs_error", "max", "largest absolute error"),
    "max_rel_error": ("rel_error_max", "max", "relative error (worst input)"),
    "max_rel_error_mean": ("rel_error_mean", "max", "mean relative error"),
    "min_top1": ("top1", "min", "labelled top-1"),
    "max_top1_drop": ("top1 drop vs PyTorch", "max", "top-1 drop"),
}
DROP = "max_top1_drop"
_FRACTIONS = ("top1_agreement", "top5_agreement", "top1")
_EPS = 1e-12  # float noise in figures summed from counts


@dataclass
class Check:
    """One check of one target: ``metric`` (an accuracy figure, ``status``, ``outputs``, ``latency
    median_ms``...), its ``value``, the ``limit``, whether it holds, and why (``skipped: ...``
    checks hold but were not measured)."""

    target: str
    metric: str
    value: Any
    limit: Any
    ok: bool
    why: str

    @property
    def skipped(self) -> bool:
        return self.why.startswith("skipped")

    def line(self) -> str:
        return f"{self.target}: {self.metric} = {self.value} {self.why} (limit {self.limit})"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Limits:
    """What a target must hold: ``thresholds`` (keys of :data:`LIMIT_KEYS`) and ``latency_budget``
    (``median_ms``... in ms). ``required``: the threshold keys whose figure must be in the entry
    (a recipe's, the auto budget's); a default limit whose figure an entry lacks (no top-1 for a
    feature map, a report written before the figure existed) is not applied. ``source`` says where
    they come from, for the report."""

    thresholds: Mapping[str, float] = field(default_factory=dict)
    latency_budget: Mapping[str, float] = field(default_factory=dict)
    required: frozenset = frozenset()
    source: str = "default"

    def to_dict(self) -> dict:
        return {"thresholds": dict(self.thresholds), "latency_budget": dict(self.latency_budget),
                "required": sorted(self.required), "source": self.source}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Limits":
        return cls(dict(data.get("thresholds") or {}), dict(data.get("latency_budget") or {}),
                   frozenset(data.get("required") or ()), str(data.get("source") or "report"))


@dataclass
class Verdict:
    """:func:`judge`'s answer: the status, every check, and the error of a ``failed`` target."""

    status: str
    checks: List[Check]
    error: Optional[str] = None
    limits: Optional[Limits] = None

    @property
    def passed(self) -> bool:
        return self.status in HOLDING_STATUSES and all(c.ok for c in self.checks)

    @property
    def failures(self) -> List[Check]:
        return [c for c in self.checks if not c.ok]

    def apply(self, entry: dict) -> dict:
        """Write the verdict into ``entry`` (``status``, ``error``, ``checks``, ``passed``, ``limits``)."""
        entry["status"] = self.status
        if self.error:
            entry["error"] = self.error
        entry["checks"] = [c.to_dict() for c in self.checks]
        entry["passed"] = self.passed
        if self.limits is not None:
            entry["limits"] = self.limits.to_dict()
        return entry


# --------------------------------------------------------------------------------------------
# The output rule
# --------------------------------------------------------------------------------------------

def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def output_problems(accuracy: Mapping[str, Any]) -> List[str]:
    """THE rule deciding whether a compared output may pass at all (empty list: it may).

    Applied by :func:`judge` to every output before any limit. An output with a NaN or an
    infinity, or whose cosine with the reference could not be computed, fails: no tolerance can
    hold for it and its agreement figures mean nothing. So does a constant output (the artifact
    ignores its input) and a constant reference (agreement with it means nothing).
    """
    problems = []
    count = accuracy.get("count")
    if accuracy.get("reference_constant"):
        problems.append(f"the PyTorch reference gives the same output for all {count} evaluation inputs: agreement "
                        f"with it means nothing (a zeroed head, wrong weights, or one image repeated?)")
    elif accuracy.get("constant"):
        problems.append(f"the output is the same for all {count} evaluation inputs while PyTorch's is not: the "
                        f"artifact ignores its input")
    bad = accuracy.get("nonfinite_count")
    if bad is None and accuracy.get("finite") is False:
        bad = "some"
    if bad:
        problems.append(f"{bad} of {count} outputs are not finite (NaN or inf): the artifact is broken "
                        f"(often an FP16 overflow), whatever its agreement figures say")
    else:
        # A relative error is inf, rightly, where the reference is all zeros and the target is not.
        for key in ("cosine_mean", "cosine_min", "max_abs_error", "mean_abs_error", "rel_error_mean", "rel_error_max"):
            value = accuracy.get(key)
            if isinstance(value, float) and (math.isnan(value) or (math.isinf(value) and not key.startswith("rel"))):
                problems.append(f"{key} is {value}: the outputs cannot be compared with the reference")
                break
    return problems


def output_count_problem(got: Sequence[str], expected: Sequence[str]) -> Optional[str]:
    """Why the outputs compared (``got``) are not every output of the reference (None: they are)."""
    missing = [name for name in expected if name not in got]
    if not missing:
        return None
    return (f"{len(missing)} of the reference's {len(expected)} outputs ({', '.join(expected)}) were not compared "
            f"({', '.join(missing)} missing): the artifact returns fewer outputs than PyTorch")


def returned_outputs_problem(count: int, expected: Sequence[str]) -> Optional[str]:
    """Why a runner that returned ``count`` outputs cannot be compared with a reference that has
    ``expected`` (None: the counts agree). Comparing the first ``count`` would hide the rest."""
    if count == len(expected):
        return None
    return (f"the artifact returned {count} output(s) where PyTorch gives {len(expected)} ({', '.join(expected)}): "
            f"it does not have the model's outputs")


# --------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------

def precision_class(precision: Optional[str], inference_precision: Optional[str] = None) -> str:
    """``fp32``, ``fp16`` (fp16 and bf16) or ``int8`` for a target's ``precision``; an fp32 target
    whose runtime computes in bf16/f16 (``inference_precision``) is in ``fp16``."""
    cls = _CLASS_OF.get(str(precision or "fp32").lower(), "fp32")
    runtime = _CLASS_OF.get(str(inference_precision or "").lower())
    if cls == "fp32" and runtime == "fp16":
        return "fp16"
    return cls


def limits_for(precision: Optional[str] = None, thresholds: Optional[Mapping[str, float]] = None,
               latency_budget: Optional[Mapping[str, float]] = None, inference_precision: Optional[str] = None,
               source: str = "recipe") -> Limits:
    """The limits of a target of ``precision``: its class's :data:`DEFAULT_LIMITS`, with each of a
    recipe's ``thresholds`` replacing the default of the same key (and required in the entry)."""
    cls = precision_class(precision, inference_precision)
    merged = dict(DEFAULT_LIMITS[cls])
    given = dict(thresholds or {})
    unknown = sorted(set(given) - set(LIMIT_KEYS))
    if unknown:
        raise ValueError(f"unknown limit(s) {', '.join(unknown)}; known: {', '.join(LIMIT_KEYS)}")
    merged.update(given)
    label = f"defaults for {cls}" if not given else f"{source} over the defaults for {cls}"
    return Limits(merged, dict(latency_budget or {}), frozenset(given), label)


def entry_limits(entry: Mapping[str, Any], thresholds: Optional[Mapping[str, Any]] = None) -> Limits:
    """The limits of a report entry: ``thresholds`` (a recipe's ``{"thresholds": ..., "latency_budget":
    ...}`` for it) when given, else those the report recorded (``entry["limits"]``), else the
    defaults of its precision class."""
    if thresholds is not None:
        return limits_for(entry.get("precision"), thresholds.get("thresholds"), thresholds.get("latency_budget"),
                          entry.get("inference_precision"))
    if isinstance(entry.get("limits"), Mapping):
        return Limits.from_dict(entry["limits"])
    return limits_for(entry.get("precision"), inference_precision=entry.get("inference_precision"))


def _figure(accuracy: Mapping[str, Any], key: str) -> Any:
    if key == DROP:
        top1, ref = accuracy.get("top1"), accuracy.get("reference_top1")
        return None if top1 is None or ref is None else round(ref - top1, 6)
    return accuracy.get(LIMIT_KEYS[key][0])


def holds(key: str, value: Any, limit: float) -> bool:
    """Whether figure ``value`` holds limit ``key`` (a NaN or a missing figure never holds)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        return False
    if LIMIT_KEYS[key][1] == "max":
        return value <= limit + _EPS
    return value >= limit - _EPS


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def describe(check: Check, limit_word: str = "the limit") -> str:
    """A failing limit check as a sentence with its figures (the ``--target auto`` losers' lines);
    ``limit_word`` names what a top-1 drop went over ("the budget")."""
    key = next((k for k, spec in LIMIT_KEYS.items() if check.metric.split(" [")[0] == spec[0]), None)
    if key is None or check.ok:
        return check.why
    words = LIMIT_KEYS[key][2]
    where = check.metric[len(check.metric.split(" [")[0]):]
    value, limit = check.value, check.limit
    if value is None:
        return f"no {words} in the report{where}"
    if key == DROP:
        return (f"{100 * (value - limit):.1f} pt over {limit_word} (top-1 drop {100 * value:.1f} pt > "
                f"{100 * limit:.1f} pt)")
    if LIMIT_KEYS[key][0] in _FRACTIONS:
        shown = f"{_pct(value)} {'<' if LIMIT_KEYS[key][1] == 'min' else '>'} {_pct(limit)}"
    elif key.startswith("min_cosine"):
        shown = f"{value:.4f} < {limit:.4f}"
    else:
        shown = f"{value:.4g} > {limit:.4g}"
    return f"{words}{where} {shown}"


def limit_checks(name: str, per_output: Mapping[str, Mapping[str, Any]], limits: Limits) -> List[Check]:
    """Each of ``limits.thresholds`` on every output that has the figure (``per_output``: output name
    -> accuracy figures; the first is the primary output). A required key whose figure the primary
    output lacks fails ("missing from report"); labelled and agreement figures exist for class
    scores only, so on other outputs they are not applied."""
    checks: List[Check] = []
    outputs = list(per_output.items())
    for key, limit in limits.thresholds.items():
        if key not in LIMIT_KEYS:
            continue
        metric, direction, _ = LIMIT_KEYS[key]
        for i, (out, acc) in enumerate(outputs):
            value = _figure(acc, key)
            label = metric if len(outputs) == 1 else f"{metric} [{out}]"
            if value is None:
                if i == 0 and key in limits.required:
                    checks.append(Check(name, label, None, limit, False, "missing from report"))
                continue
            ok = holds(key, value, limit)
            why = "ok" if ok else ("exceeds" if key == DROP else "above maximum" if direction == "max" else
                                   "below minimum")
            checks.append(Check(name, label, value, limit, ok, why))
    return checks


def latency_checks(name: str, entry: Mapping[str, Any], budget: Mapping[str, float]) -> List[Check]:
    """The latency budget; a figure not measured here (a TensorRT engine on a host without a GPU: its
    budget is checked by device-check) is reported as skipped, not passed."""
    lat = entry.get("latency") or None
    checks = []
    for key, limit in budget.items():
        if lat is None:
            checks.append(Check(name, f"latency {key}", None, limit, True,
                                f"skipped: not measured on this device ({entry.get('device', 'no runner')})"))
            continue
        value = lat.get(key)
        ok = value is not None and value <= limit
        checks.append(Check(name, f"latency {key}", value, limit, ok, "ok" if ok else "over budget"))
    return checks


# --------------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------------

def per_output_figures(entry: Mapping[str, Any], outputs: Optional[Sequence[str]] = None) -> Dict[str, Mapping]:
    """Output name -> accuracy figures of ``entry`` (``outputs``: the reference's output names, in order)."""
    if entry.get("outputs"):
        return dict(entry["outputs"])
    if entry.get("accuracy"):
        return {(outputs[0] if outputs else ""): entry["accuracy"]}
    return {}


def worst_output(per_output: Mapping[str, Mapping[str, Any]]) -> Optional[str]:
    """The output the table shows for a multi-output model: a broken one first, then the largest
    relative error, then the lowest cosine."""
    def badness(item):
        name, acc = item
        rel = acc.get("rel_error_max")
        cos = acc.get("cosine_min")
        return (bool(output_problems(acc)),
                math.inf if rel is None or rel != rel else rel,
                -(cos if _finite_number(cos) else -math.inf))
    return max(per_output.items(), key=badness)[0] if per_output else None


def record_outputs(entry: dict, per_output: Mapping[str, Mapping[str, Any]]) -> dict:
    """Put the compared outputs in a report entry: ``accuracy`` (the only output, or for a
    multi-output model the worst one: :func:`worst_output`, named in ``worst_output``) and, for a
    multi-output model, every output's figures in ``outputs``."""
    if not per_output:
        return entry
    if len(per_output) == 1:
        entry["accuracy"] = dict(next(iter(per_output.values())))
        return entry
    worst = worst_output(per_output)
    entry["outputs"] = {name: dict(acc) for name, acc in per_output.items()}
    entry["accuracy"] = dict(per_output[worst])
    entry["worst_output"] = worst
    return entry


def built_note(note: Optional[str], where: str) -> str:
    """The report line of a ``built`` target: why nothing ran it here, and what to run on the device
    (``where``: its artifact folder)."""
    head = (note or "built, not run here").rstrip(". ")
    return (f"{head}. Not run here: status 'built' (exit status 0; no pass or fail for the deployed artifact). "
            f"On the device: xcit-export bundle {where}, copy the bundle there and run python3 device_check.pyz . "
            f"in it (docs/device.md)")


def recorded_failures(entry: Mapping[str, Any], seen: Sequence[Check] = ()) -> List[Check]:
    """Failing checks stored in a report entry that recorded no ``limits`` (a report written before
    they were: its recipe's thresholds then), in either format (``metric/limit/ok``, or an older
    device-check's ``check/threshold/passed``), less those in ``seen``. Such a report keeps failing
    what it failed when it was written."""
    if isinstance(entry.get("limits"), Mapping):
        return []
    have = {(c.metric, c.value) for c in seen}
    out = []
    for c in entry.get("checks") or []:
        if not isinstance(c, Mapping):
            continue
        metric, limit = c.get("metric", c.get("check")), c.get("limit", c.get("threshold"))
        if c.get("ok", c.get("passed")) is False and (metric, c.get("value")) not in have:
            out.append(Check(str(entry.get("target", "?")), str(metric), c.get("value"), limit, False,
                             str(c.get("why") or "failed when the report was written")))
    return out


def recommendation_held(rec: Mapping[str, Any]) -> bool:
    """A ``--target auto`` recommendation holds when it has a winner (or the run allowed none) and
    the required winner, if one was asked for, won."""
    if rec.get("target") is None and not rec.get("allow_no_winner"):
        return False
    return bool((rec.get("require_winner") or {}).get("ok", True))


def report_passed(report: Mapping[str, Any]) -> bool:
    """The exit status of a run, a matrix or a device-check (True: exit 0). With ``--target auto``
    the recommendation(s) decide; otherwise every target (cell) must hold: a holding status and no
    failed check."""
    recs = [report["recommendation"]] if report.get("recommendation") else list(report.get("recommendations") or [])
    if recs:
        return all(recommendation_held(r) for r in recs)
    entries = report.get("cells") if report.get("kind") == "matrix" else report.get("targets")
    return bool(entries) and all(e.get("status") in HOLDING_STATUSES and e.get("passed") is not False
                                 for e in entries)


def judge(entry: Mapping[str, Any], limits: Optional[Limits] = None, *,
          outputs: Optional[Sequence[str]] = None) -> Verdict:
    """The verdict on one report entry (see the module docstring for the order of the rules).

    ``entry``: ``target``, ``status`` (``ok``: ran on its runtime; ``built``: only a stand-in ran, or
    nothing; ``failed``: with ``error``), ``accuracy`` and, for a multi-output model, ``outputs``
    (name -> figures), ``latency``, ``precision``. ``limits``: default :func:`entry_limits`.
    ``outputs``: the reference's output names (every one must have been compared); default: the
    entry's own.
    """
    name = str(entry.get("target", "?"))
    limits = limits if limits is not None else entry_limits(entry)
    status = entry.get("status")
    if status not in HOLDING_STATUSES:
        why = entry.get("error") or entry.get("note") or ("no status recorded" if status is None else "no detail")
        return Verdict("failed", [Check(name, "status", status, "ok", False,
                                        f"target did not run ({str(why).splitlines()[0][:300]})")],
                       entry.get("error") or f"status {status!r}", limits)
    per_output = per_output_figures(entry, outputs)
    problems: List[str] = []
    checks: List[Check] = []
    many = len(per_output) > 1 or (outputs is not None and len(outputs) > 1)
    for out, acc in per_output.items():
        for problem in output_problems(acc):
            problems.append(f"{out}: {problem}" if many else problem)
            checks.append(Check(name, f"outputs {out}".rstrip() if many else "outputs", "broken",
                                "finite, input-dependent", False, problem))
    if outputs is not None and per_output:
        missing = output_count_problem(list(per_output), outputs)
        if missing:
            problems.append(missing)
            compared = len([o for o in outputs if o in per_output])
            checks.append(Check(name, "outputs", f"{compared} of {len(outputs)}", "every output", False, missing))
    if problems:
        return Verdict("failed", checks, "; ".join(problems), limits)
    if not per_output:
        if status == "ok":
            return Verdict("failed", [Check(name, "accuracy", None, "compared", False,
                                            "no accuracy figures in the entry: nothing was compared")],
                           "no accuracy figures: nothing was compared", limits)
        checks.append(Check(name, "accuracy", None, "compared", True,
                            f"skipped: nothing ran here ({entry.get('note') or entry.get('device') or 'built only'})"))
    else:
        checks += limit_checks(name, per_output, limits)
    checks += latency_checks(name, entry, limits.latency_budget)
    return Verdict(str(status), checks, None, limits)


__all__ = ["Check", "DEFAULT_LIMITS", "HOLDING_STATUSES", "LIMIT_KEYS", "Limits", "PRECISION_CLASSES", "Verdict",
           "describe", "entry_limits", "holds", "judge", "latency_checks", "limit_checks", "limits_for",
           "built_note", "output_count_problem", "output_problems", "per_output_figures", "precision_class",
           "recommendation_held", "record_outputs", "recorded_failures", "report_passed", "returned_outputs_problem", "worst_output"]
