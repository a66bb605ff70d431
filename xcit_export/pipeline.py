"""The pipeline: model -> ONNX -> each target -> validation -> report.

Stages are functions of the modules named after them (``weights``, ``export``, ``targets``,
``validate``, ``report``); this module only sequences them, decides what can be reused, and
records what happened. Artifacts are keyed by what made them (model, weights, export options,
calibration set, tool versions): an unchanged key means the artifact on disk is reused.
"""

from __future__ import annotations

import dataclasses
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
from .io import atomic_dir, ensure_writable_dir
from .outdir import locked_output_dir
from .evaluate.profiling import profile_error
from .targets import Artifact, BuildContext, get_target
from .targets.base import ARTIFACT_META
from .models.deploy import DeployModel, to_input_format
from .models.fuse import FORM_VERSION
from .report.gate import checks_to_dicts, threshold_checks
from .evaluate.validate import (LatencyOptions, compare_outputs, labelled_accuracy, measure_latency, rss_mb,
                       run_in_batches, torch_infer)
from .models.weights import default_num_classes, load_model, weights_fingerprint
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
    options = export_mod.ExportOptions(batch=config.batch, opset=config.opset, dynamic_size=config.dynamic_size)
    options.validate()
    key = _key({"stage": "onnx", "model": spec.name, "num_classes": spec.num_classes,
                "input": spec.preprocessing.input_size, "output": config.output,
                "input_format": config.input_format,
                "weights": weights_fingerprint(config.weights, config.seed), "batch": config.batch,
                "opset": config.opset, "export_form": FORM_VERSION, "libs": library_versions(),
                **({"dynamic_size": True} if config.dynamic_size else {})})
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
        Artifact("onnx", tmp / "model.onnx", [tmp / "model.onnx"], meta).save_metadata()
    return folder / "model.onnx", meta


def load_image_sets(config: RunConfig, spec, progress: Progress) -> dict:
    """Read ``config.calib`` / ``config.eval`` with the model's preprocessing into arrays.

    Checks what can be checked before any export: the sets exist, are large enough, fit the
    model's classes, and do not overlap. Returns provenance for the report.
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
    """Run the whole pipeline and return the report (also written to ``out_dir``).

    Inputs are checked first; the building and writing then happen under ``out_dir``'s lock
    (:func:`xcit_export.outdir.locked_output_dir`), so two runs never interleave in one folder.
    """
    left_out: dict[str, str] = {}
    if config.auto:
        from .evaluate import auto as auto_mod

        config.budget = (config.budget or auto_mod.Budget()).check()  # a bad budget fails before any work
        config.targets, left_out = auto_mod.plan(config.targets, calibration_available(config))
    targets = [get_target(name) for name in config.targets]  # unknown names fail before any work
    for target in targets:
        target.check_options(config.target_options.get(target.name, {}))
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
    data_info = load_image_sets(config, spec, progress)
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
        return _build_and_report(config, targets, spec, threads, data_info, progress, left_out)


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
                      left_out: dict[str, str]) -> dict:
    """Model, ONNX, every target, the report: the part of :func:`run` that writes ``out_dir``."""
    from .report import document as report_mod

    progress(f"Model: building {spec.name} ({config.weights} weights)")
    model = DeployModel(load_model(spec, config.weights, config.seed), spec.preprocessing, config.output,
                        config.input_format, seed=config.seed, dynamic_size=config.dynamic_size)
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
        _profile_entry(target, entry, config, x_eval, threads, progress)
        results.append(entry)
    if config.auto and config.batch != 1:
        results += _batch1_variants(config, model, spec, targets, x_eval, labels, reference, calib, threads,
                                    torch_run, torch_latency, progress)
    for target, entry in zip(targets + targets, results):
        entry["export_batch"] = 1 if entry["target"] != target.name else (config.batch or "dynamic")
        limits = config.thresholds.get(target.name)
        if limits:
            checks = threshold_checks(entry, limits.get("thresholds", {}), limits.get("latency_budget", {}))
            entry["checks"] = checks_to_dicts(checks)
            entry["passed"] = all(c.ok for c in checks)
    sizes_info = None
    if config.eval_sizes:  # --eval-sizes (issue 23): every target again at each size
        sizes_info = _evaluate_sizes(config, model, spec, targets, onnx_path, onnx_meta["build_key"], results[:len(targets)],
                                     calib, threads, torch_run, progress)

    report = report_mod.build_report(
        config=config, spec=spec, onnx_meta=onnx_meta, reference=ref_entry, targets=results,
        evaluation={"description": eval_desc, "count": int(len(x_eval)), "labelled": labels is not None,
                    **data_info},
        fingerprint=device_fingerprint())
    if sizes_info is not None:
        report["sizes"] = sizes_info
    if config.auto:
        report["recommendation"] = _recommendation(config, results, left_out, labels is not None,
                                                   config.output == "logits" and spec.num_classes > 0)
    report_mod.write_report(report, config.out_dir)
    return report


# ---- --eval-sizes (issue 23): a loop over sizes around the existing per-target evaluation ----------------
def _evaluate_sizes(config: RunConfig, model, spec, targets, onnx_path: Path, onnx_key: str, results: list[dict],
                    calib, threads: int, torch_run, progress: Progress) -> dict:
    """Reference and every target at each of ``config.eval_sizes`` (one ``--dynamic-size`` artifact).

    Each size runs :func:`_run_target` on inputs preprocessed at that size (the same artifact,
    reused by its build key); the per-size records go to ``entry["sizes"]`` and a size that fails
    fails the target. Returns the report's ``sizes`` section (reference latency, fitted slopes).
    """
    from .evaluate import sizes as sizes_mod

    loop = dataclasses.replace(config, rebuild=False, latency_batches=())  # built once, above
    section: dict[str, Any] = {"sizes": [sizes_mod.label(s) for s in config.eval_sizes], "patch_size": spec.patch_size,
                               "reference": []}
    for size in config.eval_sizes:
        lab = sizes_mod.label(size)
        x, labels, desc = _evaluation_inputs_at(config, spec, size)
        x = to_input_format(x, config.input_format, spec.preprocessing)
        labels = labels if config.output == "logits" else None
        progress(f"Size {lab}: PyTorch reference on {len(x)} inputs")
        reference = run_in_batches(torch_run, x, config.batch or 16)
        lat_batch = config.batch or 1
        x_lat = np.ascontiguousarray(np.resize(x, (lat_batch, *x.shape[1:])))
        torch_lat = measure_latency(torch_run, x_lat, config.latency)
        section["reference"].append(sizes_mod.reference_record(size, spec.patch_size, torch_lat.to_dict(), desc))
        for target, entry in zip(targets, results):
            sized = _run_target(target, loop, spec, onnx_path, onnx_key, model.input_shape, x, labels, reference,
                                x_lat, calib, torch_lat.median_ms, threads,
                                lambda msg: progress(f"[{lab}] {msg}"), output_names=model.output_names)
            sizes_mod.add_size_record(entry, size, spec.patch_size, sized,
                                      (config.thresholds.get(target.name) or {}).get("thresholds"))
    section["slopes"] = sizes_mod.slopes(section["reference"], results)
    return section


def _evaluation_inputs_at(config: RunConfig, spec, size: tuple[int, int]):
    """Evaluation inputs at ``size``: the --eval images preprocessed at that size (timm's rule: resize
    to size / crop_pct, centre crop), else seeded random inputs of that size."""
    pp = dataclasses.replace(spec.preprocessing, input_size=tuple(size))
    if config.eval is not None:
        from .data import sets as data

        eval_set = data.evaluation_set(config.eval, pp, config.eval_size, config.seed, config.on_bad_image,
                                       config.class_index,
                                       spec.num_classes if config.output == "logits" and spec.num_classes else None)
        x, labels = eval_set.load()
        return x, labels, f"{config.eval} at {size[0]}x{size[1]}"
    count = len(config.eval_data[0]) if config.eval_data is not None else config.eval_count
    x = export_mod.seeded_inputs((3, *size), count, seed=config.seed + 2)
    return x, None, f"{count} seeded random inputs (seed {config.seed + 2})"
# ---- end of --eval-sizes ----------------------------------------------------------------------------------


def _batch1_variants(config: RunConfig, model, spec, targets, x_eval, labels, reference, calib, threads,
                     torch_run, torch_latency, progress: Progress) -> list[dict]:
    """``--target auto``: every candidate again from a static batch-1 export, for latency-bound use.

    It lives in ``<out>/batch1/`` (its own ``onnx/`` and target folders, keyed like any other
    build, so reruns reuse it) and its entries are named ``<target>@batch1``.
    """
    from .evaluate.auto import BATCH1, variant_name

    b1 = dataclasses.replace(config, batch=1, out_dir=config.out_dir / BATCH1, latency_batches=())
    progress("auto: static batch-1 variants")
    onnx_path, onnx_meta = prepare_onnx(b1, model, spec, progress)
    x1 = np.ascontiguousarray(x_eval[:1])
    torch_ms = torch_latency.median_ms if torch_latency.batch == 1 else \
        measure_latency(torch_run, x1, config.latency).median_ms
    entries = []
    for target in targets:
        entry = _run_target(target, b1, spec, onnx_path, onnx_meta["build_key"], model.input_shape, x_eval,
                            labels, reference, x1, calib, torch_ms, threads,
                            lambda msg, name=target.name: progress(msg.replace(name, variant_name(name, True), 1)),
                            output_names=model.output_names)
        entry["target"] = variant_name(target.name, True)
        _profile_entry(target, entry, b1, x_eval, threads, progress)
        entries.append(entry)
    return entries


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


def _recommendation(config: RunConfig, results: list[dict], left_out: dict, labelled: bool,
                    classifies: bool) -> dict:
    from .evaluate import auto as auto_mod

    rec = auto_mod.recommend(results, config.budget, left_out, labelled=labelled, classifies=classifies)
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
    budget = (config.thresholds.get(target.name) or {}).get("thresholds", {}).get("max_top1_drop")
    key_obj = {"stage": target.name, "onnx": onnx_key, "options": options,
               "calib": config.calib_id if target.needs_calibration else None, "libs": library_versions()}
    if target.key_inputs is not None:  # e.g. the ISA class a CPU-specific format was chosen for
        key_obj["target_inputs"] = target.key_inputs(options)
    if budget is not None:
        key_obj["max_top1_drop"] = budget
    if config.eval_sizes:  # TensorRT profiles and per-size golden data span them
        key_obj["sizes"] = [list(size) for size in config.eval_sizes]
    if evaluation is not None and (budget is not None or {"max_drop", "sensitivity"} & set(options)):
        # the build reads the evaluation set (sensitivity, budget search): a new set means a new build
        key_obj["eval"] = config.eval_id or hashlib.sha256(np.ascontiguousarray(evaluation[0]).tobytes()).hexdigest()
    key = _key(key_obj)
    folder = config.out_dir / target.name
    artifact = None if config.rebuild else _reusable(folder, key)
    if artifact is not None:
        progress(f"{target.name}: reusing unchanged artifact")
        return artifact, True
    progress(f"{target.name}: building")
    t0 = time.perf_counter()
    with atomic_dir(folder) as tmp:
        ctx = BuildContext(spec=spec, onnx_path=onnx_path, out_dir=tmp, batch=config.batch,
                           input_shape=input_shape, calibration=calib,
                           calibration_id=config.calib_id, options=options, threads=threads,
                           evaluation=evaluation, max_top1_drop=budget, dynamic_size=config.dynamic_size,
                           sizes=tuple(config.eval_sizes))
        built = target.build(ctx)
        built.metadata["build_key"] = key
        built.metadata["build_seconds"] = round(time.perf_counter() - t0, 2)
        built.save_metadata()
    return Artifact.from_dir(folder), False


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
        artifact, entry["reused"] = build_artifact(target, config, spec, onnx_path, onnx_key, input_shape, calib,
                                                   (x_eval, labels), threads, progress)
        entry["artifact"] = {"path": str(artifact.path), "size_bytes": artifact.size_bytes,
                             **artifact.metadata}
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
            if getattr(runner, "shape_mode", None) and config.dynamic_size:  # which OpenVINO form is timed
                entry["shape_mode"] = runner.shape_mode
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
