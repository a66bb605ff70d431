"""The diagnosis inside the engine: which cells are explained, on which images, and what the report gets.

The engine (:mod:`xcit_export.engine`) calls, for every model, whether it runs as a single run or in
a recipe's matrix:

* :func:`fp16_preflight` before the builds, with ``--explain`` (or ``--fix``) when an FP16 path is
  among the targets (:func:`fp16_paths`): the calibration images at every evaluation size through
  PyTorch with range hooks (:mod:`.preflight`); then :func:`preflight_kept` after the builds: per FP16
  path, which flagged tensors it keeps in FP32. The report's ``fp16_preflight``;
* :class:`Diagnosis` as each cell is finished and judged: ``divergence`` (with its ``remedy``) on
  every cell asked for (``--explain``) or that misses its limits (:func:`needs_explaining`). PyTorch
  at every point and the points' places in the FP32 ONNX are computed once per model, for the
  first cell explained;
* :func:`xcit_export.diagnose.fix.apply` (``--fix``), from the single run.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import numpy as np

from ..errors import XcitExportError
from .explain import DEFAULT_IMAGES, Baseline, baseline, explain_one
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


class Diagnosis:
    """One model's diagnosis in the engine (``prepared``: :class:`xcit_export.engine.PreparedModel`).

    :meth:`attach` is called with every cell's entry once it is judged; the PyTorch reference at
    every point and the points' locations (:func:`.explain.baseline`) are computed at the first
    cell that is explained, on :data:`~.explain.DEFAULT_IMAGES` images of the export size's
    evaluation set, and shared by the others."""

    def __init__(self, prepared: Any, progress: Progress = lambda msg: None):
        self.p, self.progress = prepared, progress
        self._base: Baseline | None = None
        self._selection: dict | None = None
        self._records: dict[str, dict] = {}  # per artifact: a matrix places one artifact on several kinds

    def wants(self, built: Any, entry: dict) -> bool:
        """Whether ``built``'s entry is explained: ``--explain``/``--fix``, or it misses its limits.
        ``--target auto``'s batch-1 variants are not (their graph is the same model at batch 1)."""
        if built.artifact is None or built.batch1:
            return False
        return self.p.plan.options.explains or needs_explaining(entry)

    def attach(self, built: Any, entry: dict) -> None:
        """Set ``entry["divergence"]`` (and its ``remedy``) when :meth:`wants` says so. The diagnosis
        runs the artifact on this machine (the host's graphs), so a second cell of the same artifact
        (a matrix's other device kind) gets the same record."""
        if not self.wants(built, entry):
            return
        key = str(built.artifact.path)
        if key not in self._records:
            self._records[key] = self._explain(built)
        entry["divergence"] = copy.deepcopy(self._records[key])

    def _explain(self, built: Any) -> dict:
        base = self._baseline()
        if isinstance(base, dict):  # the points could not be found: said per target, never a failed run
            return {**base, "selection": self._selection}
        record = explain_one(base, built.target, built.artifact, self.p.plan.threads, built.options, self.progress)
        record["selection"] = self._selection
        if "error" not in record:
            record["remedy"] = remedy_of(built, self.p.onnx_path, base.locations, record)
        return record

    def _baseline(self) -> Baseline | dict:
        if self._base is None:
            o, source = self.p.plan.options, self.p.sources[0]
            try:
                x, self._selection = explain_images(source.images, self.p.fmt, self.p.labelled(source),
                                                    DEFAULT_IMAGES, o.seed)
                self._base = baseline(self.p.model, self.p.onnx_path, x, threads=self.p.plan.threads,
                                      static_batch=o.batch, progress=self.progress)
            except XcitExportError as exc:
                self._base = Baseline(None, {}, {"error": str(exc)})
        if self._base.error is not None:
            return dict(self._base.error)
        return self._base


def remedy_of(built: Any, onnx_path, locations, record: dict) -> dict:
    """The remedy of one explained target, with the ``-O`` flags that apply it: the remedy's options
    merged with the values the target was built with (:func:`merge_options`)."""
    rec = remedy(built.target, built.artifact, onnx_path, locations, blamed(record))
    if rec["options"]:
        merged = merge_options(built.options, rec["options"])
        rec["command"] = " ".join(option_flags(built.target.name, {k: merged[k] for k in rec["options"]}))
    return rec


def merge_options(given: dict, remedy_options: dict) -> dict:
    """A target's options with a remedy's added: lists are joined (what was given first), an
    ``ignored_scope`` dict's lists too (a list given stays a list, the remedy's patterns appended);
    anything else is the remedy's value."""
    from ..values import as_list

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


def fp16_preflight(prepared: Any, progress: Progress) -> dict | None:
    """The FP16 pre-flight of an ``--explain`` run with an FP16 path (:func:`fp16_paths`), or None.

    Only with ``--explain``: it is the debugger's, and a PyTorch pass over the calibration images at
    every size costs every FP16 run seconds it did not ask for.
    It runs on up to :data:`PREFLIGHT_IMAGES` calibration images (a seeded, stratified subset) at
    the export size and at every ``--eval-sizes`` size (the images preprocessed again at that size);
    without calibration images it says so instead (the pre-flight needs real images)."""
    from ..targets import get_target

    plan, inputs, o = prepared.plan, prepared.inputs, prepared.plan.options
    paths = fp16_paths([get_target(n) for n in plan.targets])
    if not paths or not o.explains:
        return None
    names = [t.name for t in paths]
    if inputs.calib_data is None:
        return {"targets": names, "skipped": "no calibration images (--calib): the pre-flight needs real images"}
    from ..data.sets import representative_subset
    from .preflight import preflight

    picked, selection = representative_subset(len(inputs.calib_data), PREFLIGHT_IMAGES, inputs.calib_labels, o.seed)
    spec = plan.spec
    h, w = spec.preprocessing.input_size
    images = {f"{h}x{w}": inputs.calib_data[picked]}
    for size in o.eval_sizes or ():
        label = f"{size[0]}x{size[1]}"
        if label in images:
            continue
        if o.calib is None:
            images[label] = None  # arrays given at one size cannot be preprocessed again
            continue
        from ..data import sets as data

        pp = dataclasses.replace(spec.preprocessing, input_size=tuple(size))
        x, _ = data.calibration_set(o.calib, pp, o.calib_size, o.seed, o.on_bad_image, o.class_index).load()
        images[label] = x[picked]
    progress(f"FP16 pre-flight: ranges on {len(picked)} calibration images at {', '.join(images)}")
    record = preflight(prepared.model, {k: prepared.fmt(v) for k, v in images.items() if v is not None})
    record.update(targets=names, selection=selection, not_checked=[k for k, v in images.items() if v is None])
    return record


def preflight_kept(record: dict | None, prepared: Any, built: list) -> None:
    """``record["kept"]``: per built FP16 path, the precision its deployed graph computes each
    flagged tensor in (:func:`.preflight.kept_in_fp32`)."""
    if record is None or not record.get("flagged"):
        return
    from .preflight import kept_in_fp32

    kept = {}
    for b in built:
        if b.artifact is None or b.batch1 or not fp16_paths([b.target]):
            continue
        try:
            kept[b.target.name] = kept_in_fp32(record, b.target, b.artifact, prepared.onnx_path, b.options,
                                               prepared.plan.threads)
        except Exception as exc:  # noqa: BLE001 - a reading failure costs this table, never the run
            kept[b.target.name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    record["kept"] = kept
