"""The one engine: a model's targets built, evaluated, timed and recorded, as cells on an executor.

A single run (:mod:`xcit_export.pipeline`) is the one-model case on the local executor, its cells
the targets on this machine; a recipe matrix (:mod:`xcit_export.scale.matrix`) runs the same steps
for every model, its cells the targets on each device kind, on the local executor or on Ray. Per
model, in order:

1. :func:`.prepare.open_image_sets` (before the output folder is locked; nothing written) and
   :func:`.prepare.prepare_model`: the calibration set, the PyTorch model, the checked ONNX, the
   evaluation inputs at every size;
2. :func:`.build.build_all`: every target's artifact (reused by build key), and ``--target auto``'s
   batch-1 variants;
3. :func:`evaluate_model` (:mod:`.cells`): every cell evaluated (one streaming pass per shard, parallel
   decoding, ``--on-bad-image``) and timed at every size, each size once; recorded (:mod:`.record`),
   and explained where asked or where it misses its limits (:mod:`xcit_export.diagnose.run`).

What the report says about the model (the reference, the evaluation, the sizes) comes from
:func:`evaluation_summary`, for both.
"""

from __future__ import annotations

from typing import Any, Callable

from .build import Built, build_all
from .cells import CellRun, ModelResult, Placed
from .prepare import ImageSets, PreparedModel, open_image_sets, prepare_model

Progress = Callable[[str], None]

__all__ = ["Built", "ImageSets", "ModelResult", "Placed", "PreparedModel", "build_all", "evaluate_model",
           "evaluation_summary", "open_image_sets", "prepare_model"]


def evaluate_model(prepared: PreparedModel, cells: list[Placed], executor: Any, shards: int, progress: Progress,
                   on_finished: Callable[[Placed, dict], None] | None = None) -> tuple[ModelResult, dict]:
    """Evaluate and time ``cells`` at every size; returns the result and the reference's entry."""
    run = CellRun(prepared, cells, executor, shards, progress, on_finished)
    result = run.run()
    return result, run.reference()


def evaluation_summary(prepared: PreparedModel, result: ModelResult) -> dict:
    """What a report says about the model's evaluation: ``evaluation`` (the inputs, their count,
    provenance and throughput), ``warnings`` (a reference constant over the set), with
    ``--eval-sizes``, ``sizes`` (PyTorch's latency per size and the fitted slopes) and, with
    ``--explain`` and an FP16 path, ``fp16_preflight``."""
    from ..evaluate.stream import constant_outputs_of
    from ..evaluate.validate import constant_reference_warning

    first = result.sizes[0]
    info = dict(prepared.data_info)
    if "evaluation_set" in info:
        info["evaluation_set"] = {**info["evaluation_set"], "count": first.count, "skipped": len(first.skipped),
                                  "warnings": first.warnings}
    out: dict[str, Any] = {
        "evaluation": {"description": first.source.description, "count": first.count,
                       "labelled": prepared.labelled(first.source), **info, "throughput": first.throughput},
        "warnings": [constant_reference_warning(name, first.count) for name in constant_outputs_of(first.reference_self)],
    }
    if prepared.plan.options.eval_sizes:
        out["sizes"] = _sizes_section(prepared, result)
    if prepared.preflight is not None:
        out["fp16_preflight"] = prepared.preflight
    return out


def _sizes_section(prepared: PreparedModel, result: ModelResult) -> dict:
    """The report's ``sizes``: PyTorch's latency at each ``--eval-sizes`` size (from that size's run,
    the export size's included) and the latency-vs-tokens slopes."""
    from ..evaluate import sizes as sizes_mod

    patch = prepared.spec.patch_size
    runs = {run.source.size: run for run in result.sizes}
    section: dict[str, Any] = {"sizes": [sizes_mod.label(s) for s in prepared.plan.options.eval_sizes],
                               "patch_size": patch, "reference": []}
    for size in prepared.plan.options.eval_sizes:
        run = runs[size]
        latency = (run.reference or {}).get("latency") or {}
        section["reference"].append(sizes_mod.reference_record(size, patch, latency, run.source.description))
    section["slopes"] = sizes_mod.slopes(section["reference"], [e for e in result.entries if e.get("sizes")])
    return section
