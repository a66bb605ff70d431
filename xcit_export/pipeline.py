"""A single run: one model's targets on this machine, the one-model case of the engine.

``xcit-export --model M --target T`` (and :func:`xcit_export.run`, a one-model recipe) plans the
run once (:func:`xcit_export.plan.plan_run`: every check that needs no work), opens its image sets,
then, under the output folder's lock (:func:`xcit_export.outdir.locked_output_dir`), runs the
engine (:mod:`xcit_export.engine`) with every target as a cell on the local executor, and writes
the report. Artifacts are keyed by what made them (:mod:`xcit_export.keys`): an unchanged key,
and files that are all there and intact, mean the artifact on disk is reused.
"""

from __future__ import annotations

from typing import Any, Callable

from . import keys as keys_mod
from .options import Inputs, RunOptions
from .plan import RunPlan, plan_run

Progress = Callable[[str], None]


def run(options: RunOptions | RunPlan, inputs: Inputs | None = None, progress: Progress = lambda msg: None) -> dict:
    """Run the whole pipeline and return the report (also written to the output folder).

    ``options`` are planned first (unless a :class:`~xcit_export.plan.RunPlan` is given: planned
    already); ``inputs`` are arrays handed to the run (library use, tests). Inputs are checked before
    anything is written; the building and writing then happen under the output folder's lock, so two
    runs never interleave in one folder, and a run refused before any work leaves the folder as it
    found it.
    """
    from .engine import open_image_sets
    from .outdir import locked_output_dir

    inputs = inputs or Inputs()
    plan = options if isinstance(options, RunPlan) else plan_run(options, inputs)
    sets = open_image_sets(plan, inputs, progress)
    with locked_output_dir(plan.out_dir, wait=plan.options.wait, progress=progress):
        return _build_and_report(plan, inputs, sets, progress)


def _build_and_report(plan: RunPlan, inputs: Inputs, sets: Any, progress: Progress) -> dict:
    """Model, ONNX, every target, the report: the part of :func:`run` that writes the output folder."""
    from .engine import Placed, build_all, evaluate_model, evaluation_summary, prepare_model
    from .fingerprint import device_fingerprint
    from .report import document as report_mod
    from .scale.executor import LocalExecutor

    prepared = prepare_model(plan, inputs, sets, progress)
    built = build_all(prepared, progress)
    result, reference = evaluate_model(prepared, [Placed(b) for b in built], LocalExecutor(), 1, progress)
    if result.failure is not None:  # the reference or the data stopped the evaluation: as a single run raises
        _raise(result.failure)
    summary = evaluation_summary(prepared, result)
    report = report_mod.build_report(config=plan.options, spec=plan.spec, onnx_meta=prepared.onnx_meta,
                                     reference=reference, targets=result.entries, evaluation=summary["evaluation"],
                                     fingerprint=device_fingerprint())
    if summary["warnings"]:
        report["warnings"] = summary["warnings"]
    if "sizes" in summary:
        report["sizes"] = summary["sizes"]
    if "fp16_preflight" in summary:
        report["fp16_preflight"] = summary["fp16_preflight"]
    if plan.scenarios is not None:  # what --scenario ran, beside latency_method
        report["scenario_method"] = plan.scenarios.to_dict()
    if plan.auto:
        report["recommendation"] = recommendation(plan, result.entries, summary["evaluation"]["labelled"],
                                                  prepared.classify)
    if plan.options.fix:  # rebuild with the remedies and judge again (diagnose/fix.py)
        from .diagnose import fix as fix_mod

        fix_mod.apply(plan, report, lambda options, say: run(options, inputs, say), progress)
    report_mod.write_report(report, plan.out_dir)
    return report


def _raise(outcome: Any) -> None:
    from .errors import XcitExportError

    exc = outcome.details.get("exception")
    raise exc if exc is not None else XcitExportError(f"{outcome.label}: {outcome.error}")


def recommendation(plan: RunPlan, entries: list[dict], labelled: bool, classifies: bool) -> dict:
    """``--target auto``'s recommendation among ``entries`` (and why each other candidate lost)."""
    from .evaluate import auto as auto_mod

    rec = auto_mod.recommend(entries, plan.budget, dict(plan.left_out), labelled=labelled, classifies=classifies,
                             allow_no_winner=plan.options.allow_no_winner, objective=plan.options.objective or "latency")
    if plan.options.require_winner:
        auto_mod.require_winner(rec, plan.options.require_winner)
    return rec


def build_keys(options: RunOptions, inputs: Inputs | None = None, evaluation_given: bool = True) -> dict[str, str]:
    """Every build key ``options`` give (``{"onnx": ..., <target>: ...}``) without building or checking
    anything else: the same functions the engine's builds use (:mod:`xcit_export.keys`). Image sets
    named by source must already be loaded into ``inputs``."""
    from .plan import _spec, distribute_options
    from .targets import get_target

    inputs = inputs or Inputs()
    spec = _spec(options)
    onnx = keys_mod.onnx_key(options, inputs, spec)
    typed = distribute_options(list(options.targets), options)
    out = {"onnx": onnx}
    for name in options.targets:
        out[name] = keys_mod.target_key(get_target(name), options, inputs, typed[name], onnx, evaluation_given)
    return out
