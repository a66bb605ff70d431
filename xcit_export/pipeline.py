"""The pipeline: model -> ONNX -> each target -> validation -> report.

Stages are functions of the modules named after them (``weights``, ``export``, ``targets``,
``validate``, ``report``); this module only sequences them, decides what can be reused, and
records what happened. Artifacts are keyed by what made them (model, weights, export options,
calibration set, tool versions): an unchanged key means the artifact on disk is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import export as export_mod
from .errors import BackendUnavailableError, XcitExportError
from .fingerprint import device_fingerprint, library_versions
from .io import atomic_dir, ensure_writable_dir, write_json_atomic
from .targets import Artifact, BuildContext, get_target
from .targets.base import ARTIFACT_META
from .models.deploy import DeployModel, to_input_format
from .models.fuse import FORM_VERSION
from .gate import checks_to_dicts, threshold_checks
from .validate import (LatencyOptions, compare_outputs, labelled_accuracy, measure_latency, rss_mb,
                       run_in_batches, torch_infer)
from .weights import default_num_classes, load_model, weights_fingerprint
from .zoo import get_spec

Progress = Callable[[str], None]


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
    latency: LatencyOptions = field(default_factory=LatencyOptions)
    latency_batches: tuple[int, ...] = ()  # optional batch-size sweep (dynamic-batch artifacts)
    target_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per target: {"thresholds": {...}, "latency_budget": {...}} (from a recipe; see recipe.py).
    thresholds: dict[str, dict] = field(default_factory=dict)
    output: str = "logits"  # logits | embedding | tokens | features (models.deploy.OUTPUTS)
    input_format: str = "nchw"  # models.deploy.INPUT_FORMATS
    rebuild: bool = False

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


def _key(obj: Any) -> str:
    """Build key: what made an artifact, including this tool's version and the libraries'."""
    from . import __version__

    blob = json.dumps({"xcit_export": __version__, **obj}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _reusable(folder: Path, key: str) -> Artifact | None:
    meta = folder / ARTIFACT_META
    if not meta.exists():
        return None
    try:
        artifact = Artifact.from_dir(folder)
    except (XcitExportError, ValueError, KeyError):
        return None
    if artifact.metadata.get("build_key") != key or not all(f.exists() for f in artifact.files):
        return None
    return artifact


def prepare_onnx(config: RunConfig, model: DeployModel, spec, progress: Progress) -> tuple[Path, dict]:
    """Export, check, simplify and parity-check the FP32 ONNX (or reuse an identical one)."""
    options = export_mod.ExportOptions(batch=config.batch, opset=config.opset)
    options.validate()
    key = _key({"stage": "onnx", "model": spec.name, "num_classes": spec.num_classes,
                "input": spec.preprocessing.input_size, "output": config.output,
                "input_format": config.input_format,
                "weights": weights_fingerprint(config.weights, config.seed), "batch": config.batch,
                "opset": config.opset, "export_form": FORM_VERSION, "libs": library_versions()})
    folder = config.out_dir / "onnx"
    reused = None if config.rebuild else _reusable(folder, key)
    if reused is not None:
        progress("ONNX: reusing unchanged export")
        return reused.path, reused.metadata
    with atomic_dir(folder) as tmp:
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
        meta = {"build_key": key, "opset": config.opset, "batch": config.batch or "dynamic",
                "output": config.output, "output_names": model.output_names, "input_format": config.input_format,
                "input_shape": list(model.input_shape), "input_dtype": str(model.input_dtype).replace("torch.", ""),
                "export_seconds": round(time.perf_counter() - t0, 2), "parity_max_abs_error": worst,
                "raw_size_bytes": raw.stat().st_size, "size_bytes": simplified.stat().st_size}
        raw.unlink()  # the raw trace is only an intermediate
        Artifact("onnx", tmp / "model.onnx", [tmp / "model.onnx"], meta).save_metadata()
    return folder / "model.onnx", meta


def load_image_sets(config: RunConfig, spec, progress: Progress) -> dict:
    """Read ``config.calib`` / ``config.eval`` with the model's preprocessing into arrays.

    Checks what can be checked before any export: the sets exist, are large enough, fit the
    model's classes, and do not overlap. Returns provenance for the report.
    """
    from . import data

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
        config.calib_data, _ = calib_set.load()
        config.calib_id = calib_set.content_hash()
        info["calibration"] = {"source": config.calib, "count": int(len(config.calib_data)),
                               "content_hash": config.calib_id, "skipped": len(calib_set.skipped),
                               "warnings": calib_set.warnings}
    if eval_set is not None:
        progress(f"Data: preprocessing {len(eval_set)} evaluation images")
        config.eval_data = eval_set.load()
        config.eval_id = f"{config.eval} ({eval_set.content_hash()[:12]})"
        info["evaluation_set"] = {"source": config.eval, "count": int(len(config.eval_data[0])),
                                  "content_hash": eval_set.content_hash(), "skipped": len(eval_set.skipped),
                                  "warnings": eval_set.warnings}
    return info


def _evaluation_inputs(config: RunConfig, spec) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Normalised NCHW evaluation inputs (the set given, or seeded random ones) and labels."""
    if config.eval_data is not None:
        x, labels = config.eval_data
        return x, labels, config.eval_id or "evaluation set"
    h, w = spec.preprocessing.input_size
    x = export_mod.seeded_inputs((3, h, w), config.eval_count, seed=config.seed + 2)
    return x, None, f"{config.eval_count} seeded random inputs (seed {config.seed + 2})"


def run(config: RunConfig, progress: Progress = lambda msg: None) -> dict:
    """Run the whole pipeline and return the report (also written to ``out_dir``)."""
    from . import report as report_mod

    targets = [get_target(name) for name in config.targets]  # unknown names fail before any work
    for target in targets:
        target.check_options(config.target_options.get(target.name, {}))
    num_classes = config.num_classes
    if num_classes is None:
        num_classes = default_num_classes(config.weights, config.model)
    spec = get_spec(config.model).with_overrides(num_classes, config.input_size)
    ensure_writable_dir(config.out_dir)
    threads = config.resolved_threads()

    data_info = load_image_sets(config, spec, progress)
    if config.calib_data is not None and config.calib_id is None:
        config.calib_id = hashlib.sha256(np.ascontiguousarray(config.calib_data).tobytes()).hexdigest()
    for target in targets:
        if target.needs_calibration and config.calib_data is None:
            raise XcitExportError(f"target {target.name} needs calibration images: pass --calib FOLDER "
                                  f"(or --calib demo for the bundled set)")

    progress(f"Model: building {spec.name} ({config.weights} weights)")
    model = DeployModel(load_model(spec, config.weights, config.seed), spec.preprocessing, config.output,
                        config.input_format, seed=config.seed)
    onnx_path, onnx_meta = prepare_onnx(config, model, spec, progress)
    input_shape = model.input_shape

    x_eval, labels, eval_desc = _evaluation_inputs(config, spec)
    # Reference and targets see identical values in the deployed input format.
    x_eval = to_input_format(x_eval, config.input_format, spec.preprocessing)
    calib = None if config.calib_data is None else to_input_format(config.calib_data, config.input_format,
                                                                  spec.preprocessing)
    if config.output != "logits":
        labels = None  # labelled accuracy needs class scores
    progress(f"Reference: PyTorch on {len(x_eval)} evaluation inputs")
    torch_run = torch_infer(model, threads)
    reference = run_in_batches(torch_run, x_eval, config.batch or 16)
    lat_batch = config.batch or 1
    x_lat = x_eval[:lat_batch] if len(x_eval) >= lat_batch else np.repeat(x_eval[:1], lat_batch, 0)
    progress("Latency: PyTorch eager")
    torch_latency = measure_latency(torch_run, np.ascontiguousarray(x_lat), config.latency)
    ref_entry: dict[str, Any] = {"latency": torch_latency.to_dict(), "threads": threads}
    if labels is not None:
        ref_entry["accuracy"] = labelled_accuracy(reference[0], labels)

    if config.latency_batches and not config.batch:
        ref_entry["latency_sweep"] = _sweep(torch_run, x_eval, config, progress, "PyTorch eager")

    results = []
    for target in targets:
        entry = _run_target(target, config, spec, onnx_path, onnx_meta["build_key"], input_shape, x_eval, labels,
                            reference, x_lat, calib, torch_latency.median_ms, threads, progress,
                            output_names=model.output_names)
        limits = config.thresholds.get(target.name)
        if limits:
            checks = threshold_checks(entry, limits.get("thresholds", {}), limits.get("latency_budget", {}))
            entry["checks"] = checks_to_dicts(checks)
            entry["passed"] = all(c.ok for c in checks)
        results.append(entry)

    report = report_mod.build_report(
        config=config, spec=spec, onnx_meta=onnx_meta, reference=ref_entry, targets=results,
        evaluation={"description": eval_desc, "count": int(len(x_eval)), "labelled": labels is not None,
                    **data_info},
        fingerprint=device_fingerprint())
    report_mod.write_report(report, config.out_dir)
    return report


def _run_target(target, config: RunConfig, spec, onnx_path: Path, onnx_key: str, input_shape, x_eval, labels, reference,
                x_lat, calib, torch_median_ms: float, threads: int, progress: Progress,
                output_names: list[str]) -> dict:
    entry: dict[str, Any] = {"target": target.name, "backend": target.backend, "precision": target.precision}
    options = dict(config.target_options.get(target.name, {}))
    try:
        missing = target.missing_requirements()
        if missing:
            raise BackendUnavailableError(
                f"target {target.name} needs {', '.join(missing)}, which is not installed; install the "
                f"project's extras (see README) or pick another target")
        key = _key({"stage": target.name, "onnx": onnx_key, "options": options,
                    "calib": config.calib_id if target.needs_calibration else None,
                    "libs": library_versions()})
        folder = config.out_dir / target.name
        artifact = None if config.rebuild else _reusable(folder, key)
        if artifact is not None:
            progress(f"{target.name}: reusing unchanged artifact")
            entry["reused"] = True
        else:
            progress(f"{target.name}: building")
            t0 = time.perf_counter()
            with atomic_dir(folder) as tmp:
                ctx = BuildContext(spec=spec, onnx_path=onnx_path, out_dir=tmp, batch=config.batch,
                                   input_shape=input_shape, calibration=calib,
                                   calibration_id=config.calib_id, options=options, threads=threads,
                                   evaluation=(x_eval, labels))
                built = target.build(ctx)
                built.metadata["build_key"] = key
                built.metadata["build_seconds"] = round(time.perf_counter() - t0, 2)
                built.save_metadata()
            artifact = Artifact.from_dir(folder)
            entry["reused"] = False
        entry["artifact"] = {"path": str(artifact.path), "size_bytes": artifact.size_bytes,
                             **{k: v for k, v in artifact.metadata.items() if k != "build_key"}}
        if not target.can_run():
            entry["status"] = "built"
            entry["note"] = artifact.metadata.get("note", "built here; this machine cannot run it")
            return entry
        progress(f"{target.name}: validating accuracy")
        rss_before = rss_mb()
        t0 = time.perf_counter()
        runner = target.load(artifact, threads=threads, **options)
        entry["load_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        try:
            outputs = run_in_batches(runner.infer, x_eval, config.batch or 16)
            classify = config.output == "logits" and spec.num_classes > 0
            per_output = {name: compare_outputs(o, r, labels if i == 0 else None, classify=classify)
                          for i, (name, o, r) in enumerate(zip(output_names, outputs, reference))}
            entry["accuracy"] = per_output[output_names[0]]
            if len(per_output) > 1:
                entry["outputs"] = per_output
            entry["threads"] = runner.threads
            entry["device"] = runner.device
            if getattr(runner, "inference_precision", None):
                entry["inference_precision"] = runner.inference_precision
            if getattr(runner, "measures_latency", True):
                progress(f"{target.name}: measuring latency")
                lat = measure_latency(runner.infer, np.ascontiguousarray(x_lat), config.latency)
                entry["latency"] = lat.to_dict()
                entry["speedup_vs_pytorch"] = round(torch_median_ms / lat.median_ms, 3)
                if config.latency_batches and not config.batch and artifact.metadata.get("batch", "dynamic") == "dynamic":
                    entry["latency_sweep"] = _sweep(runner.infer, x_eval, config, progress, target.name)
            entry["memory_mb"] = round(rss_mb() - rss_before, 1)
        finally:
            runner.close()
        entry["status"] = "ok"
        if artifact.metadata.get("note"):
            entry["note"] = artifact.metadata["note"]
    except XcitExportError as exc:
        entry["status"] = "failed"
        entry["error"] = str(exc)
    except Exception as exc:  # a bug or backend crash: record it, keep the other targets going
        entry["status"] = "failed"
        entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["traceback"] = traceback.format_exc(limit=8)
    return entry


def _sweep(infer, x_eval, config: RunConfig, progress: Progress, label: str) -> list[dict]:
    """Latency at each batch size of ``config.latency_batches`` (dynamic-batch artifacts only)."""
    rows = []
    for b in config.latency_batches:
        progress(f"{label}: latency at batch {b}")
        xb = np.ascontiguousarray(np.resize(x_eval, (b, *x_eval.shape[1:])))
        rows.append(measure_latency(infer, xb, config.latency).to_dict())
    return rows
