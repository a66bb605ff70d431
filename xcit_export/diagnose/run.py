"""The diagnosis inside a run: which targets are explained, on which images, and what the report gets.

The pipeline calls three functions, one line each:

* :func:`fp16_preflight` before the builds, with ``--explain`` when an FP16 path is among the
  targets (:func:`fp16_paths`): the calibration images at every evaluation size through PyTorch with range
  hooks (:mod:`.preflight`); the report's ``fp16_preflight``;
* :func:`attach` after the evaluation: ``divergence`` (with its ``remedy``) on every target asked
  for (``--explain``) or that misses its limits (:func:`needs_explaining`), and per FP16 path
  which flagged tensors it keeps in FP32 (``fp16_preflight.kept``);
* :func:`xcit_export.diagnose.fix.apply` (``--fix``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import XcitExportError
from .explain import DEFAULT_IMAGES, explain_all
from .remedy import blamed, option_flags, remedy

Progress = Callable[[str], None]
# Calibration images the FP16 pre-flight runs at each size (a seeded, class-stratified subset).
PREFLIGHT_IMAGES = 32


def needs_explaining(entry: dict) -> bool:
    """Whether a target misses its accuracy limits and so is explained without ``--explain``: it
    was compared (it has an accuracy entry) and either failed (the output rule) or holds a failed
    check that is not a latency budget's (a slow target has nothing to explain here)."""
    if "accuracy" not in entry:
        return False
    return entry.get("status") == "failed" or any(
        not c.get("ok", True) and not str(c.get("metric", "")).startswith("latency") for c in entry.get("checks") or [])


def fp16_paths(targets) -> list:
    """Targets whose deployed graph computes in FP16: FP16 targets, and TensorRT INT8 targets,
    whose unquantized rest is FP16 unless ``high_precision=fp32``."""
    return [t for t in targets if t.precision == "fp16" or (t.backend.startswith("tensorrt") and t.precision == "int8")]


def explain_images(source, fmt: Callable, labelled: bool, count: int, seed: int) -> tuple[np.ndarray, dict]:
    """``count`` evaluation images (a seeded subset, class-stratified where labelled:
    :func:`xcit_export.data.sets.representative_subset`) in the deployed format, and how they were drawn."""
    from ..data.sets import LazyRows, representative_subset

    labels = [source.labels[i] for i in source._order()] if labelled and source.labels is not None else None
    picked, selection = representative_subset(len(source), count, labels, seed)
    return np.ascontiguousarray(LazyRows(source, fmt)[picked]), selection


def attach(*, config, model, onnx_path: Path, jobs: list, source, fmt: Callable, labelled: bool,
           threads: int, progress: Progress, preflight: dict | None = None) -> None:
    """Set ``divergence`` (and its ``remedy``) on each job's entry that :func:`needs_explaining` or
    ``config.explain`` asks for, and ``preflight["kept"]`` per FP16 path (module docstring)."""
    wanted = [j for j in jobs if j.artifact is not None and not j.batch1
              and (getattr(config, "explain", False) or needs_explaining(j.entry))]
    if wanted:
        jobs_in = [(j.target, j.artifact, config.target_options.get(j.target.name, {})) for j in wanted]
        try:
            x, selection = explain_images(source, fmt, labelled, DEFAULT_IMAGES, config.seed)
            results, locations = explain_all(model, onnx_path, jobs_in, x, threads=threads, static_batch=config.batch,
                                             progress=progress)
        except XcitExportError as exc:  # the points could not be found: said per target, never a failed run
            results, locations, selection = {j.target.name: {"error": str(exc)} for j in wanted}, {}, None
        for job in wanted:
            record = results[job.target.name]
            record["selection"] = selection
            if "error" not in record:
                record["remedy"] = _remedy(config, job, onnx_path, locations, record)
            job.entry["divergence"] = record
    if preflight is not None and preflight.get("flagged"):
        from .preflight import kept_in_fp32

        kept = {}
        for j in jobs:
            if j.artifact is None or j.batch1 or not fp16_paths([j.target]):
                continue
            try:
                kept[j.target.name] = kept_in_fp32(preflight, j.target, j.artifact, onnx_path,
                                                   config.target_options.get(j.target.name, {}), threads)
            except Exception as exc:  # noqa: BLE001 - a reading failure costs this table, never the run
                kept[j.target.name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        preflight["kept"] = kept


def _remedy(config, job, onnx_path: Path, locations, record: dict) -> dict:
    """The remedy of one explained target, with the command line that applies it."""
    modules = blamed(record)
    rec = remedy(job.target, job.artifact, onnx_path, locations, modules)
    if rec["options"]:
        merged = merge_options(config.target_options.get(job.target.name, {}), rec["options"])
        rec["command"] = " ".join(option_flags(job.target.name, merged))
    return rec


def merge_options(given: dict, remedy_options: dict) -> dict:
    """A target's options with a remedy's added: lists are joined (what was given first), an
    ``ignored_scope`` dict's lists too (a list given stays a list, the remedy's patterns appended);
    anything else is the remedy's value."""
    from ..targets.base import as_list

    out = dict(given)
    for key, value in remedy_options.items():
        old = out.get(key)
        if isinstance(value, list):
            out[key] = list(dict.fromkeys([*as_list(old), *value]))
        elif isinstance(value, dict) and old and not isinstance(old, dict):
            # a list given (op types and name patterns, told apart by the target): the remedy's patterns join it
            out[key] = list(dict.fromkeys([*as_list(old), *(value.get("patterns") or []), *(value.get("names") or [])]))
        elif isinstance(value, dict):
            base = old if isinstance(old, dict) else {}
            out[key] = {k: list(dict.fromkeys([*(base.get(k) or []), *(value.get(k) or [])]))
                        for k in dict.fromkeys([*base, *value])}
        else:
            out[key] = value
    return out


def fp16_preflight(config, model, spec, targets, progress: Progress) -> dict | None:
    """The FP16 pre-flight of an ``--explain`` run with an FP16 path (:func:`fp16_paths`), or None.

    Only with ``--explain``: it is the debugger's, and a PyTorch pass over the calibration images at
    every size costs every FP16 run seconds it did not ask for.
    It runs on up to :data:`PREFLIGHT_IMAGES` calibration images (a seeded, stratified subset) at
    the export size and at every ``--eval-sizes`` size (the images preprocessed again at that size);
    without calibration images it says so instead (the pre-flight needs real images)."""
    paths = fp16_paths(targets)
    if not paths or not getattr(config, "explain", False):
        return None
    names = [t.name for t in paths]
    if config.calib_data is None:
        return {"targets": names, "skipped": "no calibration images (--calib): the pre-flight needs real images"}
    from ..data.sets import representative_subset
    from ..models.deploy import to_input_format
    from .preflight import preflight

    picked, selection = representative_subset(len(config.calib_data), PREFLIGHT_IMAGES, config.calib_labels,
                                              config.seed)
    h, w = spec.preprocessing.input_size
    images = {f"{h}x{w}": config.calib_data[picked]}
    for size in config.eval_sizes or ():
        label = f"{size[0]}x{size[1]}"
        if label in images:
            continue
        if config.calib is None:
            images[label] = None  # arrays given at one size cannot be preprocessed again
            continue
        from ..data import sets as data

        pp = dataclasses.replace(spec.preprocessing, input_size=tuple(size))
        x, _ = data.calibration_set(config.calib, pp, config.calib_size, config.seed, config.on_bad_image,
                                    config.class_index).load()
        images[label] = x[picked]
    progress(f"FP16 pre-flight: ranges on {len(picked)} calibration images at {', '.join(images)}")
    fmt = lambda x: to_input_format(x, config.input_format, spec.preprocessing)  # noqa: E731
    record = preflight(model, {k: fmt(v) for k, v in images.items() if v is not None})
    record.update(targets=names, selection=selection,
                  not_checked=[k for k, v in images.items() if v is None])
    return record

