"""Where the accuracy went: per-point error of built targets against the PyTorch reference.

:func:`explain` is the library entry: the exported model, its FP32 ONNX, the targets' artifacts
and a few evaluation images in, one ``divergence`` record per target out (the report's
``targets[i].divergence``; docs/report-schema.md). Steps, each a module of its own:

1. :mod:`.points`: the block boundaries of the model, named by PyTorch module path;
2. :mod:`.reference`: PyTorch at those points (forward hooks), per batch, kept for the few images;
3. :mod:`.locate`: the FP32 ONNX tensor of each point, found by value;
4. :mod:`.mark`: each target's own graph with those tensors as extra outputs, run on its runtime;
5. :mod:`.compare`: relative error, cosine, max error, non-finite count and the error each point
   adds; ``worst`` is the point that adds the most.

Memory: the reference is kept for the images explained (``images x points x tokens x channels``
float32: 16 images of XCiT-nano at 224 is 70 MB), the targets' values are reduced to sums per batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..evaluate.validate import nonfinite_weights
from .compare import PointStats, worst
from .locate import Location, locate, relative_error
from .mark import open_marked
from .points import model_points
from .reference import capture

Progress = Callable[[str], None]

# Evaluation images a diagnosis runs on by default (a seeded, class-stratified subset).
DEFAULT_IMAGES = 16
# Images per batch through PyTorch and each marked graph.
BATCH = 8
# Images the FP32 ONNX is run on with every tensor marked, to find the points (locate.py): one
# suffices (FP32 agrees to ~1e-6, any other tensor is off by orders of magnitude), and the run with
# every tensor an output is the costliest step of a diagnosis after PyTorch's.
LOCATE_IMAGES = 1


@dataclass
class Reference:
    """PyTorch at every point for the images explained, batch by batch."""

    batches: list[np.ndarray]  # inputs, in the deployed format
    points: list[dict[str, np.ndarray]]
    outputs: list[list[np.ndarray]]
    kinds: dict[str, str]  # module -> points.KINDS key

    @property
    def modules(self) -> list[str]:
        return list(self.points[0]) if self.points else []


def reference_at_points(model, x: np.ndarray, batch: int = BATCH) -> Reference:
    """:func:`.reference.capture` over ``x`` in batches."""
    pts = model_points(model)
    ref = Reference([], [], [], {p.module: p.kind for p in pts})
    for i in range(0, len(x), batch):
        xb = np.ascontiguousarray(x[i:i + batch])
        values, outs = capture(model, xb, pts)
        ref.batches.append(xb)
        ref.points.append(values)
        ref.outputs.append(outs)
    return ref


def nonfinite_origin(model, x: np.ndarray) -> dict | None:
    """Where PyTorch's own reference first turns non-finite on ``x``, and which parameters hold NaN
    or inf: ``{"module", "kind", "parameters"}``, or None when the reference is finite everywhere.

    A broken reference cannot be compared with (every run stops on it: BrokenReferenceError); this
    names the block, so the report says *where* the model is broken, not only that it is."""
    values, _ = capture(model, np.ascontiguousarray(x), model_points(model))
    first = next((m for m, v in values.items() if not np.isfinite(v).all()), None)
    params = nonfinite_weights(model)
    if first is None and not params:
        return None
    kinds = {p.module: p.kind for p in model_points(model)}
    return {"module": first, "kind": kinds.get(first), "parameters": params}


def _run(runner, reference: Reference, cut: bool) -> tuple[dict[str, PointStats], list[np.ndarray]]:
    """Every batch through a marked (or cut) runner: per-point sums and the graph's own first output."""
    stats: dict[str, PointStats] = {}
    finals = []
    try:
        for xb, ref in zip(reference.batches, reference.points):
            outs, values = runner.infer(xb, ref if cut else None)
            finals.append(outs[0])
            for module, value in values.items():
                stats.setdefault(module, PointStats()).add(value, ref[module])
    finally:
        runner.close()
    return stats, finals


def explain_target(target, artifact, locations: dict[str, Location], reference: Reference,
                   threads: int | None = None, options: dict | None = None) -> dict:
    """The ``divergence`` record of one built target (module docstring; docs/report-schema.md)."""
    options = dict(options or {})
    t0 = time.perf_counter()
    runner, ran_on = open_marked(target, artifact, locations, threads, **options)
    missing = list(runner.missing)
    marked, marked_final = _run(runner, reference, cut=False)
    cut_runner, _ = open_marked(target, artifact, locations, threads, cut=True, **options)
    isolated, _ = _run(cut_runner, reference, cut=True)
    deployed = target.load(artifact, threads=threads, **options)
    try:
        unmarked = [deployed.infer(xb)[0] for xb in reference.batches]
    finally:
        deployed.close()
    rows = []
    for module in reference.modules:
        if module not in marked:
            continue
        own = isolated.get(module)
        rows.append({"module": module, "kind": reference.kinds.get(module), "tensor": locations[module].names[0],
                     "tensors": list(locations[module].names),
                     **marked[module].to_dict(),
                     "added": own.to_dict()["rel_error"] if own else None,
                     "added_nonfinite": own.nonfinite if own else None})
    final_ref = np.concatenate([o[0] for o in reference.outputs])
    return {
        "images": int(sum(len(b) for b in reference.batches)),
        "ran_on": ran_on,
        "added_method": "isolated",
        "points": rows,
        "worst": worst(rows),
        "missing": missing,
        "output_rel_error": _round(relative_error(np.concatenate(unmarked), final_ref)),
        "marking_effect": _round(relative_error(np.concatenate(marked_final), np.concatenate(unmarked))),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _round(value: float) -> float:
    return float(f"{value:.6g}") if np.isfinite(value) else value


@dataclass
class Baseline:
    """What every target of one model is explained against: PyTorch at every point on the images
    explained and each point's tensor in the FP32 ONNX; or, where PyTorch itself is not finite,
    ``error`` (``{"error", "reference_nonfinite_from"}``) for every target instead."""

    reference: Reference | None
    locations: dict[str, Location]
    error: dict | None = None


def baseline(model, onnx_path: Path, x: np.ndarray, *, threads: int | None = None, static_batch: int | None = None,
             progress: Progress = lambda msg: None) -> Baseline:
    """PyTorch at every point on ``x`` (the deployed input format) and the points located in the FP32
    ONNX. ``static_batch``: the export's static batch (``--batch N``), which every batch then has
    (``x`` is cut to a multiple of it). Raises XcitExportError when a point cannot be located."""
    if static_batch:
        x = x[:max(static_batch, len(x) // static_batch * static_batch)]
        if len(x) < static_batch:
            x = np.resize(x, (static_batch, *x.shape[1:]))
    progress(f"Explain: PyTorch at every block boundary on {len(x)} images")
    reference = reference_at_points(model, x, static_batch or BATCH)
    origin = _broken(reference)
    if origin is not None:
        return Baseline(None, {}, {"error": f"the PyTorch reference is not finite from {origin} on: nothing can be "
                                            f"compared there", "reference_nonfinite_from": origin})
    n = static_batch or min(LOCATE_IMAGES, len(reference.batches[0]))
    locations = locate(Path(onnx_path), reference.batches[0][:n],
                       {m: v[:n] for m, v in reference.points[0].items()}, threads)
    return Baseline(reference, locations)


def explain_one(base: Baseline, target, artifact, threads: int | None = None, options: dict | None = None,
                progress: Progress = lambda msg: None) -> dict:
    """One target's ``divergence`` against ``base``; a failure to mark or run it is the record's
    ``error`` (a diagnosis never fails a target)."""
    if base.error is not None or base.reference is None:
        return dict(base.error or {"error": "no reference"})
    progress(f"Explain: {target.name} at {len(base.locations)} points")
    try:
        return explain_target(target, artifact, base.locations, base.reference, threads, options)
    except Exception as exc:  # noqa: BLE001 - a diagnosis failure never fails the target
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}


def explain_all(model, onnx_path: Path, jobs: Sequence[tuple], x: np.ndarray, *, threads: int | None = None,
                static_batch: int | None = None,
                progress: Progress = lambda msg: None) -> tuple[dict[str, dict], dict[str, Location]]:
    """``({target name: divergence}, the points' locations)`` for ``jobs`` (``(target, artifact,
    options)``) on images ``x``: :func:`baseline` once, then :func:`explain_one` per target."""
    base = baseline(model, onnx_path, x, threads=threads, static_batch=static_batch, progress=progress)
    out = {target.name: explain_one(base, target, artifact, threads, options, progress)
           for target, artifact, options in jobs}
    return out, base.locations


def explain(model, onnx_path: Path, jobs: Sequence[tuple], x: np.ndarray, *, threads: int | None = None,
            static_batch: int | None = None, progress: Progress = lambda msg: None) -> dict[str, dict]:
    """``{target name: divergence}``: :func:`explain_all` without the locations."""
    return explain_all(model, onnx_path, jobs, x, threads=threads, static_batch=static_batch, progress=progress)[0]


def _broken(reference: Reference) -> str | None:
    for module in reference.modules:
        if any(not np.isfinite(p[module]).all() for p in reference.points):
            return module
    return None
