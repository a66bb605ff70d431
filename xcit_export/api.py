"""The Python API: what the ``xcit-export`` command does, as functions that return objects.

::

    import xcit_export

    report = xcit_export.run("xcit_nano_12_p16_224", ["onnxruntime-fp32"], weights="random", out="out/nano")
    print(report.passed, report.targets[0].latency["median_ms"], report.json_path)

Every option is keyword-only and has the CLI option's meaning and default: both are derived from
one declaration, :class:`xcit_export.options.RunOptions` (``--eval-count`` is ``eval_count=``,
``-O openvino-int8:preset=mixed`` is ``target_options={"openvino-int8": {"preset": "mixed"}}``).
Bad input raises the same :class:`~xcit_export.errors.XcitExportError` subclasses whose one-line
messages the CLI prints; nothing half-written is left behind.

This module imports nothing heavy at import time (PyTorch, onnx and the runtimes load when a function
runs), so ``import xcit_export`` stays cheap.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, ParamSpec, Sequence, TypeVar, Union

from .errors import ReportError, UsageError
from .options import PathLike, ProgressArg, RunOptions
from .verdict import HOLDING_STATUSES

__all__ = ["Report", "TargetResult", "Recommendation", "GateResult", "run", "run_recipe", "recommend", "gate",
           "bundle", "load_report"]

# What a function accepting a report takes: a Report, the report dict, or report.json's path.
ReportLike = Union["Report", Mapping[str, Any], str, "os.PathLike[str]"]

# HOLDING_STATUSES: the states in which a target counts as having held (``built``: the artifact exists
# and was validated where it can be, e.g. a TensorRT engine that can only run on the device). Anything
# else fails. Defined with the verdict (verdict.py), which decides every status.


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TargetResult:
    """One entry of ``report.json``'s ``targets``, with its common fields as attributes.

    The dictionaries are the report's own (``accuracy``: ``top1_agreement``, ``cosine_min``,
    ``max_abs_error``...; ``latency``: ``median_ms``, ``p90_ms``...); :attr:`data` is the whole entry.
    """

    data: Mapping[str, Any]

    @property
    def name(self) -> str:
        """Target name, e.g. ``onnxruntime-fp32`` or ``openvino-fp32@batch1``."""
        return str(self.data["target"])

    @property
    def status(self) -> str:
        """``ok``, ``built`` (artifact made, not runnable here) or ``failed``."""
        return str(self.data.get("status", "failed"))

    @property
    def passed(self) -> bool:
        """The target ran (or was built) and held every threshold it was given."""
        return self.status in HOLDING_STATUSES and self.data.get("passed") is not False

    @property
    def accuracy(self) -> dict[str, Any]:
        return dict(self.data.get("accuracy") or {})

    @property
    def latency(self) -> dict[str, Any]:
        return dict(self.data.get("latency") or {})

    @property
    def artifact_path(self) -> Path | None:
        """The artifact's main file (``model.onnx``, ``model.xml``...), or None when none was built."""
        path = (self.data.get("artifact") or {}).get("path")
        return Path(path) if path else None

    @property
    def error(self) -> str | None:
        return self.data.get("error")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.data))


@dataclass(frozen=True)
class Recommendation:
    """``--target auto``'s answer (``report.json``'s ``recommendation``)."""

    data: Mapping[str, Any]

    @property
    def target(self) -> str | None:
        """The candidate to ship (e.g. ``openvino-fp32@batch1``), or None when none held the budget."""
        return self.data.get("target")

    @property
    def artifact(self) -> Path | None:
        path = self.data.get("artifact")
        return Path(path) if path else None

    @property
    def lines(self) -> list[str]:
        """The verdict, then one line per other candidate saying why it lost."""
        return list(self.data.get("lines") or [])

    @property
    def candidates(self) -> list[dict[str, Any]]:
        return [dict(c) for c in self.data.get("candidates") or []]

    @property
    def held(self) -> bool:
        """False when no candidate held the budget (unless the run allowed none) or when a required
        winner was asked for and another candidate won."""
        from .verdict import recommendation_held

        return recommendation_held(self.data)

    def __str__(self) -> str:
        return self.lines[0] if self.lines else f"recommendation: {self.target}"


class Report:
    """A run's report: ``report.json``'s top-level fields as attributes.

    ``model``, ``export``, ``evaluation``, ``device``, ``reference``, ``latency_method`` are the
    report's dictionaries; :attr:`targets` wraps each target entry in a :class:`TargetResult`;
    :meth:`to_dict` is the JSON document itself and :attr:`json_path` where it was written.
    """

    def __init__(self, data: Mapping[str, Any], out_dir: PathLike | None = None) -> None:
        self._data: dict[str, Any] = dict(data)
        self.out_dir: Path | None = Path(out_dir).absolute() if out_dir is not None else None

    # -- fields -------------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        return int(self._data["schema_version"])

    @property
    def created(self) -> str:
        return str(self._data.get("created", ""))

    @property
    def model(self) -> dict[str, Any]:
        return self._data["model"]

    @property
    def export(self) -> dict[str, Any]:
        return self._data.get("export", {})

    @property
    def evaluation(self) -> dict[str, Any]:
        return self._data.get("evaluation", {})

    @property
    def device(self) -> dict[str, Any]:
        return self._data.get("device", {})

    @property
    def reference(self) -> dict[str, Any]:
        return self._data.get("reference", {})

    @property
    def latency_method(self) -> dict[str, Any]:
        return self._data.get("latency_method", {})

    @property
    def targets(self) -> list[TargetResult]:
        return [TargetResult(t) for t in self._data.get("targets", [])]

    @property
    def recommendation(self) -> Recommendation | None:
        """The ``--target auto`` recommendation, or None for a run with named targets."""
        rec = self._data.get("recommendation")
        return Recommendation(rec) if rec is not None else None

    # -- verdict ------------------------------------------------------------------------------
    @property
    def passed(self) -> bool:
        """Every target held (its verdict: ran or was built, met its limits); for ``--target auto``,
        the recommendation held instead (a winner, the required one if any; candidates that lost are
        the reasons in it, not failures of the run).

        The CLI exits 1 exactly when this is False (docs/verdict.md, "Exit status").
        """
        rec = self.recommendation
        if rec is not None:
            return rec.held
        return all(t.passed for t in self.targets)

    @property
    def json_path(self) -> Path | None:
        """``report.json`` of this run (``report.md`` and ``report.html`` lie beside it)."""
        return self.out_dir / "report.json" if self.out_dir is not None else None

    def target(self, name: str) -> TargetResult:
        """The entry of target ``name``; a :class:`~xcit_export.errors.ReportError` names the others."""
        for t in self.targets:
            if t.name == name:
                return t
        raise ReportError(f"the report has no target '{name}'; it has {', '.join(t.name for t in self.targets)}")

    def to_dict(self) -> dict[str, Any]:
        """The report as ``report.json`` holds it (a deep copy)."""
        return json.loads(json.dumps(self._data))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[TargetResult]:
        return iter(self.targets)

    def __repr__(self) -> str:
        states = ", ".join(f"{t.name}={t.status}" for t in self.targets)
        return f"Report({self.model.get('name')}: {states}; passed={self.passed})"


@dataclass
class GateResult:
    """The checks :func:`gate` ran; it holds when none failed (skipped ones do not count)."""

    checks: list[Any] = field(default_factory=list)  # report.gate.Check

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[Any]:
        return [c for c in self.checks if not c.ok]

    @property
    def skipped(self) -> list[Any]:
        return [c for c in self.checks if getattr(c, "skipped", False)]

    def lines(self) -> list[str]:
        """What ``xcit-export gate`` prints: ``SKIP``/``FAIL`` lines, then the count."""
        out = [f"SKIP {c.line()}" for c in self.skipped] + [f"FAIL {c.line()}" for c in self.failed]
        ok = len(self.checks) - len(self.failed) - len(self.skipped)
        return out + [f"gate: {ok} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"]

    def raise_for_failures(self) -> None:
        """Raise :class:`~xcit_export.errors.GateFailure` (one line per failure) unless the gate held."""
        if self.failed:
            from .errors import GateFailure

            raise GateFailure("; ".join(c.line() for c in self.failed))


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

def _progress(progress: ProgressArg) -> tuple[Any, Any]:
    """The callable the pipeline gets, and a context manager that starts/stops a terminal display."""
    import contextlib

    if progress is True:
        from .console import TerminalProgress, make_console

        bars = TerminalProgress(make_console(stderr=True))
        return bars, bars
    if progress is None or progress is False:
        return (lambda message: None), contextlib.nullcontext()
    return progress, contextlib.nullcontext()


def _run_plan(plan: Any, progress: ProgressArg) -> Report:
    """Run a planned run (:func:`xcit_export.plan.plan_run`) with ``progress``; its :class:`Report`."""
    from .pipeline import run as run_pipeline

    callback, display = _progress(progress)
    with display:
        data = run_pipeline(plan, progress=callback)
    return Report(data, plan.out_dir)


P = ParamSpec("P")
R = TypeVar("R")


def _takes_run_options(options: Callable[P, Any]) -> Callable[[Callable[..., R]], Callable[P, R]]:
    """``fn``'s parameters are :class:`~xcit_export.options.RunOptions`' (its signature is theirs, its
    docstring lists every option's help): declared once, in options.py."""
    def decorate(fn: Callable[..., R]) -> Callable[P, R]:
        import inspect

        from .options import options_doc

        signature = inspect.signature(options)
        fn.__signature__ = signature.replace(return_annotation=inspect.signature(fn).return_annotation)  # type: ignore[attr-defined]
        fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n\n    Options (xcit_export.options.RunOptions):\n\n" + options_doc() + "\n"
        return fn  # type: ignore[return-value]

    return decorate


@_takes_run_options(RunOptions)
def run(*args: Any, **kwargs: Any) -> Report:
    """Export ``model``, build every target, validate each against PyTorch, write the report.

    ``run(model, targets, **options)``: ``model`` is a zoo name (``xcit-export list-models``), e.g.
    ``"xcit_nano_12_p16_224"``; ``targets`` target names (a list or a comma-separated string),
    ``"all"``, or ``"auto"`` (alone: every target that runs here plus batch-1 variants, and a
    :attr:`Report.recommendation`). Every other option is keyword-only and means what the CLI option
    of the same name means (listed below with its default; ``-O openvino-int8:preset=mixed`` is
    ``options={"openvino-int8:preset": "mixed"}`` or ``target_options={"openvino-int8": {"preset":
    "mixed"}}``).

    Returns:
        The :class:`Report` (also written to ``out``: report.json, report.md, report.html).

    Raises:
        XcitExportError: a bad model, target, option, weights or data set, before any work starts
        (:class:`~xcit_export.errors.UsageError` for options that do not parse or combine); an
        unwritable or busy output folder. A target that fails is recorded in the report
        (``status == "failed"``, :attr:`Report.passed` False) and does not raise.
    """
    from .plan import plan_run

    options = RunOptions(*args, **kwargs)
    return _run_plan(plan_run(options), options.progress)


def run_recipe(recipe: PathLike, *, out: PathLike | None = None, rebuild: bool = False, wait: bool = True,
               progress: ProgressArg = None) -> Report:
    """Run a one-model recipe (``recipes/*.toml``): its model, data, targets and thresholds.

    A recipe listing several models or device kinds is a matrix (``xcit-export --recipe R --executor
    local|ray``); this function refuses it with a :class:`~xcit_export.errors.RecipeError` saying so.
    """
    from .plan import plan_run
    from .recipe import load_recipe, to_run_options

    loaded = load_recipe(Path(recipe))
    if loaded.is_matrix:
        from .errors import RecipeError

        raise RecipeError(f"recipe '{recipe}' is a model x target x device matrix: run it with "
                          f"xcit-export --recipe {recipe} --executor local (or ray)")
    options = to_run_options(loaded, out=Path(out) if out is not None else None, rebuild=rebuild, wait=wait)
    return _run_plan(plan_run(options), progress)


def recommend(model: str, *, candidates: str | Sequence[str] | None = None, max_top1_drop: float | None = None,
              min_top1_agreement: float | None = None, min_cosine_mean: float | None = None,
              require_winner: str | None = None, allow_no_winner: bool = False, **run_options: Any) -> Report:
    """Which artifact to ship to this machine: :func:`run` with ``targets="auto"``.

    Every target that runs here (or only ``candidates``) is built, validated and timed, each also as
    a static batch-1 export; :attr:`Report.recommendation` names the fastest within the accuracy
    budget (fractions: 0.01 = one point of top-1; None: the budget's defaults, listed in
    :func:`run`'s options) and says why each other candidate lost. ``run_options`` are :func:`run`'s
    keyword options (``weights``, ``calib``, ``eval``, ``out``...).
    """
    return run(model, "auto", candidates=candidates or (), max_top1_drop=max_top1_drop,
               min_top1_agreement=min_top1_agreement, min_cosine_mean=min_cosine_mean,
               require_winner=require_winner, allow_no_winner=allow_no_winner, **run_options)


def load_report(path: PathLike) -> Report:
    """Read a ``report.json`` (refusing a newer schema) as a :class:`Report`."""
    from .report.gate import read_report

    path = Path(path)
    return Report(read_report(path), path.parent)


def _as_dict(report: ReportLike) -> dict[str, Any]:
    if isinstance(report, Report):
        return report.to_dict()
    if isinstance(report, Mapping):
        return dict(report)
    from .report.gate import read_report

    return read_report(Path(report))


def gate(report: ReportLike, baseline: ReportLike | None = None, *, recipe: PathLike | None = None,
         require_winner: str | None = None) -> GateResult:
    """``xcit-export gate``: compare ``report`` with an accepted ``baseline`` and a recipe's thresholds.

    Returns every check; :attr:`GateResult.passed` says whether the gate held and
    :meth:`GateResult.raise_for_failures` turns failures into a :class:`~xcit_export.errors.GateFailure`.
    Without ``baseline`` and ``recipe`` the report's own stored thresholds are checked.
    """
    from .report.gate import gate as gate_checks

    thresholds = None
    if recipe is not None:
        from .recipe import load_recipe

        loaded = load_recipe(Path(recipe))
        thresholds = loaded.thresholds()
        require_winner = require_winner or loaded.auto_settings().get("require_winner")
    checks = gate_checks(_as_dict(report), _as_dict(baseline) if baseline is not None else None, thresholds,
                         require_winner=require_winner)
    return GateResult(list(checks))


def bundle(artifact: PathLike | Report, *, target: str | None = None, out: PathLike | None = None,
           golden_count: int | None = None, min_cosine: float | None = None,
           min_top1_agreement: float | None = None, max_latency_ms: float | None = None,
           tarball: bool = True, progress: Callable[[str], None] | None = None) -> Path:
    """``xcit-export bundle``: a device bundle (folder and ``.tar.gz``) from a built TensorRT target.

    ``artifact`` is a target folder (``out/<model>/tensorrt-int8``), or a run folder or :class:`Report`
    with ``target`` naming the target. Returns the bundle folder; the tarball is ``<folder>.tar.gz``.
    """
    from .device.bundle import create_bundle, resolve_artifact_dir

    if isinstance(artifact, Report):
        if artifact.out_dir is None:
            raise UsageError("this Report has no output folder; pass the target folder instead")
        artifact = artifact.out_dir
    folder = resolve_artifact_dir(Path(artifact), target)
    overrides = {"min_cosine": min_cosine, "min_top1_agreement": min_top1_agreement, "max_latency_ms": max_latency_ms}
    return create_bundle(folder, Path(out) if out is not None else None, golden_count=golden_count,
                         thresholds=overrides, tarball=tarball, progress=progress or (lambda message: None))
