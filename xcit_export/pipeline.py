"""The pipeline: model -> ONNX -> each target -> validation -> report.

Stages are functions of the modules named after them (``weights``, ``export``, ``targets``,
``validate``, ``report``); this module only sequences them, decides what can be reused, and
records what happened. Artifacts are keyed by what made them (model, weights, export options,
calibration and evaluation sets where read, tool versions; :mod:`xcit_export.keys` declares which
``RunConfig`` field each artifact reads): an unchanged key, and files that are all there and
intact, mean the artifact on disk is reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import export as export_mod
from . import keys as keys_mod
from .console import latency_runs, renamed, stepper
from .errors import BackendUnavailableError, XcitExportError
from .fingerprint import device_fingerprint
from .io import atomic_dir, ensure_writable_dir, sha256_file
from .outdir import locked_output_dir
from .evaluate.profiling import profile_error
from .evaluate.scenarios import OFFLINE, ScenarioOptions
from .targets import Artifact, BuildContext, get_target
from .targets.base import ARTIFACT_META, no_evaluation_error
from .models.deploy import DeployModel, to_input_format
from .report.gate import checks_to_dicts, threshold_checks
from .evaluate.stream import StreamTarget, evaluate_stream
from .evaluate.validate import (LatencyOptions, check_reference, check_weights, constant_reference_warning,
                                measure_latency, output_problems, rss_mb, torch_infer)
from .models.weights import default_num_classes, load_model
from .models.zoo import get_spec

Progress = Callable[[str], None]

# INT8 targets with weights that are not a real model's calibrate on the bundled demo set by default.
DEFAULT_CALIB = "demo"
DEFAULT_CALIB_WEIGHTS = ("random", "demo")
DEFAULT_CALIB_NOTE = "calibrated on the bundled demo set; pass --calib with your own images for real weights"


@dataclass
class RunConfig:
    """Everything one ``xcit-export`` run needs; the CLI and recipes fill it."""

    model: str
    targets: list[str]
    out_dir: Path
    weights: str = "random"
    seed: int = 0
    num_classes: int | None = None
    input_size: tuple[int, int] | None = None
    batch: int | None = None  # static export batch; None = dynamic
    opset: int = export_mod.DEFAULT_OPSET
    threads: int | None = None  # None: all cores
    eval_count: int = 32  # seeded inputs when no evaluation set is given
    # Image sets by source (folder, .txt list, .npy/.npz, 'demo'), loaded with the model's preprocessing...
    calib: str | None = None
    calib_size: int = 300
    eval: str | None = None
    eval_size: int | None = None
    on_bad_image: str = "fail"
    class_index: str | None = None
    # ...or given directly as preprocessed NCHW arrays (library use, tests).
    eval_data: Any = None  # (x, labels-or-None)
    eval_id: str | None = None
    calib_data: np.ndarray | None = None
    calib_id: str | None = None
    calib_labels: np.ndarray | None = None  # when the calibration set is labelled (stratified subsets)
    latency: LatencyOptions = field(default_factory=LatencyOptions)
    latency_batches: tuple[int, ...] = ()  # optional batch-size sweep (dynamic-batch artifacts)
    target_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per target: {"thresholds": {...}, "latency_budget": {...}} (from a recipe; see recipe.py).
    thresholds: dict[str, dict] = field(default_factory=dict)
    output: str = "logits"  # logits | embedding | tokens | features (models.deploy.OUTPUTS)
    input_format: str = "nchw"  # models.deploy.INPUT_FORMATS
    rebuild: bool = False
    wait_for_lock: bool = True  # another run holds out_dir: wait for it (False: fail at once, --no-wait)
    # --target auto (evaluate/auto.py): ``targets`` are then the candidates (empty: every registered target),
    # each also as a static batch-1 variant; the report gets a ``recommendation``.
    auto: bool = False
    budget: Any = None  # auto.Budget; None = its defaults
    require_winner: str | None = None
    profile: bool = True  # per-op-type breakdown from each runtime's profiler, after each latency figure
    # --dynamic-size: symbolic height/width in the ONNX (any multiple of the patch size); --eval-sizes: the
    # (height, width) sizes to evaluate at (evaluate/sizes.py), each run like the export size.
    dynamic_size: bool = False
    eval_sizes: tuple[tuple[int, int], ...] = ()
    # --scenario / --streams / --scenario-seconds / --sustain / --mlperf-tail (evaluate/scenarios.py): each
    # target's single-stream, multi-stream and offline figures, after its latency and profile.
    scenarios: ScenarioOptions = field(default_factory=ScenarioOptions)
    objective: str = "latency"  # --target auto ranks by: latency (per image) or throughput (offline images/s)

    def resolved_threads(self) -> int:
        return self.threads or os.cpu_count() or 1


def distribute_options(target_names: list[str], general: dict[str, Any],
                       specific: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-target options from general ones (``--device GPU``) and target-scoped ones.

    A general option goes to every selected target that accepts it; one that no selected target
    accepts is an error rather than silently unused. Target-scoped options are checked strictly.
    """
    targets = [get_target(n) for n in target_names]
    out: dict[str, dict[str, Any]] = {t.name: {} for t in targets}
    for key, value in general.items():
        takers = [t.name for t in targets if key in t.options]
        if not takers:
            raise XcitExportError(f"option '{key}' is not used by any selected target "
                                  f"({', '.join(target_names)}); drop it or pick a target that takes it")
        for name in takers:
            out[name][key] = value
    for name, opts in specific.items():
        if name not in out:
            raise XcitExportError(f"option given for target '{name}', which is not selected")
        out[name].update(opts)
    for t in targets:
        t.check_options(out[t.name])
    return out


def _file_hashes(files: list[Path]) -> dict[str, str]:
    """sha256 of each file of an artifact, recorded in its metadata so a reuse can prove it intact."""
    return {f.name: sha256_file(f) for f in files}


def _intact(artifact: Artifact) -> str | None:
    """Why ``artifact``'s files cannot be reused (None: they can): one is missing or empty, differs
    from the hash recorded when it was built (a torn write after a power loss, an edit), or, for
    artifacts built before hashes were recorded, an ONNX file does not parse."""
    recorded = artifact.metadata.get("file_sha256") or {}
    for f in artifact.files:
        if not f.is_file():
            return f"{f.name} is missing"
        if f.stat().st_size == 0:
            return f"{f.name} is empty"
        if f.name in recorded:
            if sha256_file(f) != recorded[f.name]:
                return f"{f.name} does not match the hash recorded when it was built"
        elif f.suffix == ".onnx":
            import onnx

            try:
                onnx.load(str(f), load_external_data=False)
            except Exception as exc:  # noqa: BLE001 - any parse failure means: rebuild
                return f"{f.name} does not load ({type(exc).__name__})"
    return None


def _reusable(folder: Path, key: str, progress: Progress = lambda msg: None) -> Artifact | None:
    """The artifact in ``folder`` if it was built with ``key`` and its files are intact, else None
    (a broken one is rebuilt, saying why, never reported as an error)."""
    meta = folder / ARTIFACT_META
    if not meta.exists():
        return None
    try:
        artifact = Artifact.from_dir(folder)
    except (XcitExportError, ValueError, KeyError, TypeError, OSError):
        progress(f"{folder.name}: rebuilding: its {ARTIFACT_META} does not load")
        return None
    if artifact.metadata.get("build_key") != key:
        return None
    problem = _intact(artifact)
    if problem:
        progress(f"{folder.name}: rebuilding: {problem}")
        return None
    return artifact


def build_keys(config: RunConfig, evaluation_given: bool = True) -> dict[str, str]:
    """Every build key ``config`` gives (``{"onnx": ..., <target>: ...}``) without building anything:
    the same functions :func:`prepare_onnx` and :func:`build_artifact` use (:mod:`xcit_export.keys`).
    Image sets named by source must already be loaded (:func:`load_image_sets`)."""
    num_classes = config.num_classes
    if num_classes is None:
        num_classes = default_num_classes(config.weights, config.model)
    spec = get_spec(config.model).with_overrides(num_classes, config.input_size)
    onnx = keys_mod.onnx_key(config, spec)
    out = {"onnx": onnx}
    for name in config.targets:
        out[name] = keys_mod.target_key(get_target(name), config, onnx, evaluation_given)
    return out


def prepare_onnx(config: RunConfig, model: DeployModel, spec, progress: Progress) -> tuple[Path, dict]:
    """Export, check, simplify and parity-check the FP32 ONNX (or reuse an identical one)."""
    options = export_mod.ExportOptions(batch=config.batch, opset=config.opset, dynamic_size=config.dynamic_size)
    options.validate()
    key = keys_mod.onnx_key(config, spec)  # every field the ONNX reads (keys.RUN_CONFIG_READS)
    folder = config.out_dir / "onnx"
    reused = None if config.rebuild else _reusable(folder, key, progress)
    if reused is not None:
        progress("ONNX: reusing unchanged export")
        return reused.path, reused.metadata
    with atomic_dir(folder, marker=ARTIFACT_META) as tmp:
        progress("ONNX: exporting with torch.onnx (dynamo)")
        t0 = time.perf_counter()
        raw = export_mod.export_onnx(model, model.input_shape, tmp / "model.raw.onnx", options, model.input_dtype)
        progress("ONNX: simplifying with onnxsim")
        simplified = export_mod.simplify_onnx(raw, tmp / "model.onnx")
        progress("ONNX: parity check against PyTorch")
        h, w = spec.preprocessing.input_size
        x = export_mod.seeded_inputs((3, h, w), options.batch or options.parity_inputs, seed=config.seed + 1)
        x = to_input_format(x, config.input_format, spec.preprocessing)
        worst = export_mod.check_parity(simplified, x, export_mod.torch_reference(model, x))
        if config.dynamic_size:  # also at other sizes: nothing may be baked at the export size
            worst = export_mod.check_parity_at_sizes(simplified, model, spec, config.input_format, options,
                                                     config.seed, worst)
        meta = {"build_key": key, "opset": config.opset, "batch": config.batch or "dynamic",
                "output": config.output, "output_names": model.output_names, "input_format": config.input_format,
                "input_shape": list(model.input_shape), "input_dtype": str(model.input_dtype).replace("torch.", ""),
                "dynamic_size": config.dynamic_size,
                "export_seconds": round(time.perf_counter() - t0, 2), "parity_max_abs_error": worst,
                "raw_size_bytes": raw.stat().st_size, "size_bytes": simplified.stat().st_size}
        raw.unlink()  # the raw trace is only an intermediate
        meta["file_sha256"] = _file_hashes([tmp / "model.onnx"])
        Artifact("onnx", tmp / "model.onnx", [tmp / "model.onnx"], meta).save_metadata()
    return folder / "model.onnx", meta


def load_image_sets(config: RunConfig, spec, progress: Progress) -> tuple[dict, Any]:
    """Open ``config.calib`` / ``config.eval`` with the model's preprocessing.

    Checks what can be checked before any export: the sets exist, are large enough, fit the
    model's classes, and do not overlap. The calibration set (``--calib-size`` images) is read
    into ``config.calib_data``; the evaluation set is *not* read: it is returned as an
    :class:`~xcit_export.data.sets.ImageSet` that the evaluation streams batch by batch
    (:func:`_build_and_report`). Returns ``(provenance for the report, the evaluation set or None)``.
    """
    from .data import sets as data

    info: dict[str, Any] = {}
    calib_set = eval_set = None
    if config.calib is not None:
        calib_set = data.calibration_set(config.calib, spec.preprocessing, config.calib_size, config.seed,
                                         config.on_bad_image, config.class_index)
    if config.eval is not None:
        eval_set = data.evaluation_set(config.eval, spec.preprocessing, config.eval_size, config.seed,
                                       config.on_bad_image, config.class_index,
                                       spec.num_classes if config.output == "logits" and spec.num_classes else None)
    if calib_set is not None and eval_set is not None:
        data.check_disjoint(calib_set, eval_set)
    if calib_set is not None:
        progress(f"Data: preprocessing {len(calib_set)} calibration images")
        config.calib_data, config.calib_labels = calib_set.load(
            on_decoded=stepper(progress, "decoding calibration images"))
        config.calib_id = calib_set.content_hash()
        info["calibration"] = {"source": config.calib, "count": int(len(config.calib_data)),
                               "content_hash": config.calib_id, "skipped": len(calib_set.skipped),
                               "warnings": calib_set.warnings}
    if eval_set is not None:
        digest = eval_set.content_hash()
        config.eval_id = f"{config.eval} ({digest[:12]})"
        # count, skipped and warnings are final once the evaluation pass has read every image
        info["evaluation_set"] = {"source": config.eval, "count": len(eval_set), "content_hash": digest,
                                  "skipped": 0, "warnings": eval_set.warnings}
    return info, eval_set


def _evaluation_source(config: RunConfig, spec, eval_set) -> tuple[Any, str]:
    """The evaluation inputs as an ImageSet to stream: ``--eval``, the arrays of
    ``config.eval_data``, or seeded random inputs. Returns the set and its description."""
    from .data.sets import ImageSet

    if eval_set is not None:
        return eval_set, config.eval_id or "evaluation set"
    if config.eval_data is not None:
        x, labels = config.eval_data
        return (ImageSet(source="evaluation data", pp=spec.preprocessing, option="--eval", array=x,
                         labels=None if labels is None else [int(v) for v in labels]),
                config.eval_id or "evaluation set")
    h, w = spec.preprocessing.input_size
    x = export_mod.seeded_inputs((3, h, w), config.eval_count, seed=config.seed + 2)
    return (ImageSet(source="seeded", pp=spec.preprocessing, option="--eval", array=x),
            f"{config.eval_count} seeded random inputs (seed {config.seed + 2})")


def run(config: RunConfig, progress: Progress = lambda msg: None) -> dict:
    """Run the whole pipeline and return the report (also written to ``out_dir``).

    Inputs are checked first; the building and writing then happen under ``out_dir``'s lock
    (:func:`xcit_export.outdir.locked_output_dir`), so two runs never interleave in one folder.
    """
    left_out: dict[str, str] = {}
    _check_scenario_options(config)
    if config.auto:
        from .evaluate import auto as auto_mod

        config.budget = (config.budget or auto_mod.Budget()).check()  # a bad budget fails before any work
        config.targets, left_out = auto_mod.plan(config.targets, calibration_available(config))
        if config.objective == "throughput" and OFFLINE not in config.scenarios.scenarios:
            progress("auto: --objective throughput ranks by the offline scenario: adding --scenario offline")
            config.scenarios = dataclasses.replace(config.scenarios,
                                                   scenarios=(*config.scenarios.scenarios, OFFLINE)).check()
    targets = [get_target(name) for name in config.targets]  # unknown names fail before any work
    for target in targets:
        target.check_options(config.target_options.get(target.name, {}))
    _refuse_search_without_data(config, targets)
    num_classes = config.num_classes
    if num_classes is None:
        num_classes = default_num_classes(config.weights, config.model)
    spec = get_spec(config.model).with_overrides(num_classes, config.input_size)
    if config.eval_sizes:  # checked before any work (evaluate/sizes.py)
        from .evaluate.sizes import check_run

        check_run(config.eval_sizes, spec.patch_size, spec.name, config.dynamic_size)
    if config.threads is not None and config.threads < 1:
        raise XcitExportError(f"threads must be 1 or more, got {config.threads}; leave --threads out for all cores")
    ensure_writable_dir(config.out_dir)
    threads = config.resolved_threads()

    calib_default = _needs_default_calibration(config, targets)
    if calib_default:
        config = dataclasses.replace(config, calib=DEFAULT_CALIB)
    data_info, eval_set = load_image_sets(config, spec, progress)
    if calib_default:
        data_info["calibration"].update(default=True, note=DEFAULT_CALIB_NOTE)
    if config.calib_data is not None and config.calib_id is None:
        config.calib_id = hashlib.sha256(np.ascontiguousarray(config.calib_data).tobytes()).hexdigest()
    for target in targets:
        if target.needs_calibration and config.calib_data is None:
            raise XcitExportError(f"target {target.name} needs calibration images: pass --calib FOLDER "
                                  f"(or --calib demo for the bundled set)")

    # Everything below writes into out_dir: one run at a time there (outdir.py).
    with locked_output_dir(config.out_dir, wait=config.wait_for_lock, progress=progress):
        return _build_and_report(config, targets, spec, threads, data_info, progress, left_out, eval_set)


def _check_scenario_options(config: RunConfig) -> None:
    """--scenario and friends, and --objective, before any work (evaluate/scenarios.py, evaluate/auto.py)."""
    from .errors import UsageError
    from .evaluate.auto import OBJECTIVES

    config.scenarios.check()
    if config.objective not in OBJECTIVES:
        raise UsageError(f"--objective {config.objective!r}: use {' or '.join(OBJECTIVES)}")
    if config.objective != "latency" and not config.auto:
        raise UsageError(f"--objective {config.objective} ranks --target auto's candidates; give --target auto, or "
                         f"read the offline figures of --scenario offline")


def _refuse_search_without_data(config: RunConfig, targets) -> None:
    """Sensitivity, the budget search and NNCF accuracy control measure accuracy on the evaluation
    set: without --eval they would tune on seeded noise and report figures that mean nothing."""
    if config.eval is not None or config.eval_data is not None:
        return
    for target in targets:
        budget = keys_mod.max_top1_drop(config, target.name)
        reason = target.needs_evaluation(config.target_options.get(target.name, {}), budget)
        if reason:
            raise no_evaluation_error(reason)


def calibration_available(config: RunConfig) -> bool:
    """Whether INT8 targets can calibrate: images were given, or the weights allow the bundled set."""
    return (config.calib is not None or config.calib_data is not None
            or config.weights in DEFAULT_CALIB_WEIGHTS)


def _needs_default_calibration(config: RunConfig, targets) -> bool:
    """True when an INT8 target has no calibration set and the weights allow the bundled one.

    Random and demo weights calibrate on the demo set (say so in the report). Real weights
    (a checkpoint, ``pretrained``) calibrated on synthetic shapes would be a trap: refuse.
    """
    needing = [t.name for t in targets if t.needs_calibration]
    if not needing or config.calib is not None or config.calib_data is not None:
        return False
    if not calibration_available(config):
        raise XcitExportError(f"target {needing[0]} needs calibration images: pass --calib FOLDER with images like "
                              f"those --weights {config.weights} will see (the bundled demo set is used by default "
                              f"only for random or demo weights)")
    return True


def _build_and_report(config: RunConfig, targets, spec, threads: int, data_info: dict, progress: Progress,
                      left_out: dict[str, str], eval_set=None) -> dict:
    """Model, ONNX, every target, the report: the part of :func:`run` that writes ``out_dir``.

    Data flow (memory flat in the evaluation set's size; docs/evaluation.md):

    1. build (or reuse) every target's artifact, and ``--target auto``'s batch-1 variants;
    2. one streaming pass (:func:`xcit_export.evaluate.stream.evaluate_stream`): each decoded batch
       goes through PyTorch and every built target, and is reduced to addable counts at once;
    3. per target, alone: load, latency, latency sweep, per-op profile (on the set's first images).
    """
    from .report import document as report_mod

    progress(f"Model: building {spec.name} ({config.weights} weights)")
    model = DeployModel(load_model(spec, config.weights, config.seed), spec.preprocessing, config.output,
                        config.input_format, seed=config.seed, dynamic_size=config.dynamic_size)
    check_weights(model)  # NaN/inf weights: stop naming the checkpoint, before the export is blamed
    onnx_path, onnx_meta = prepare_onnx(config, model, spec, progress)

    source, eval_desc = _evaluation_source(config, spec, eval_set)

    def fmt(x: np.ndarray) -> np.ndarray:  # reference and targets see identical values in the deployed format
        return to_input_format(x, config.input_format, spec.preprocessing)

    calib = None if config.calib_data is None else fmt(config.calib_data)
    classify = config.output == "logits" and spec.num_classes > 0
    labelled = source.labelled and config.output == "logits"  # labelled accuracy needs class scores
    batch = config.batch or 16
    lat_batch = config.batch or 1
    # Latency, sweeps and profiles time a few inputs: the set's first readable images.
    head = fmt(source.head(max(lat_batch, *config.latency_batches, 1)))
    x_lat = head[:lat_batch] if len(head) >= lat_batch else np.repeat(head[:1], lat_batch, 0)
    evaluation = _build_evaluation(source, fmt, labelled, in_memory=eval_set is None)

    jobs = [_build_target(target, config, spec, onnx_path, onnx_meta["build_key"], model.input_shape, calib,
                          evaluation, threads, progress) for target in targets]
    if config.auto and config.batch != 1:
        jobs += _batch1_builds(config, model, spec, targets, calib, evaluation, threads, progress)

    torch_run = torch_infer(model, threads)
    passed = _evaluation_pass(jobs, source, fmt, torch_run, batch, labelled, classify, model.output_names,
                              threads, progress,
                              check=lambda ref: check_reference(ref, model.output_names, model, eval_desc),
                              reference=_reference(config, spec, source, torch_run, model.output_names, progress))
    # non-finite reference outputs stopped the pass; a reference constant over the whole set is a warning
    warnings = [constant_reference_warning(name, passed.count) for name in passed.reference_constant]
    data_info.get("evaluation_set", {}).update(count=passed.count, skipped=len(source.skipped),
                                               warnings=source.warnings)

    progress("Latency: PyTorch eager")
    torch_latency = measure_latency(latency_runs(progress, "PyTorch eager latency runs", torch_run, config.latency),
                                    np.ascontiguousarray(x_lat), config.latency)
    ref_entry: dict[str, Any] = {"latency": torch_latency.to_dict(), "threads": threads}
    if passed.reference_accuracy is not None:
        ref_entry["accuracy"] = passed.reference_accuracy
    if config.latency_batches and not config.batch:
        ref_entry["latency_sweep"] = _sweep(torch_run, head, config, progress, "PyTorch eager")
    torch_ms1 = None
    results = []
    for job, streamed in zip(jobs, passed.targets):
        if job.batch1:
            if torch_ms1 is None:
                torch_ms1 = torch_latency.median_ms if torch_latency.batch == 1 else \
                    measure_latency(torch_run, np.ascontiguousarray(head[:1]), config.latency).median_ms
            _run_target(job, streamed, head[:1], torch_ms1, head, threads, model.output_names, job.progress)
        else:
            _run_target(job, streamed, x_lat, torch_latency.median_ms, head, threads, model.output_names, progress)
        _profile_entry(job.target, job.entry, job.config, head, threads, progress)
        _scenario_entry(job, head[:1] if job.batch1 else x_lat, threads, job.progress)
        results.append(job.entry)
    for job in jobs:
        job.entry["export_batch"] = 1 if job.batch1 else (config.batch or "dynamic")
        limits = config.thresholds.get(job.target.name)
        if limits:
            checks = threshold_checks(job.entry, limits.get("thresholds", {}), limits.get("latency_budget", {}))
            job.entry["checks"] = checks_to_dicts(checks)
            job.entry["passed"] = all(c.ok for c in checks)
    sizes_info = None
    if config.eval_sizes:  # --eval-sizes (issue 23): every target again at each size
        sizes_info = _evaluate_sizes(config, model, spec, targets, onnx_path, onnx_meta["build_key"],
                                     [job.entry for job in jobs if not job.batch1], calib, threads, torch_run,
                                     progress)

    report = report_mod.build_report(
        config=config, spec=spec, onnx_meta=onnx_meta, reference=ref_entry, targets=results,
        evaluation={"description": eval_desc, "count": passed.count, "labelled": labelled,
                    **data_info, "throughput": passed.throughput},
        fingerprint=device_fingerprint())
    if warnings:
        report["warnings"] = warnings
    if sizes_info is not None:
        report["sizes"] = sizes_info
    if config.scenarios.active:  # what --scenario ran, beside latency_method
        report["scenario_method"] = config.scenarios.to_dict()
    if config.auto:
        report["recommendation"] = _recommendation(config, results, left_out, labelled, classify)
    report_mod.write_report(report, config.out_dir)
    return report


# ---- --eval-sizes (issue 23): the same evaluation pass, once more at each size ---------------------------
def _evaluate_sizes(config: RunConfig, model, spec, targets, onnx_path: Path, onnx_key: str, results: list[dict],
                    calib, threads: int, torch_run, progress: Progress) -> dict:
    """Reference and every target at each of ``config.eval_sizes`` (one ``--dynamic-size`` artifact).

    Each size streams inputs preprocessed at that size through PyTorch and every target (the same
    artifacts, reused by their build keys; :func:`_evaluation_pass`, :func:`_run_target`: the
    same rule decides), times each at that size, and records it in ``entry["sizes"]``; a size
    that fails fails the target. Returns the report's ``sizes`` section (reference latency,
    fitted slopes).
    """
    from .evaluate import sizes as sizes_mod

    loop = dataclasses.replace(config, rebuild=False, latency_batches=())  # built once, above
    section: dict[str, Any] = {"sizes": [sizes_mod.label(s) for s in config.eval_sizes], "patch_size": spec.patch_size,
                               "reference": []}

    def fmt(x: np.ndarray) -> np.ndarray:
        return to_input_format(x, config.input_format, spec.preprocessing)

    classify = config.output == "logits" and spec.num_classes > 0
    lat_batch = config.batch or 1
    for size in config.eval_sizes:
        lab = sizes_mod.label(size)
        say = renamed(progress, "", f"[{lab}] ")
        source, desc = _evaluation_source_at(config, spec, size)
        labelled = source.labelled and config.output == "logits"
        evaluation = _build_evaluation(source, fmt, labelled, in_memory=config.eval is None)
        jobs = [_build_target(target, loop, spec, onnx_path, onnx_key, model.input_shape, calib, evaluation,
                              threads, say) for target in targets]
        say(f"Size {lab}: PyTorch and every target on {len(source)} inputs")
        passed = _evaluation_pass(jobs, source, fmt, torch_run, config.batch or 16, labelled, classify,
                                  model.output_names, threads, say,
                                  check=lambda ref, d=desc: check_reference(ref, model.output_names, model, d),
                                  reference=_reference(config, spec, source, torch_run, model.output_names, say))
        head = fmt(source.head(lat_batch))
        x_lat = np.ascontiguousarray(np.resize(head, (lat_batch, *head.shape[1:])))
        torch_lat = measure_latency(torch_run, x_lat, config.latency)
        section["reference"].append(sizes_mod.reference_record(size, spec.patch_size, torch_lat.to_dict(), desc))
        for job, streamed, entry in zip(jobs, passed.targets, results):
            _run_target(job, streamed, x_lat, torch_lat.median_ms, head, threads, model.output_names, say)
            limits = (config.thresholds.get(job.target.name) or {}).get("thresholds")
            sizes_mod.add_size_record(entry, size, spec.patch_size, job.entry,
                                      threshold_checks(job.entry, limits, {}) if limits else None)
    section["slopes"] = sizes_mod.slopes(section["reference"], results)
    return section


def _evaluation_source_at(config: RunConfig, spec, size: tuple[int, int]):
    """Evaluation inputs at ``size`` as an ImageSet to stream: the --eval images preprocessed at that
    size (timm's rule: resize to size / crop_pct, centre crop), else seeded random inputs of that size."""
    from .data import sets as data

    pp = dataclasses.replace(spec.preprocessing, input_size=tuple(size))
    if config.eval is not None:
        eval_set = data.evaluation_set(config.eval, pp, config.eval_size, config.seed, config.on_bad_image,
                                       config.class_index,
                                       spec.num_classes if config.output == "logits" and spec.num_classes else None)
        return eval_set, f"{config.eval} at {size[0]}x{size[1]}"
    count = len(config.eval_data[0]) if config.eval_data is not None else config.eval_count
    x = export_mod.seeded_inputs((3, *size), count, seed=config.seed + 2)
    return (data.ImageSet(source="seeded", pp=pp, option="--eval", array=x),
            f"{count} seeded random inputs (seed {config.seed + 2}) at {size[0]}x{size[1]}")
# ---- end of --eval-sizes ----------------------------------------------------------------------------------


def _build_evaluation(source, fmt, labelled: bool, in_memory: bool) -> Callable:
    """What a build gets as its evaluation set (``BuildContext.evaluation``), per target options.

    Sets given as arrays are passed as they are. A streamed set is read whole only for a build
    that reads every image (sensitivity, ``max_drop``, a recipe's ``max_top1_drop``, without
    ``search_images``); any other build gets its images as :class:`~xcit_export.data.sets.LazyRows`,
    decoded when indexed (TensorRT reads its 16 golden inputs), so the set is never held whole.
    """
    from .data.sets import LazyRows

    cache: dict[str, Any] = {}

    def labels_of():
        if not labelled:
            return None
        return np.asarray([source.labels[i] for i in source._order()], dtype=np.int64)

    def evaluation(target, options: dict, budget) -> tuple:
        if in_memory:  # arrays given to the run (eval_data) or seeded inputs: as they are
            if "arrays" not in cache:
                cache["arrays"] = (fmt(np.asarray(source.array)), labels_of())
            return cache["arrays"]
        reads_all = target.needs_evaluation(options, budget) is not None and "search_images" not in options
        if reads_all:
            if "all" not in cache:
                x, y = source.load()
                cache["all"] = (fmt(x), y if labelled else None)
            return cache["all"]
        if "lazy" not in cache:
            cache["lazy"] = (LazyRows(source, fmt), labels_of())
        return cache["lazy"]

    return evaluation


@dataclass
class _Job:
    """One target (or auto's batch-1 variant) between its build and its report entry."""

    target: Any
    config: RunConfig
    entry: dict
    artifact: Artifact | None = None  # None: the build failed (entry says why)
    batch1: bool = False
    progress: Progress = lambda msg: None


def _fail(entry: dict, exc: BaseException) -> None:
    entry["status"] = "failed"
    if isinstance(exc, XcitExportError):
        entry["error"] = str(exc)
    else:  # a bug or backend crash: record it, keep the other targets going
        entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["traceback"] = traceback.format_exc(limit=8)


def _build_target(target, config: RunConfig, spec, onnx_path: Path, onnx_key: str, input_shape, calib,
                  evaluation, threads: int, progress: Progress, batch1: bool = False) -> _Job:
    """Build (or reuse) one target's artifact; a failure is recorded in the entry, not raised."""
    entry: dict[str, Any] = {"target": target.name, "backend": target.backend, "precision": target.precision}
    job = _Job(target, config, entry, batch1=batch1, progress=progress)
    options = dict(config.target_options.get(target.name, {}))
    budget = keys_mod.max_top1_drop(config, target.name)
    try:
        missing = target.missing_requirements()
        if missing:
            raise BackendUnavailableError(
                f"target {target.name} needs {', '.join(missing)}, which is not installed; install the "
                f"project's extras (see README) or pick another target")
        artifact, entry["reused"] = build_artifact(target, config, spec, onnx_path, onnx_key, input_shape, calib,
                                                   evaluation(target, options, budget), threads, progress)
        entry["artifact"] = {"path": str(artifact.path), "size_bytes": artifact.size_bytes,
                             **artifact.metadata}
        job.artifact = artifact
    except Exception as exc:  # noqa: BLE001 - recorded in the entry; the other targets go on
        _fail(entry, exc)
    return job


def _batch1_builds(config: RunConfig, model, spec, targets, calib, evaluation, threads,
                   progress: Progress) -> list[_Job]:
    """``--target auto``: every candidate again from a static batch-1 export, for latency-bound use.

    It lives in ``<out>/batch1/`` (its own ``onnx/`` and target folders, keyed like any other
    build, so reruns reuse it) and its entries are named ``<target>@batch1``.
    """
    from .evaluate.auto import BATCH1, variant_name

    b1 = dataclasses.replace(config, batch=1, out_dir=config.out_dir / BATCH1, latency_batches=())
    progress("auto: static batch-1 variants")
    onnx_path, onnx_meta = prepare_onnx(b1, model, spec, progress)
    jobs = []
    for target in targets:
        say = renamed(progress, target.name, variant_name(target.name, True))
        job = _build_target(target, b1, spec, onnx_path, onnx_meta["build_key"], model.input_shape, calib,
                            evaluation, threads, say, batch1=True)
        job.entry["target"] = variant_name(target.name, True)
        jobs.append(job)
    return jobs


def _counted(batches, step, total: int):
    """``batches`` as they are, telling ``step(done, total)`` (a progress bar) as each one is consumed."""
    if step is None:
        yield from batches
        return
    done = 0
    step(0, total)
    for x, y in batches:
        yield x, y
        done += len(x)  # the consumer asked for the next batch: this one went through every runner
        step(done, total)


def _reference(config: RunConfig, spec, source, torch_run, output_names: list[str], progress: Progress):
    """The PyTorch reference for the evaluation pass, cached on disk under what its outputs depend on
    (:mod:`xcit_export.evaluate.reference_cache`): read back on a rerun, else computed at its own batch."""
    from .evaluate.reference_cache import CachedReference, cache_root, reference_key
    from .models.weights import weights_fingerprint

    key = reference_key(model=spec.name, weights_id=weights_fingerprint(config.weights, config.seed, spec),
                        seed=config.seed, num_classes=spec.num_classes, preprocessing=source.pp.to_dict(),
                        output=config.output, input_format=config.input_format, dynamic_size=config.dynamic_size,
                        images=source.content_hash())
    return CachedReference(cache_root(config.out_dir), key, torch_run, output_names, progress=progress)


def _evaluation_pass(jobs: list[_Job], source, fmt, torch_run, batch: int, labelled: bool, classify: bool,
                     output_names: list[str], threads: int, progress: Progress, check=None, reference=None):
    """Load every built target and stream the evaluation set once through PyTorch and all of them
    (:mod:`xcit_export.evaluate.stream` says why one pass with every runner open). Decoding runs in
    ``min(8, threads)`` threads, a few batches ahead. Runners are closed before any latency is
    measured. Returns the :class:`~xcit_export.evaluate.stream.StreamResult`, whose ``targets``
    line up with ``jobs`` (a target that did not build or load has an error there).

    ``reference`` (a :class:`~xcit_export.evaluate.reference_cache.CachedReference`) replaces
    ``torch_run``: the set is then streamed in chunks of at least its batch (a multiple of ``batch``,
    so each target still sees whole batches of its own), and its cache is written when the pass ends.
    """
    from .data.sets import DecodeStats, default_decode_workers

    streamed, runners = [], []
    try:
        for job in jobs:
            st = StreamTarget(job.entry["target"], lambda x: [], job.config.batch or 16)
            streamed.append(st)
            if job.artifact is None:
                st.error = job.entry.get("error", "not built")
                continue
            try:
                runner = job.target.load(job.artifact, threads=threads,
                                         **job.config.target_options.get(job.target.name, {}))
            except Exception as exc:  # noqa: BLE001 - recorded as the target's failure
                _fail(job.entry, exc)
                st.error = job.entry["error"]
                continue
            runners.append(runner)
            st.infer = runner.infer
        live = [st for st in streamed if st.error is None]
        stats = DecodeStats()
        workers = min(default_decode_workers(), threads)
        progress(f"Evaluation: streaming {len(source)} inputs through PyTorch and {len(live)} target(s) "
                 f"({workers} decoding threads)")
        chunk = batch if reference is None else batch * -(-reference.batch // batch)
        batches = _counted(((fmt(x), y if labelled else None)
                            for x, y in source.stream(chunk, workers=workers, stats=stats)),
                           stepper(progress, "evaluation: PyTorch and every target"), len(source))
        try:
            result = evaluate_stream(batches, reference or torch_run, None if reference else batch, live,
                                     output_names, classify, stats, progress, total=len(source), check_reference=check)
        except BaseException:
            if reference is not None:
                reference.abort()
            raise
        if reference is not None:
            result.throughput["reference_cache"] = reference.finish()
    finally:
        for runner in runners:
            runner.close()
    result.targets = streamed
    return result


def _profile_entry(target, entry: dict, config: RunConfig, x_eval, threads: int, progress: Progress) -> None:
    """The per-op-type breakdown of one target, right after its latency figure was taken, on a
    separately opened model (the runner is closed by then, so the figure is untouched). Right
    after, not after every target: on a shared host the machine's speed drifts over minutes, and
    the breakdown is compared with that figure."""
    if not config.profile or target.profile is None or entry.get("status") != "ok" or "latency" not in entry:
        return
    progress(f"{entry['target']}: per-operator profile")
    batch = entry["latency"]["batch"]
    x = x_eval[:batch] if len(x_eval) >= batch else np.repeat(x_eval[:1], batch, 0)
    try:
        artifact = Artifact.from_dir(Path(entry["artifact"]["path"]).parent)
        entry["op_profile"] = target.profile(artifact, np.ascontiguousarray(x), threads=threads,
                                             **config.target_options.get(target.name, {}))
    except Exception as exc:  # a profiler failure costs the breakdown, never the target's result
        entry["op_profile_error"] = profile_error(exc)


OFFLINE_BATCHES = (1, 8)  # the batches a dynamic-batch artifact's offline search tries (a static one: its own)


def _scenario_entry(job: _Job, x, threads: int, progress: Progress) -> None:
    """``--scenario``: the target's scenarios (evaluate/scenarios.py) on its own runner and request
    pool, after its latency figure and profile, with energy (RAPL, where readable) and the CPU's
    clocks and temperatures around each; the entry's ``scenarios``."""
    options, entry, target = job.config.scenarios, job.entry, job.target
    if not options.active or entry.get("status") != "ok" or "latency" not in entry:
        return
    from .device import energy, sensors
    from .evaluate.scenarios import run_target

    opts = job.config.target_options.get(target.name, {})
    artifact = Artifact.from_dir(Path(entry["artifact"]["path"]).parent)
    static = job.config.batch is not None  # a static-batch export (auto's @batch1 variants included)
    pool = (lambda xb, n: target.pool(artifact, xb, streams=n, threads=threads, **opts)) if target.pool else None
    meter, no_energy = energy.source()
    entry["scenarios"] = run_target(options, lambda: target.load(artifact, threads=threads, **opts), pool,
                                    np.ascontiguousarray(x), () if static else OFFLINE_BATCHES, threads,
                                    latency=entry["latency"], meter=meter, snapshot=sensors.snapshot,
                                    progress=progress, label=entry["target"], energy_note=no_energy)


def _recommendation(config: RunConfig, results: list[dict], left_out: dict, labelled: bool,
                    classifies: bool) -> dict:
    from .evaluate import auto as auto_mod

    rec = auto_mod.recommend(results, config.budget, left_out, labelled=labelled, classifies=classifies,
                             objective=config.objective)
    if config.require_winner:
        auto_mod.require_winner(rec, config.require_winner)
    return rec


def build_artifact(target, config: RunConfig, spec, onnx_path: Path, onnx_key: str, input_shape, calib,
                   evaluation, threads: int, progress: Progress) -> tuple[Artifact, bool]:
    """Build ``target`` from the checked ONNX (or reuse the artifact with the same build key).

    Returns the artifact and whether it was reused. ``evaluation`` is ``(x, labels)`` or None (only
    accuracy-controlled quantization reads it). The matrix runner (:mod:`xcit_export.scale.matrix`) calls
    this too, so a build key means the same thing there.
    """
    options = dict(config.target_options.get(target.name, {}))
    budget = keys_mod.max_top1_drop(config, target.name)
    # every input the target's build reads (keys.RUN_CONFIG_READS, Target.reads), e.g. the calibration
    # set for tensorrt-fp16's AutoCast and the evaluation set for TensorRT's golden inputs
    key = keys_mod.target_key(target, config, onnx_key, evaluation_given=evaluation is not None)
    folder = config.out_dir / target.name
    artifact = None if config.rebuild else _reusable(folder, key, progress)
    if artifact is not None:
        progress(f"{target.name}: reusing unchanged artifact")
        return artifact, True
    progress(f"{target.name}: building")
    t0 = time.perf_counter()
    with atomic_dir(folder, marker=ARTIFACT_META) as tmp:
        ctx = BuildContext(spec=spec, onnx_path=onnx_path, out_dir=tmp, batch=config.batch,
                           input_shape=input_shape, calibration=calib,
                           calibration_id=config.calib_id, options=options, threads=threads,
                           evaluation=evaluation, max_top1_drop=budget, seed=config.seed,
                           calibration_labels=config.calib_labels,
                           dynamic_size=config.dynamic_size, sizes=tuple(config.eval_sizes))
        built = target.build(ctx)
        built.metadata["build_key"] = key
        built.metadata["file_sha256"] = _file_hashes(built.files)
        built.metadata["build_seconds"] = round(time.perf_counter() - t0, 2)
        built.save_metadata()
    return Artifact.from_dir(folder), False


def _run_target(job: _Job, streamed: StreamTarget, x_lat, torch_median_ms: float, head, threads: int,
                output_names: list[str], progress: Progress) -> None:
    """One target after the evaluation pass: its accuracy entry from the pass's counts, the status,
    then latency with only its runner loaded. Failures are recorded in ``job.entry``."""
    entry, target, config, artifact = job.entry, job.target, job.config, job.artifact
    if artifact is None or "status" in entry:  # failed to build or to load: said already
        return
    options = dict(config.target_options.get(target.name, {}))
    try:
        if streamed.error is not None:
            entry["status"] = "failed"
            entry["error"] = streamed.error
            if streamed.traceback:
                entry["traceback"] = streamed.traceback
            return
        per_output = streamed.accuracy(output_names)
        entry["accuracy"] = per_output[output_names[0]]
        if len(per_output) > 1:
            entry["outputs"] = per_output
        broken = [f"{name}: {p}" if len(per_output) > 1 else p
                  for name, acc in per_output.items() for p in output_problems(acc)]
        rss_before = rss_mb()
        t0 = time.perf_counter()
        runner = target.load(artifact, threads=threads, **options)
        entry["load_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        try:
            entry["threads"] = runner.threads
            entry["device"] = runner.device
            if getattr(runner, "inference_precision", None):
                entry["inference_precision"] = runner.inference_precision
            if getattr(runner, "shape_mode", None) and config.dynamic_size:  # which OpenVINO form is timed
                entry["shape_mode"] = runner.shape_mode
            if getattr(runner, "measures_latency", True):
                progress(f"{target.name}: measuring latency")
                lat = measure_latency(latency_runs(progress, f"{target.name}: latency runs", runner.infer, config.latency),
                                      np.ascontiguousarray(x_lat), config.latency)
                entry["latency"] = lat.to_dict()
                entry["speedup_vs_pytorch"] = round(torch_median_ms / lat.median_ms, 3)
                if config.latency_batches and not config.batch and artifact.metadata.get("batch", "dynamic") == "dynamic":
                    entry["latency_sweep"] = _sweep(runner.infer, head, config, progress, target.name)
            entry["memory_mb"] = round(rss_mb() - rss_before, 1)
        finally:
            runner.close()
        entry["status"] = "ok"
        if broken:  # the one rule (validate.output_problems): a broken output never passes
            entry["status"] = "failed"
            entry["error"] = "; ".join(broken)
        if artifact.metadata.get("note"):
            entry["note"] = artifact.metadata["note"]
    except Exception as exc:  # noqa: BLE001 - recorded in the entry; the other targets go on
        _fail(entry, exc)


def _sweep(infer, x_eval, config: RunConfig, progress: Progress, label: str) -> list[dict]:
    """Latency at each batch size of ``config.latency_batches`` (dynamic-batch artifacts only), on
    the set's first images (``x_eval``: at least as many as the largest batch, or the whole set)."""
    rows = []
    for b in config.latency_batches:
        progress(f"{label}: latency at batch {b}")
        xb = np.ascontiguousarray(np.resize(x_eval, (b, *x_eval.shape[1:])))
        rows.append(measure_latency(infer, xb, config.latency).to_dict())
    return rows
