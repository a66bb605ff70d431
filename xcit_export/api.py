"""The Python API: what the ``xcit-export`` command does, as functions that return objects.

::

    import xcit_export

    report = xcit_export.run("xcit_nano_12_p16_224", ["onnxruntime-fp32"], weights="random", out="out/nano")
    print(report.passed, report.targets[0].latency["median_ms"], report.json_path)

Every option is keyword-only and has the CLI option's meaning and default (``--eval-count`` is
``eval_count=``, ``-O openvino-int8:preset=mixed`` is ``target_options={"openvino-int8":
{"preset": "mixed"}}``). Bad input raises the same :class:`~xcit_export.errors.XcitExportError`
subclasses whose one-line messages the CLI prints; nothing half-written is left behind.

This module imports nothing heavy at import time (PyTorch, onnx and the runtimes load when a function
runs), so ``import xcit_export`` stays cheap.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence, Union

from .errors import ReportError, UsageError

if TYPE_CHECKING:  # only for annotations: importing these loads PyTorch
    from .console import Progress

__all__ = ["Report", "TargetResult", "Recommendation", "GateResult", "run", "run_recipe", "recommend", "gate",
           "bundle", "load_report"]

PathLike = Union[str, "os.PathLike[str]"]
# What a function accepting a report takes: a Report, the report dict, or report.json's path.
ReportLike = Union["Report", Mapping[str, Any], str, "os.PathLike[str]"]
# Stage messages (``progress("ONNX: exporting")``); an object that also has ``step(label, done, total)``
# gets counts too (:class:`xcit_export.console.Progress`); True: progress bars on stderr.
ProgressArg = Union[bool, Callable[[str], None], "Progress", None]

# The states in which a target counts as having held (``built``: the artifact exists and was
# validated where it can be, e.g. a TensorRT engine that can only run on the device). Anything else fails.
HOLDING_STATUSES = ("ok", "built")


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
        """False only when a required winner was asked for and another candidate won."""
        return bool((self.data.get("require_winner") or {}).get("ok", True))

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
        """Every target held (ran, met its thresholds) and a required winner, if any, won.

        The CLI exits 1 exactly when this is False.
        """
        rec = self.recommendation
        return all(t.passed for t in self.targets) and (rec is None or rec.held)

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

def _parse_size(value: int | str | Sequence[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise UsageError(f"input_size={value!r} is not a size; use 256, '256x320' or (256, 320)")
    if isinstance(value, int):
        return value, value
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
        try:
            dims = [int(p) for p in parts]
        except ValueError:
            raise UsageError(f"'{value}' is not a size; use 256 or 256x320 (height x width)") from None
    else:
        dims = [int(v) for v in value]
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2:
        raise UsageError(f"'{value}' is not a size; use 256 or 256x320 (height x width)")
    return dims[0], dims[1]


def _target_names(targets: str | Sequence[str]) -> list[str]:
    from .targets import all_targets

    items = [targets] if isinstance(targets, str) else list(targets)
    names: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip()
            if name == "all":
                names.extend(all_targets())
            elif name:
                names.append(name)
    names = list(dict.fromkeys(names))
    if not names:
        raise UsageError("no target given: name one or more (list-targets), 'all', or 'auto'")
    return names


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


def _run_config(config: Any, progress: ProgressArg) -> Report:
    from .pipeline import run as run_pipeline

    callback, display = _progress(progress)
    with display:
        data = run_pipeline(config, progress=callback)
    return Report(data, config.out_dir)


def run(model: str, targets: str | Sequence[str] = "onnxruntime-fp32", *,
        weights: str = "random", calib: str | None = None, calib_size: int = 300,
        eval: str | None = None, eval_size: int | None = None, eval_count: int = 32,  # noqa: A002 (the CLI's name)
        out: PathLike | None = None, seed: int = 0, num_classes: int | None = None,
        input_size: int | str | Sequence[int] | None = None, batch: int | None = None,
        dynamic_size: bool = False, eval_sizes: str | Sequence[Any] | None = None,
        output: str = "logits", input_format: str = "nchw", opset: int | None = None,
        threads: int | None = None, class_index: str | None = None, on_bad_image: str = "fail",
        warmup: int = 10, iterations: int = 50, min_seconds: float = 0.0, max_seconds: float | None = None,
        device: str | None = None, hint: str | None = None,
        options: Mapping[str, Any] | None = None,
        target_options: Mapping[str, Mapping[str, Any]] | None = None,
        max_top1_drop: float | None = None, min_top1_agreement: float | None = None,
        min_cosine_mean: float | None = None, require_winner: str | None = None,
        profile: bool = True, rebuild: bool = False, wait: bool = True,
        scenarios: str | Sequence[str] | None = None, streams: int | None = None,
        scenario_seconds: float | None = None, sustain: float | None = None, mlperf_tail: bool = False,
        objective: str = "latency",
        progress: ProgressArg = None) -> Report:
    """Export ``model``, build every target, validate each against PyTorch, write the report.

    Args:
        model: zoo name (``xcit-export list-models``), e.g. ``"xcit_nano_12_p16_224"``.
        targets: target names (a list or a comma-separated string), ``"all"``, or ``"auto"`` (alone:
            every target that runs here plus batch-1 variants, and a :attr:`Report.recommendation`).
        weights: ``"random"`` (seeded), ``"demo"`` (bundled fixture), ``"pretrained"`` (timm's, via the
            Hugging Face cache) or a checkpoint path.
        calib, eval: calibration / labelled evaluation images (folder, ``.txt`` list, ``.npy/.npz``,
            ``"demo"``); ``calib_size``/``eval_size`` draw that many (seeded); without ``eval``,
            ``eval_count`` seeded random inputs are compared.
        out: output folder (default ``out/<model>``).
        input_size: ``256``, ``"256x320"`` or ``(256, 320)``.
        dynamic_size, eval_sizes: one artifact for any size that is a multiple of the patch size
            (symbolic height and width), validated and timed at each of ``eval_sizes``
            (``"224,384,512x768"`` or a list; needs ``dynamic_size``; docs/dynamic-size.md).
        warmup, iterations, min_seconds, max_seconds: the latency loop (``max_seconds`` None: a 30 s
            cap only when neither ``iterations`` nor ``min_seconds`` asks for more than its default).
        options: target options given to every selected target that takes them (``--device``,
            ``--hint`` are shorthands); ``target_options``: per target, e.g.
            ``{"openvino-int8": {"preset": "mixed"}}`` (``xcit-export list-targets --options``).
        max_top1_drop, min_top1_agreement, min_cosine_mean, require_winner: ``targets="auto"``'s
            accuracy budget (fractions; defaults 0.01, 0.97, 0.99) and the candidate that must win.
        wait: another run holds ``out``: wait for it (False: raise ``OutputDirBusyError`` at once).
        scenarios, streams, scenario_seconds, sustain, mlperf_tail: latency as a deployment sees it
            (docs/latency.md): ``"single-stream,multi-stream,offline"`` (or ``"all"``), ``streams``
            concurrent streams for multi-stream (default 4), seconds per multi-stream run and offline
            figure (default 2), ``sustain`` seconds per scenario with a stability verdict, and MLPerf's
            600 s minimum and early-stopping tail estimate.
        objective: ``targets="auto"`` ranks by ``"latency"`` (median per image) or ``"throughput"``
            (offline images/s; adds the offline scenario).
        progress: None/False (silent), True (progress bars on stderr), or a callable taking stage
            messages; give it a ``step(label, done, total)`` method to get counts as well.

    Returns:
        The :class:`Report` (also written to ``out``: report.json, report.md, report.html).

    Raises:
        XcitExportError: a bad model, target, option, weights or data set, before any work starts;
        an unwritable or busy output folder. A target that fails is recorded in the report
        (``status == "failed"``, :attr:`Report.passed` False) and does not raise.
    """
    config = _build_config(**{k: v for k, v in locals().items() if k != "progress"})
    return _run_config(config, progress)


def _parse_eval_sizes(value: str | Sequence[Any] | None) -> tuple[tuple[int, int], ...]:
    """``--eval-sizes`` as (height, width) pairs (evaluate/sizes.py checks them)."""
    if value is None:
        return ()
    from .evaluate.sizes import parse_sizes

    return parse_sizes(value)


def _build_config(model: str, targets: str | Sequence[str], *, candidates: list[str] | None = None,
                  weights: str = "random", calib: str | None = None, calib_size: int = 300,
                  eval: str | None = None, eval_size: int | None = None, eval_count: int = 32,  # noqa: A002
                  out: PathLike | None = None, seed: int = 0, num_classes: int | None = None,
                  input_size: int | str | Sequence[int] | None = None, batch: int | None = None,
                  dynamic_size: bool = False, eval_sizes: str | Sequence[Any] | None = None,
                  output: str = "logits", input_format: str = "nchw", opset: int | None = None,
                  threads: int | None = None, class_index: str | None = None, on_bad_image: str = "fail",
                  warmup: int = 10, iterations: int = 50, min_seconds: float = 0.0, max_seconds: float | None = None,
                  device: str | None = None, hint: str | None = None,
                  options: Mapping[str, Any] | None = None,
                  target_options: Mapping[str, Mapping[str, Any]] | None = None,
                  max_top1_drop: float | None = None, min_top1_agreement: float | None = None,
                  min_cosine_mean: float | None = None, require_winner: str | None = None,
                  profile: bool = True, rebuild: bool = False, wait: bool = True,
                  scenarios: str | Sequence[str] | None = None, streams: int | None = None,
                  scenario_seconds: float | None = None, sustain: float | None = None, mlperf_tail: bool = False,
                  objective: str = "latency") -> Any:
    """The pipeline's RunConfig for :func:`run`'s arguments (``candidates``: ``auto`` among these only)."""
    from .evaluate.scenarios import scenario_options
    from .evaluate.validate import LatencyOptions
    from .export import DEFAULT_OPSET
    from .pipeline import DEFAULT_CALIB_WEIGHTS, RunConfig, distribute_options

    names = _target_names(targets)
    budget_given = {k: v for k, v in (("max_top1_drop", max_top1_drop), ("min_top1_agreement", min_top1_agreement),
                                      ("min_cosine_mean", min_cosine_mean), ("require_winner", require_winner))
                    if v is not None}
    auto_budget = None
    if "auto" in names:
        from .evaluate.auto import Budget, plan

        if names != ["auto"]:
            raise UsageError("target 'auto' picks among every target that runs here; give it alone")
        defaults = Budget()
        auto_budget = Budget(defaults.max_top1_drop if max_top1_drop is None else max_top1_drop,
                             defaults.min_top1_agreement if min_top1_agreement is None else min_top1_agreement,
                             defaults.min_cosine_mean if min_cosine_mean is None else min_cosine_mean).check()
        names = plan(candidates, calib is not None or weights in DEFAULT_CALIB_WEIGHTS)[0]
    elif budget_given:
        raise UsageError(f"{', '.join(budget_given)} only apply to targets='auto' (--target auto)")
    general = dict(options or {})
    if device:
        general["device"] = device
    if hint:
        general["hint"] = hint
    specific = {k: dict(v) for k, v in (target_options or {}).items()}
    config = RunConfig(
        model=model, targets=names, target_options=distribute_options(names, general, specific),
        out_dir=Path(out) if out is not None else Path("out") / model, weights=str(weights), seed=seed,
        num_classes=num_classes, input_size=_parse_size(input_size), batch=batch, opset=opset or DEFAULT_OPSET,
        dynamic_size=bool(dynamic_size), eval_sizes=_parse_eval_sizes(eval_sizes),
        threads=threads, eval_count=eval_count,
        latency=LatencyOptions(warmup=warmup, iterations=iterations, min_seconds=min_seconds,
                               max_seconds=max_seconds).check(),
        output=output, input_format=input_format, rebuild=rebuild, calib=calib, calib_size=calib_size,
        eval=eval, eval_size=eval_size, class_index=class_index, on_bad_image=on_bad_image,
        auto=auto_budget is not None, budget=auto_budget, require_winner=require_winner, profile=profile,
        wait_for_lock=wait, objective=objective,
        scenarios=scenario_options(scenarios, streams, scenario_seconds, sustain, mlperf_tail))
    if config.auto:
        # the candidates (default: every registered target); pipeline.run lists those that cannot run here
        config.targets = list(candidates or [])
    return config


def run_recipe(recipe: PathLike, *, out: PathLike | None = None, rebuild: bool = False, wait: bool = True,
               progress: ProgressArg = None) -> Report:
    """Run a one-model recipe (``recipes/*.toml``): its model, data, targets and thresholds.

    A recipe listing several models or device kinds is a matrix (``xcit-export --recipe R --executor
    local|ray``); this function refuses it with a :class:`~xcit_export.errors.RecipeError` saying so.
    """
    from .recipe import load_recipe, to_run_config

    loaded = load_recipe(Path(recipe))
    if loaded.is_matrix:
        from .errors import RecipeError

        raise RecipeError(f"recipe '{recipe}' is a model x target x device matrix: run it with "
                          f"xcit-export --recipe {recipe} --executor local (or ray)")
    config = to_run_config(loaded, out_dir=Path(out) if out is not None else None, rebuild=rebuild)
    config.wait_for_lock = wait
    return _run_config(config, progress)


def recommend(model: str, *, candidates: str | Sequence[str] | None = None, max_top1_drop: float = 0.01,
              min_top1_agreement: float = 0.97, min_cosine_mean: float = 0.99,
              require_winner: str | None = None, **run_options: Any) -> Report:
    """Which artifact to ship to this machine: :func:`run` with ``targets="auto"``.

    Every target that runs here (or only ``candidates``) is built, validated and timed, each also as
    a static batch-1 export; :attr:`Report.recommendation` names the fastest within the accuracy
    budget (fractions: 0.01 = one point of top-1) and says why each other candidate lost.
    ``run_options`` are :func:`run`'s keyword options (``weights``, ``calib``, ``eval``, ``out``...).
    """
    progress = run_options.pop("progress", None)
    config = _build_config(model, "auto", candidates=_target_names(candidates) if candidates else None,
                           max_top1_drop=max_top1_drop, min_top1_agreement=min_top1_agreement,
                           min_cosine_mean=min_cosine_mean, require_winner=require_winner, **run_options)
    return _run_config(config, progress)


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
    overrides = {"cosine_min": min_cosine, "top1_agreement": min_top1_agreement, "max_latency_ms": max_latency_ms}
    return create_bundle(folder, Path(out) if out is not None else None, golden_count=golden_count,
                         thresholds=overrides, tarball=tarball, progress=progress or (lambda message: None))
