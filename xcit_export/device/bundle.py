"""Device bundles: everything a Jetson (or RTX PC) needs to build, check and time a TensorRT engine.

A bundle is made on the host from a built ``tensorrt-*`` / ``tensorrt-rtx-*`` target folder
(``out/<model>/<target>``, which holds the precision-ready ONNX and ``golden.npz``)::

    <bundle>/
      model.<precision>.onnx   precision-ready ONNX (what the engine is built from)
      golden.npz               golden inputs ``x``, FP32 reference outputs ``reference`` (the
                               parity-checked FP32 ONNX on onnxruntime CPU), the precision ONNX's
                               own outputs on the host ``onnx_output``, and ``labels`` if known
      thresholds.json          what device-check requires of the engine's outputs
      calibration.json         calibration provenance (id, sha256 of the arrays, count, method)
      trtexec.txt              the equivalent trtexec command line
      bundle.json              model, target, library, precision, input, profile, host results
      README.md                how to use it
      device_check.pyz         the device runner (python3 device_check.pyz .), see device/pyz.py
      manifest.json            sha256 and size of every file above
    <bundle>.tar.gz            the same folder, for copying to the device

``device-check`` verifies the manifest first (a changed or missing file stops it before anything
runs), builds the engine when a TensorRT library and a CUDA GPU are present (cached under
``<bundle>/device-check/``), runs the golden inputs, compares them with the thresholds, measures
latency and writes ``device-check/report.json``. Without a TensorRT library or GPU (a host) it
runs the precision-ready ONNX on onnxruntime CPU instead and says plainly that no engine was built.

This module imports neither torch, onnx nor click at module level and stays Python 3.8
compatible: it is packed into the bundle's ``device_check.pyz`` (:mod:`xcit_export.device.app`),
which a Jetson runs with numpy, TensorRT and cuda-python alone.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..version import __version__
from ..errors import ArtifactError, BackendUnavailableError, XcitExportError
from ..io import atomic_dir, atomic_path, sha256_file, write_json_atomic, write_text_atomic
from ..evaluate.profiling import profile_error
from ..evaluate.validate import compare_outputs
from ..verdict import Check, Limits, judge, limits_for, record_outputs, returned_outputs_problem

FORMAT = 1
MANIFEST = "manifest.json"
BUNDLE_META = "bundle.json"
THRESHOLDS = "thresholds.json"
CALIBRATION = "calibration.json"
GOLDEN = "golden.npz"
POINTS = "points.npz"  # --explain: the FP32 reference at every point on the first golden inputs
POINTS_COUNT = 4  # golden inputs the points are kept for (each point is a whole token map)
TRTEXEC = "trtexec.txt"
README = "README.md"
WORK_DIR = "device-check"
REPORT = "report.json"
REPORT_SCHEMA_VERSION = 1  # report.document.SCHEMA_VERSION (report/document.py is host side: not imported here)

# Engine vs FP32 reference on the golden inputs: cosine floor, margin below the host's ONNX-level
# cosine, and top-1 flips allowed beyond the host's (kernels differ between onnxruntime and
# TensorRT; FP16/INT8 near-ties may resolve differently).
_COSINE_FLOOR = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98}
_COSINE_MARGIN = {"fp32": 1e-4, "fp16": 1e-3, "int8": 1e-2}
_EXTRA_FLIPS = {"fp32": 0, "fp16": 1, "int8": 2}

Progress = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# Making a bundle
# --------------------------------------------------------------------------------------------

def resolve_artifact_dir(path: Path, target: str | None = None) -> Path:
    """A target folder from ``out/<model>/<target>`` or ``out/<model>`` plus ``--target``."""
    from ..targets.base import ARTIFACT_META

    path = Path(path)
    if target and path.name != target:
        path = path / target
    if not path.exists():
        raise ArtifactError(f"'{path}' does not exist; give the folder of a built tensorrt target, e.g. "
                            f"out/<model>/tensorrt-int8, or the run folder with --target")
    if not (path / ARTIFACT_META).exists():
        built = sorted(p.parent.name for p in path.glob(f"*/{ARTIFACT_META}") if p.parent.name.startswith("tensorrt"))
        hint = f" (tensorrt targets built there: {', '.join(built)}; pass --target)" if built else ""
        raise ArtifactError(f"'{path}' holds no {ARTIFACT_META}: it is not a built target folder{hint}")
    return path


# thresholds.json written before the verdict's vocabulary (verdict.LIMIT_KEYS), still read
_LEGACY_KEYS = {"cosine_min": "min_cosine", "top1_agreement": "min_top1_agreement"}


def default_thresholds(precision: str, onnx_check: dict) -> dict:
    """Thresholds for the engine (the verdict's limit keys): the cosine and top-1 agreement from the
    host's ONNX-level result on the same golden inputs (never above the precision's floor), over
    the default limits of the precision class (verdict.DEFAULT_LIMITS: the relative error, which no
    host figure may loosen)."""
    n = max(1, int(onnx_check.get("count", 1)))
    host_cos = float(onnx_check.get("cosine_min", 1.0))
    cos = min(_COSINE_FLOOR[precision], host_cos - _COSINE_MARGIN[precision])
    given = {"min_cosine": round(cos, 6)}
    if "top1_agreement" in onnx_check:
        given["min_top1_agreement"] = round(max(0.0, float(onnx_check["top1_agreement"]) - _EXTRA_FLIPS[precision] / n), 6)
    return dict(limits_for(precision, given).thresholds)


def device_limits(thresholds: dict, precision: str) -> Limits:
    """The verdict's limits from a bundle's ``thresholds.json`` (or ``xcit-export bundle``'s overrides):
    limit keys (older bundles' ``cosine_min``/``top1_agreement`` too), ``max_latency_ms`` as the
    median latency budget; ``finite`` is the output rule, always applied; ``per_size`` is read per size."""
    given, budget = {}, {}
    for key, value in thresholds.items():
        if value is None or key in ("finite", "per_size", "latency_budget"):
            continue
        if key == "max_latency_ms":
            budget["median_ms"] = float(value)
        else:
            given[_LEGACY_KEYS.get(key, key)] = float(value)
    budget.update(thresholds.get("latency_budget") or {})
    return limits_for(precision, given, budget, source="the bundle's thresholds.json")


def _readme(meta: dict, thresholds: dict, trtexec: str) -> str:
    from ..targets.tensorrt.device import CUDA_PYTHON_HINT

    prof = meta["profile"]
    lines = [
        f"# Device bundle: {meta['model']} / {meta['target']}",
        "",
        f"Precision-ready ONNX (`{meta['onnx']}`, {meta['precision'].upper()}, input `{meta['input_name']}` "
        f"{'x'.join(str(d) for d in meta['input_shape'])}, batch {meta['batch']}) for {meta['library']}, with "
        f"golden inputs, their FP32 reference outputs and the thresholds the engine must meet.",
        "",
        "## On the device",
        "",
        "```",
        "tar xzf BUNDLE.tar.gz && cd BUNDLE   # when it came as a tarball; BUNDLE is this folder's name",
        "python3 device_check.pyz .",
        "```",
        "",
        "(`xcit-export device-check <this folder, or its .tar.gz>` does the same where xcit-export is installed.) "
        "It checks every file against `manifest.json`, builds the engine (strongly typed network, profile "
        f"batch {prof['min']}/{prof['opt']}/{prof['max']}, cached in `device-check/`), runs the golden inputs, "
        "compares them with `thresholds.json`, measures latency, writes `device-check/report.json` and exits "
        "non-zero if anything fails. `device_check.pyz` needs Python 3.8 or newer, numpy, TensorRT's Python "
        f"bindings (JetPack: `sudo apt install python3-libnvinfer python3-numpy`) and the {CUDA_PYTHON_HINT}; "
        "not PyTorch, not xcit-export. Copy `device-check/report.json` back and merge it on the host with "
        "`xcit-export report merge`.",
        "",
        "Without TensorRT the same command runs the ONNX on onnxruntime CPU and says that no engine was built.",
        "",
        "## trtexec equivalent",
        "",
        "```",
        trtexec.rstrip(),
        "```",
        "",
        "## Thresholds (engine vs FP32 reference on the golden inputs)",
        "",
        *[f"- `{k}`: {v}" for k, v in thresholds.items()],
        "",
        f"Host result of the precision-ready ONNX on onnxruntime CPU: {json.dumps(meta['host_onnx_check'])}",
        "",
        "Editing any file invalidates `manifest.json`; re-create the bundle with `xcit-export bundle` instead.",
        "",
    ]
    return "\n".join(lines)


def create_bundle(artifact_dir: Path, out_dir: Path | None = None, *, golden_count: int | None = None,
                  thresholds: dict | None = None, tarball: bool = True, progress: Progress = lambda m: None) -> Path:
    """Write a bundle folder (and ``<folder>.tar.gz``) from a built tensorrt target folder."""
    from .pyz import PYZ_NAME, build_pyz
    from ..targets.base import Artifact
    from ..targets.tensorrt import trtexec_command

    artifact = Artifact.from_dir(Path(artifact_dir))
    meta = artifact.metadata
    if not artifact.target.startswith("tensorrt") or not meta.get("onnx") or not meta.get("golden"):
        raise ArtifactError(f"'{artifact_dir}' is a {artifact.target} artifact; bundles are made from the "
                            f"tensorrt-* and tensorrt-rtx-* targets (rebuild one with this version of xcit-export)")
    folder = Path(artifact_dir)
    onnx_path = folder / meta["onnx"]
    golden = _golden_of(folder, meta, golden_count)
    precision = meta["precision"]
    onnx_check = compare_outputs(golden["onnx_output"], golden["reference"])
    onnx_check["source"] = (meta.get("onnx_check") or {}).get("source", "unknown")
    limits = _bundle_thresholds(precision, onnx_check, thresholds)
    batch = meta.get("batch", "dynamic")
    static = isinstance(batch, int)
    profile = meta["profile"]
    input_shape = list(meta["input_shape"])
    workspace = int((meta.get("engine_info") or {}).get("workspace_mb", 1024))
    trtexec = trtexec_command(meta["onnx"], precision, profile, input_shape, workspace_mb=workspace, static=static,
                              library=meta["library"])
    sized = _sized_golden(folder, meta, precision, thresholds, golden_count)
    points, point_arrays = _points_reference(folder, artifact.target, onnx_path, golden["x"][:POINTS_COUNT], progress)
    if sized:
        limits["per_size"] = {label: info["thresholds"] for label, info in sized.items()}
    bundle_meta = _bundle_meta(artifact, folder, golden, onnx_check, sized, workspace, onnx_path)
    # --explain: [{"module", "tensors"}] in model order; their FP32 values on the first golden inputs in points.npz
    bundle_meta["points"] = points
    calibration = {"calibration": meta.get("calibration"), "precision": precision,
                   "note": None if meta.get("calibration") else "no calibration set was used for this precision"}
    out_dir = Path(out_dir) if out_dir else folder.parent / "bundles" / f"{meta.get('model') or 'model'}-{artifact.target}"
    progress(f"bundle: writing {out_dir}")
    with atomic_dir(out_dir, marker=MANIFEST) as tmp:
        shutil.copyfile(onnx_path, tmp / meta["onnx"])
        with open(tmp / GOLDEN, "wb") as fh:
            np.savez(fh, **golden)
        for info in sized.values():
            with open(tmp / info["file"], "wb") as fh:
                np.savez(fh, **info["arrays"])
        if points:
            with open(tmp / POINTS, "wb") as fh:
                np.savez(fh, **point_arrays)
        write_json_atomic(tmp / THRESHOLDS, limits)
        write_json_atomic(tmp / CALIBRATION, calibration)
        write_text_atomic(tmp / TRTEXEC, trtexec)
        write_json_atomic(tmp / BUNDLE_META, bundle_meta)
        write_text_atomic(tmp / README, _readme(bundle_meta, limits, trtexec))
        build_pyz(tmp / PYZ_NAME)  # the device runner, from this package's device-side modules
        names = [meta["onnx"], GOLDEN, *[i["file"] for i in sized.values()], *([POINTS] if points else []), THRESHOLDS,
                 CALIBRATION, TRTEXEC, BUNDLE_META, README, PYZ_NAME]
        write_json_atomic(tmp / MANIFEST, {
            "format": FORMAT, "algorithm": "sha256",
            "files": {n: {"sha256": sha256_file(tmp / n), "bytes": (tmp / n).stat().st_size} for n in names}})
    # Files and folder have the modes open()/mkdir() give under the umask (io.atomic_*), and tar
    # records each member's mode as it is on disk: 0644/0755 under umask 0022, private under 0077.
    if tarball:
        tar_path = out_dir.parent / f"{out_dir.name}.tar.gz"
        with atomic_path(tar_path) as tmp_tar:
            with tarfile.open(tmp_tar, "w:gz") as tar:
                tar.add(out_dir, arcname=out_dir.name, recursive=False)
                for path in sorted(out_dir.iterdir()):
                    tar.add(path, arcname=f"{out_dir.name}/{path.name}", recursive=False)
        progress(f"bundle: wrote {tar_path}")
    return out_dir


def _points_reference(folder: Path, target: str, onnx_path: Path, x: np.ndarray, progress: Progress):
    """``(points, arrays)`` for device-check's per-point report, when the run that built ``folder``
    explained this target (its report.json beside the target folder holds the points' tensors):
    each point's tensor names present in the precision-ready ONNX, and the FP32 ONNX's values there
    on ``x`` (the FP32 ONNX equals PyTorch at every point: that is how the points were found). Host
    side (needs onnx); ``(None, None)`` when the run did not explain the target."""
    report_path, fp32 = folder.parent / "report.json", folder.parent / "onnx" / "model.onnx"
    if not report_path.exists() or not fp32.exists():
        return None, None
    entry = next((t for t in json.loads(report_path.read_text()).get("targets", []) if t.get("target") == target), {})
    rows = (entry.get("divergence") or {}).get("points") or []
    if not rows:
        return None, None
    import onnx

    from ..diagnose.locate import Location
    from ..diagnose.mark import MarkedOnnxRunner

    produced = {o for n in onnx.load(str(onnx_path), load_external_data=False).graph.node for o in n.output}
    locations = {r["module"]: Location(r["module"], list(r.get("tensors") or [r["tensor"]])) for r in rows}
    points = [{"module": m, "tensors": [n for n in loc.names if n in produced]} for m, loc in locations.items()]
    points = [p for p in points if p["tensors"]]
    progress(f"bundle: the FP32 reference at {len(points)} points on {len(x)} golden inputs (--explain)")
    runner = MarkedOnnxRunner(fp32, {p["module"]: locations[p["module"]] for p in points})
    try:
        _, values = runner.infer(np.ascontiguousarray(x))
    finally:
        runner.close()
    return points, {"x": x, **{f"point:{m}": v for m, v in values.items()}}


def _device_divergence(bundle: Path, meta: dict, work: Path, engine: dict, final: np.ndarray, threads,
                       progress: Progress) -> dict:
    """device-check ``--explain``: the points of the bundle marked on the engine (a second, marked
    engine built beside the first) or, without one, on the precision-ready ONNX on onnxruntime, run on
    the golden inputs the points were kept for; per-point figures against the FP32 reference, the
    added error as the jump from the previous point (no cut graph on the device), and how far marking
    moved the final output (``final``: the unmarked run's first output on the same inputs)."""
    from ..diagnose.compare import PointStats, with_jumps, worst

    points = meta.get("points")
    if not points or not (bundle / POINTS).exists():
        return {"error": "this bundle carries no points: make it from a run that explained the target "
                         "(xcit-export ... --explain, then xcit-export bundle)"}
    with np.load(bundle / POINTS) as data:
        ref = {k: data[k] for k in data.files}
    x = ref.pop("x")
    if engine.get("status") in ("built", "reused"):
        values, final_marked, ran_on = _marked_engine(bundle, meta, work, points, x, threads, progress)
    else:
        from ..diagnose.locate import Location

        try:
            from ..diagnose.mark import MarkedOnnxRunner  # host side (onnx); not in device_check.pyz
        except ImportError:
            return {"error": "no engine here, and the onnxruntime stand-in's marked graph needs xcit-export itself "
                             "(xcit-export device-check --explain) rather than device_check.pyz"}
        runner = MarkedOnnxRunner(bundle / meta["onnx"], {p["module"]: Location(p["module"], p["tensors"])
                                                           for p in points}, threads)
        try:
            outs, values = runner.infer(np.ascontiguousarray(x))
        finally:
            runner.close()
        final_marked, ran_on = outs[0], "onnxruntime CPU on the precision-ready ONNX (no engine here)"
    rows = []
    for p in points:
        if p["module"] not in values:
            continue
        stats = PointStats()
        stats.add(values[p["module"]], ref[f"point:{p['module']}"])
        rows.append({"module": p["module"], "tensor": p["tensors"][0], **stats.to_dict()})
    rows = with_jumps(rows)
    from ..diagnose.locate import relative_error

    return {"images": int(len(x)), "ran_on": ran_on, "added_method": "jump", "points": rows, "worst": worst(rows),
            "missing": [p["module"] for p in points if p["module"] not in values],
            "marking_effect": float(relative_error(final_marked, final[:len(x)])),
            "reference": "the FP32 ONNX at each point (equal to PyTorch there: that is how the points were found)"}


def _marked_engine(bundle: Path, meta: dict, work: Path, points: list, x: np.ndarray, threads, progress: Progress):
    """Build (or reuse) the marked engine beside the deployed one and run ``x``: ``({module: value},
    final output, what ran)``. UNVERIFIED ON HARDWARE (targets/tensorrt/engine.mark_points)."""
    from ..targets.tensorrt import device as trtdev
    from ..targets.tensorrt import engine as trteng
    from ..targets.tensorrt.runner import EngineRunner

    library = meta["library"]
    trt, gpu, _ = trtdev.engine_status(library)
    tag = f"{library}-{trtdev.library_version(trt)}-{gpu['name']}-cc{gpu['compute_capability']}-marked"
    engine_path = work / tag.replace(" ", "_").replace("/", "_") / trteng.ENGINE_FILE
    meta_path = engine_path.parent / trteng.ENGINE_META
    wanted = {**wanted_engine(bundle / meta["onnx"], meta), "points": {p["module"]: p["tensors"][0] for p in points}}
    if not engine_reusable(engine_path, meta_path, {k: v for k, v in wanted.items() if k != "points"}):
        progress(f"device-check: building the marked engine ({len(points)} points as extra outputs)")
        engine_path.parent.mkdir(parents=True, exist_ok=True)
        trteng.build_engine(bundle / meta["onnx"], engine_path, library, meta["precision"], meta["profile"],
                            tuple(meta["input_shape"]), workspace_mb=wanted["workspace_mb"],
                            compute_capability="current" if library == "tensorrt_rtx" else None,
                            points=[(p["module"], p["tensors"]) for p in points])
    emeta = json.loads(meta_path.read_text())
    runner = EngineRunner(engine_path, library, threads=threads, output_names=emeta["output_names"])
    try:
        outs = dict(zip(emeta["output_names"], runner.infer(np.ascontiguousarray(x))))
    finally:
        runner.close()
    values = {m: outs[name] for m, name in (emeta.get("points") or {}).items() if name in outs}
    return values, outs[meta["output_names"][0]], f"the {library} engine with the points marked (a second engine)"


def _golden_of(folder: Path, meta: dict, golden_count: int | None) -> dict:
    """The target's golden arrays (its first ``golden_count`` inputs), checked present and in range."""
    for path in (folder / meta["onnx"], folder / meta["golden"]):
        if not path.exists():
            raise ArtifactError(f"'{path}' is missing from the target folder; rebuild the target with --rebuild")
    with np.load(folder / meta["golden"]) as data:
        golden = {k: data[k] for k in data.files}
    count = len(golden["x"])
    if golden_count is not None:
        if golden_count < 1 or golden_count > count:
            raise XcitExportError(f"--golden-count {golden_count} is outside 1..{count} (the target kept {count} "
                                  f"golden inputs; rebuild it with -O golden_count=N for more)")
        golden = {k: v[:golden_count] for k, v in golden.items()}
    return golden


def _bundle_meta(artifact, folder: Path, golden: dict, onnx_check: dict, sized: dict, workspace: int,
                 onnx_path: Path) -> dict:
    """bundle.json: what device-check reads about the engine to build, its inputs and its golden data."""
    from ..fingerprint import library_versions
    from ..targets.tensorrt import onnx_io_names
    from ..targets.tensorrt.layer_profile import onnx_node_types

    meta = artifact.metadata
    precision, batch, profile = meta["precision"], meta.get("batch", "dynamic"), meta["profile"]
    input_shape = list(meta["input_shape"])
    input_name, output_names = onnx_io_names(onnx_path)
    return {
        "format": FORMAT, "model": meta.get("model"), "target": artifact.target, "library": meta["library"],
        "precision": precision, "onnx": meta["onnx"], "input_name": input_name, "output_names": output_names,
        "input_shape": input_shape, "batch": batch, "profile": profile, "workspace_mb": workspace,
        "golden": {"file": GOLDEN, "count": int(len(golden["x"])), "source": onnx_check["source"],
                   "labelled": "labels" in golden},
        "host_onnx_check": onnx_check,
        # --dynamic-size: golden inputs at every other size of the profile, each with its own thresholds
        "golden_sizes": {label: {"file": info["file"], "count": info["count"], "host_onnx_check": info["check"]}
                         for label, info in sized.items()},
        # TensorRT names engine layers after ONNX nodes; device-check types the layer profile by them
        # (targets/tensorrt/layer_profile.py) on a device that has no onnx package to read the ONNX.
        "onnx_node_types": onnx_node_types(onnx_path),
        "precision_conversion": meta.get("precision_conversion"),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "created_with": {"xcit-export": __version__, **library_versions()},
        "source_artifact": str(folder.resolve()),
    }


def _bundle_thresholds(precision: str, onnx_check: dict, overrides: dict | None) -> dict:
    """thresholds.json: :func:`default_thresholds` with ``xcit-export bundle``'s overrides
    (``min_cosine``, ``min_top1_agreement``, ``max_rel_error``... or the older ``cosine_min``,
    ``top1_agreement``; ``max_latency_ms`` as the median latency budget)."""
    out = default_thresholds(precision, onnx_check)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    limits = device_limits(given, precision)
    out.update({k: v for k, v in limits.thresholds.items() if k in limits.required})
    if limits.latency_budget:
        out["latency_budget"] = dict(limits.latency_budget)
    return out


def _sized_golden(folder: Path, meta: dict, precision: str, thresholds: dict | None,
                  golden_count: int | None) -> dict:
    """The target's per-size golden data (``golden_<H>x<W>.npz``, a --dynamic-size build): arrays,
    the host's ONNX-level check and the thresholds at each size (from that check, as at the export size)."""
    out = {}
    for label, info in (meta.get("golden_sizes") or {}).items():
        path = folder / info["file"]
        if not path.exists():
            raise ArtifactError(f"'{path}' is missing from the target folder; rebuild the target with --rebuild")
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        if golden_count is not None:
            arrays = {k: v[:golden_count] for k, v in arrays.items()}
        check = compare_outputs(arrays["onnx_output"], arrays["reference"])
        check["source"] = info.get("source", "unknown")
        limits = _bundle_thresholds(precision, check, thresholds)
        limits.pop("latency_budget", None)  # latency is timed at the export size only
        out[label] = {"file": info["file"], "count": int(len(arrays["x"])), "arrays": arrays, "check": check,
                      "thresholds": limits}
    return out


# --------------------------------------------------------------------------------------------
# Verifying a bundle
# --------------------------------------------------------------------------------------------

def _extract(tar_path: Path, dest: Path) -> Path:
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                target = (dest / m.name).resolve()
                if not str(target).startswith(str(dest.resolve()) + os.sep) or not (m.isfile() or m.isdir()):
                    raise ArtifactError(f"'{tar_path}' holds an unsafe entry '{m.name}'; refusing to extract it")
            tar.extractall(dest)  # entries checked above: plain files and folders inside dest only
    except (EOFError, tarfile.ReadError, zlib.error) as exc:
        # A cut gzip stream raises EOFError (which click would print as a bare "Aborted!").
        raise ArtifactError(f"bundle tarball '{tar_path}' is incomplete or truncated ({type(exc).__name__}: "
                            f"{exc or 'unexpected end of data'}); nothing was run: copy it again, whole") from None
    tops = {Path(m.name).parts[0] for m in members if m.name}
    if len(tops) != 1:
        raise ArtifactError(f"'{tar_path}' is not a bundle tarball (expected one top-level folder)")
    return dest / tops.pop()


def verify_bundle(bundle: Path) -> dict:
    """Check every file against ``manifest.json``; return ``bundle.json``. Raises ArtifactError."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise ArtifactError(f"bundle '{bundle}' is not a folder (give the bundle folder or its .tar.gz)")
    manifest_path = bundle / MANIFEST
    if not manifest_path.exists():
        raise ArtifactError(f"'{bundle}' has no {MANIFEST}: it is not a bundle, or it is incomplete; re-create it "
                            f"with xcit-export bundle")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(f"{manifest_path} is not a valid manifest; re-create the bundle") from None
    odd = [name for name in files if Path(name).name != name or name.startswith(".")]
    if odd:
        raise ArtifactError(f"{manifest_path} lists paths outside the bundle ({', '.join(odd)}); refusing it")
    for required in (BUNDLE_META, GOLDEN, THRESHOLDS):
        if required not in files:
            raise ArtifactError(f"{manifest_path} does not list {required}; the bundle is incomplete: re-create it")
    missing = [name for name in files if not (bundle / name).is_file()]
    if missing:
        raise ArtifactError(f"bundle '{bundle}' is missing {', '.join(missing)} listed in its manifest; nothing was "
                            f"run: copy the whole bundle again (or its .tar.gz) or re-create it with xcit-export bundle")
    for name, entry in files.items():
        got = sha256_file(bundle / name)
        if got != entry.get("sha256"):
            raise ArtifactError(f"bundle file '{bundle / name}' does not match its manifest (sha256 {got[:12]}..., "
                                f"expected {str(entry.get('sha256'))[:12]}...): it was changed after the bundle was made; "
                                f"nothing was run: re-create the bundle with xcit-export bundle")
    meta = json.loads((bundle / BUNDLE_META).read_text())
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"bundle '{bundle}' has format {meta.get('format')}; this xcit-export reads format "
                            f"{FORMAT}: use the version that made it")
    unlisted = [g["file"] for g in (meta.get("golden_sizes") or {}).values() if g.get("file") not in files]
    if unlisted:
        raise ArtifactError(f"{manifest_path} does not list {', '.join(unlisted)}; re-create the bundle")
    if meta.get("onnx") not in files:
        raise ArtifactError(f"{manifest_path} does not list the ONNX '{meta.get('onnx')}'; re-create the bundle")
    return meta


# --------------------------------------------------------------------------------------------
# device-check
# --------------------------------------------------------------------------------------------

def engine_reusable(engine_path: Path, meta_path: Path, wanted: dict) -> bool:
    """True when ``engine_path`` was built with exactly ``wanted`` (ONNX hash, precision, profile,
    workspace: the keys of ``engine.json``) and still matches its recorded hash."""
    if not (engine_path.exists() and meta_path.exists()):
        return False
    try:
        emeta = json.loads(meta_path.read_text())
    except ValueError:
        return False
    return all(emeta.get(k) == v for k, v in wanted.items()) and emeta.get("engine_sha256") == sha256_file(engine_path)


def wanted_engine(onnx_path: Path, meta: dict) -> dict:
    """What ``engine.json`` must record for device-check to reuse an engine for this bundle.

    An engine is reused only when it was built from this ONNX with these settings: a bundle re-made
    with another profile (or precision, workspace) needs a new engine, and so does one built before
    engines carried detailed layer information (``profiling_verbosity``, for the layer profile).
    """
    from ..targets.tensorrt import engine as trteng

    return {"onnx_sha256": sha256_file(onnx_path), "precision": meta["precision"],
            "profile": trteng.profile_record(meta["input_name"], meta["profile"], meta["input_shape"]),
            "workspace_mb": int(meta.get("workspace_mb", 1024)),
            "profiling_verbosity": trteng.PROFILING_VERBOSITY.lower()}


def _engine_runner(bundle: Path, meta: dict, work: Path, require_engine: bool, threads: int | None,
                   cuda_graph: bool, progress: Progress) -> tuple[Any, dict]:
    """The engine runner (building the engine into ``work`` if needed), or the onnxruntime stand-in."""
    from ..targets.tensorrt import device as trtdev
    from ..targets.tensorrt import engine as trteng

    library = meta["library"]
    onnx_path = bundle / meta["onnx"]
    trt, gpu, why = trtdev.engine_status(library)
    if why is None:
        from ..targets.tensorrt.runner import EngineRunner

        version = trtdev.library_version(trt)
        tag = f"{library}-{version}-{gpu['name']}-cc{gpu['compute_capability']}".replace(" ", "_").replace("/", "_")
        engine_path = work / tag / trteng.ENGINE_FILE
        meta_path = engine_path.parent / trteng.ENGINE_META
        wanted = wanted_engine(onnx_path, meta)
        if engine_reusable(engine_path, meta_path, wanted):
            progress(f"device-check: reusing engine {engine_path}")
            status = "reused"
        else:
            progress(f"device-check: building the engine with {library} {version} on {gpu['name']}")
            engine_path.parent.mkdir(parents=True, exist_ok=True)
            # TensorRT-RTX's default set of compute capabilities starts at Ampere; on the device,
            # build for the GPU that is here ('current'), which also covers Turing (sm_75).
            trteng.build_engine(onnx_path, engine_path, library, meta["precision"], meta["profile"],
                                tuple(meta["input_shape"]), workspace_mb=wanted["workspace_mb"],
                                compute_capability="current" if library == "tensorrt_rtx" else None,
                                timing_cache=engine_path.parent / "timing.cache" if library == "tensorrt" else None)
            status = "built"
        emeta = json.loads(meta_path.read_text())
        trteng.check_engine_metadata(emeta, trt, gpu, engine_path)
        runner = EngineRunner(engine_path, library, threads=threads, cuda_graph=cuda_graph,
                              output_names=meta.get("output_names"))
        return runner, {"status": status, "path": str(engine_path), **{k: emeta.get(k) for k in (
            "library", "version", "built_for", "typing", "build_seconds")}}
    if require_engine:
        raise BackendUnavailableError(
            f"device-check was asked for an engine (--require-engine) but {why}; on a Jetson, TensorRT comes with "
            f"JetPack (python3-libnvinfer) and the runner needs the {trtdev.CUDA_PYTHON_HINT}")
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        raise BackendUnavailableError(
            f"the bundle matches its manifest, but nothing here can run it ({why}, and onnxruntime is not installed "
            f"for the CPU stand-in): install TensorRT's Python bindings (JetPack: sudo apt install python3-libnvinfer) "
            f"and the {trtdev.CUDA_PYTHON_HINT}, or pip install onnxruntime on a host")
    from ..targets.tensorrt import CpuStandInRunner

    runner = CpuStandInRunner(onnx_path, threads, why)
    return runner, {"status": "not built", "reason": why,
                    "note": f"no engine built: {why}; the golden inputs ran on onnxruntime CPU over the "
                            f"precision-ready ONNX, so accuracy is the ONNX's and latency is not the engine's"}


def _run_batches(runner, x: np.ndarray, batch) -> list:
    """Every output of ``runner`` over ``x`` (a static batch padded, then cut), in the engine's order."""
    step = batch if isinstance(batch, int) else 16
    outs = []
    for i in range(0, len(x), step):
        chunk = x[i:i + step]
        n = len(chunk)
        if isinstance(batch, int) and n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        outs.append([np.asarray(o)[:n] for o in runner.infer(np.ascontiguousarray(chunk))])
    return [np.concatenate(parts) for parts in zip(*outs)]


def _golden_outputs(golden: dict, key: str) -> list:
    from ..targets.tensorrt.precision_onnx import golden_outputs

    return golden_outputs(golden, key)


def _golden_entry(runner, golden: dict, meta: dict, progress: Progress, what: str = "") -> tuple:
    """Run the golden inputs and compare EVERY output with its FP32 reference: the report entry the
    one verdict (verdict.judge) reads. Returns ``(entry, outputs compared, agreement with the host's
    precision ONNX)``."""
    names = list(meta.get("output_names") or ["output"])
    references = _golden_outputs(golden, "reference")
    progress(f"device-check: running {len(golden['x'])} golden inputs{what} on {runner.device}")
    outputs = _run_batches(runner, golden["x"], meta.get("batch"))
    entry: dict = {"target": meta.get("target"), "precision": meta.get("precision"), "device": runner.device,
                   "status": "ok" if runner.measures_latency else "built"}
    wrong = returned_outputs_problem(len(outputs), names)
    if wrong:
        entry.update(status="failed", error=wrong)
        return entry, names, {}
    compared = names[:len(references)]  # a bundle written for one output holds the first output's reference only
    per_output = {name: compare_outputs(o, r) for name, o, r in zip(compared, outputs, references)}
    first = per_output[compared[0]]
    if "labels" in golden and outputs[0].ndim == 2:
        first["top1"] = float((outputs[0].argmax(1) == golden["labels"]).mean())
        first["reference_top1"] = float((references[0].argmax(1) == golden["labels"]).mean())
        first["labelled_count"] = int(len(golden["labels"]))
    record_outputs(entry, per_output)
    return entry, compared, compare_outputs(outputs[0], golden["onnx_output"])


class _Borrowed:
    """The open runner lent to the scenario pass, which must not close it."""

    def __init__(self, runner):
        self.infer = runner.infer

    def close(self) -> None:
        pass


def _scenarios(runner, meta: dict, x: np.ndarray, options, latency: dict, progress: Progress) -> dict:
    """``--scenario`` on the device (evaluate/scenarios.py): the engine's single-stream, multi-stream
    and offline figures, several execution contexts on their own CUDA streams with CUDA graphs
    (targets/tensorrt/pool.py), power from tegrastats or the INA3221 rails around each. UNVERIFIED ON
    HARDWARE. The onnxruntime stand-in is not timed: its figures would not be the engine's."""
    from .energy import source
    from .sensors import snapshot
    from ..evaluate.scenarios import run_target

    if not hasattr(runner, "layer_profile"):  # the CPU stand-in
        return {"note": "no scenarios: no engine ran here (the onnxruntime stand-in's timings are not the engine's)"}
    from ..targets.tensorrt.pool import EnginePool

    lo, hi = runner.min_batch, runner.max_batch
    batches = sorted({b for b in (1, 8, int(meta["profile"]["opt"]), hi) if lo <= b <= hi})
    meter, why = source()

    def pool(xb, streams):
        return EnginePool(runner.engine_path, meta["library"], xb, streams=streams or 2, cuda_graph=True,
                          output_names=meta.get("output_names"))

    return run_target(options, lambda: _Borrowed(runner), pool, x, batches, 4, latency=latency, meter=meter,
                      snapshot=snapshot, progress=progress, label="device-check", energy_note=why)


def device_check(bundle: Path, *, work_dir: Path | None = None, report_path: Path | None = None,
                 require_engine: bool = False, threads: int | None = None, warmup: int = 10,
                 iterations: int = 50, cuda_graph: bool = False, profile: bool = True, explain: bool = False,
                 scenarios=None, progress: Progress = lambda m: None) -> dict:
    """Verify, build if possible, run the golden inputs, compare, time; write and return the report.

    Every size's golden inputs are judged by the one verdict (:func:`_judge_golden`). ``profile``:
    after the latency figures, a separate pass with TensorRT's layer profiler (:func:`_layer_profile`).
    ``scenarios`` (a :class:`~xcit_export.evaluate.scenarios.ScenarioOptions`): the engine's scenarios
    after the latency figures (:func:`_scenarios`), the device's clocks and temperatures recorded
    before and after the whole check. ``report["passed"]`` is False when a check fails; errors in the
    bundle raise ArtifactError; a profiler failure is recorded, never fails the check.

    ``explain``: per-point figures of the engine (:func:`_device_divergence`, the report's ``divergence``),
    for a bundle made from a run that explained the target.
    """
    with _unpacked(Path(bundle), work_dir, progress) as (bundle, source, work_dir):
        progress("device-check: verifying the manifest")
        meta = verify_bundle(bundle)
        work = Path(work_dir) if work_dir else bundle / WORK_DIR
        work.mkdir(parents=True, exist_ok=True)
        thresholds = json.loads((bundle / THRESHOLDS).read_text())
        with np.load(bundle / GOLDEN) as data:
            golden = {k: data[k] for k in data.files}
        from .sensors import snapshot

        conditions = {"before": snapshot()}
        runner, engine = _engine_runner(bundle, meta, work, require_engine, threads, cuda_graph, progress)
        try:
            t0 = time.perf_counter()
            entry, compared, vs_host = _golden_entry(runner, golden, meta, progress)
            run_seconds = time.perf_counter() - t0
            lat, latency = _device_latency(runner, golden, meta, warmup, iterations, cuda_graph, progress)
            if runner.measures_latency:
                entry["latency"] = lat.to_dict()
            # the one verdict; the latency budget is the engine's (skipped on the stand-in)
            verdict = judge(entry, device_limits(thresholds, meta["precision"]), outputs=compared)
            per_size = _check_sizes(runner, bundle, meta, thresholds, progress)
            checks = verdict.checks + [Check(**{**c, "metric": f"{c['metric']} @ {label}"})
                                       for label, result in per_size.items() for c in result["checks"]]
            status = verdict.status if all(r["status"] != "failed" for r in per_size.values()) else "failed"
            device = runner.device
            scenario_figures = (_scenarios(runner, meta, _latency_inputs(golden, meta), scenarios, lat.to_dict(),
                                           progress) if scenarios is not None and scenarios.active else None)
            prof = _layer_profile(runner, _latency_inputs(golden, meta), meta, progress) if profile else {}
            # --explain: the deployed engine's output, to say how far marking the points moved it
            final = _run_batches(runner, golden["x"], meta.get("batch"))[0] if explain else None
        finally:
            runner.close()
        divergence = _device_divergence(bundle, meta, work, engine, final, threads, progress) if explain else None
        passed = verdict.passed and all(r["passed"] for r in per_size.values())
        entry.update(status=status, checks=[c.to_dict() for c in checks], passed=passed,
                     limits=verdict.limits.to_dict() if verdict.limits else None, note=engine.get("note"),
                     latency=entry.get("latency") or {}, **prof)
        if verdict.error:
            entry["error"] = verdict.error
        if scenario_figures is not None:
            entry["scenarios"] = scenario_figures
        report = _device_report(meta, golden, source, entry, engine, device, checks, per_size, thresholds,
                                passed=passed, run_seconds=run_seconds, vs_host=vs_host, latency=latency)
        if divergence is not None:
            report["divergence"] = report["targets"][0]["divergence"] = divergence
        report["conditions"] = {**conditions, "after": snapshot()}
        report_path = Path(report_path) if report_path else work / REPORT
        write_json_atomic(report_path, report)
        report["report_path"] = str(report_path)
        return report


@contextlib.contextmanager
def _unpacked(bundle: Path, work_dir: Path | None, progress: Progress):
    """``(folder, what was given, work_dir)``: a bundle folder as it is, or a ``.tar.gz`` extracted
    into a temporary folder (removed afterwards) with its work folder beside the tarball."""
    if not (bundle.is_file() and bundle.name.endswith((".tar.gz", ".tgz", ".tar"))):
        yield bundle, bundle, work_dir
        return
    with tempfile.TemporaryDirectory(prefix="xcit-bundle-") as tmp:
        progress(f"device-check: extracting {bundle}")
        folder = _extract(bundle, Path(tmp))
        yield folder, bundle, work_dir or bundle.parent / f"{folder.name}.{WORK_DIR}"


def _device_report(meta: dict, golden: dict, source: Path, entry: dict, engine: dict, device: str, checks: list,
                   per_size: dict, thresholds: dict, *, passed: bool, run_seconds: float, vs_host: Any,
                   latency: dict) -> dict:
    """device-check's report.json (``source``: the bundle folder or tarball that was checked)."""
    from ..fingerprint import device_fingerprint

    return {
        # schema_version/tool/model/device/targets: what `xcit-export report merge` and `gate` read, so
        # the device's report merges with (and gates against) the host's report.json of the same model.
        "schema_version": REPORT_SCHEMA_VERSION, "kind": "device-check",
        "tool": {"name": "xcit-export", "version": __version__},
        "passed": passed,
        "bundle": str(source),
        "model": _model_record(meta, golden), "target": meta.get("target"), "precision": meta.get("precision"),
        "output_names": list(meta.get("output_names") or []),
        "library": meta.get("library"), "runner": device, "engine": engine,
        "device": device_fingerprint(),
        "evaluation": {"description": f"{len(golden['x'])} golden inputs of the bundle "
                                      f"({(meta.get('golden') or {}).get('source', 'unknown source')})",
                       "count": int(len(golden["x"])), "labelled": "labels" in golden},
        "targets": [entry],
        "note": engine.get("note"),
        "golden_count": int(len(golden["x"])), "run_seconds": round(run_seconds, 3),
        "sizes": per_size,
        "accuracy_vs_fp32_reference": entry.get("accuracy"), "agreement_with_host_onnx": vs_host,
        "thresholds": thresholds, "checks": [c.to_dict() for c in checks], "latency": latency,
        "host_onnx_check": meta.get("host_onnx_check"),
        "checked_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _latency_inputs(golden: dict, meta: dict) -> np.ndarray:
    lat_batch = meta["batch"] if isinstance(meta.get("batch"), int) else int(meta["profile"]["opt"])
    return np.ascontiguousarray(np.resize(golden["x"], (lat_batch, *golden["x"].shape[1:])))


def _device_latency(runner, golden: dict, meta: dict, warmup: int, iterations: int, cuda_graph: bool,
                    progress: Progress) -> tuple:
    """The engine's end-to-end latency (and GPU compute time where the runner has it) on the golden inputs."""
    from ..evaluate.validate import LatencyOptions, measure_latency

    x_lat = _latency_inputs(golden, meta)
    progress(f"device-check: timing batch {len(x_lat)}")
    lat = measure_latency(runner.infer, x_lat, LatencyOptions(warmup=warmup, iterations=iterations))
    latency: dict[str, Any] = {"end_to_end": lat.to_dict(),
                               "what": ("engine, host-to-host (copies included)" if runner.measures_latency
                                        else "onnxruntime CPU stand-in: NOT the engine's latency")}
    if hasattr(runner, "gpu_latency_ms"):
        gpu_ms = np.array(runner.gpu_latency_ms(x_lat, warmup=warmup, iterations=max(iterations, 20)))
        latency["gpu_compute"] = {"median_ms": float(np.median(gpu_ms)), "p99_ms": float(np.percentile(gpu_ms, 99)),
                                  "min_ms": float(gpu_ms.min()), "iterations": int(len(gpu_ms)),
                                  "cuda_graph": bool(cuda_graph)}
    return lat, latency


def _check_sizes(runner, bundle: Path, meta: dict, thresholds: dict, progress: Progress) -> dict:
    """The golden inputs at every other size of a --dynamic-size bundle, judged as at the export size
    (the output rule first, every output) against that size's thresholds."""
    out = {}
    for label, info in (meta.get("golden_sizes") or {}).items():
        with np.load(bundle / info["file"]) as data:
            golden = {k: data[k] for k in data.files}
        sized = dict((thresholds.get("per_size") or {}).get(label) or thresholds)
        sized.pop("latency_budget", None)
        sized.pop("max_latency_ms", None)
        entry, compared, vs_host = _golden_entry(runner, golden, meta, progress, f" at {label}")
        verdict = judge(entry, device_limits(sized, meta["precision"]), outputs=compared)
        out[label] = {"status": verdict.status, "passed": verdict.passed, "accuracy": entry.get("accuracy"),
                      "checks": [c.to_dict() for c in verdict.checks], "agreement_with_host_onnx": vs_host}
        if entry.get("outputs"):
            out[label]["outputs"] = entry["outputs"]
        if verdict.error:
            out[label]["error"] = verdict.error
    return out


def _layer_profile(runner, x: np.ndarray, meta: dict, progress: Progress) -> dict:
    """``op_profile`` (or ``op_profile_error``, or why there is none) for the report's target entry.

    Runs after every latency figure is taken, as the host pipeline's profile pass does, so the
    profiler's overhead never reaches them. A failure costs the breakdown, never the check.
    """
    if not hasattr(runner, "layer_profile"):
        return {"op_profile_note": "no layer profile: the onnxruntime CPU stand-in ran the ONNX, not the engine, "
                                   "so its operators say nothing about where the engine's time goes"}
    progress("device-check: layer profile (TensorRT IProfiler, separate pass)")
    try:
        return {"op_profile": runner.layer_profile(x, node_types=meta.get("onnx_node_types"))}
    except Exception as exc:  # a profiler failure costs the breakdown, never the check
        return {"op_profile_error": profile_error(exc)}


def _model_record(meta: dict, golden: dict) -> dict:
    """The host report's ``model`` keys that ``report merge`` matches: name, classes, input (H, W)."""
    shape = list(meta.get("input_shape") or [])
    size = shape[1:3] if shape[:1] == [3] else shape[:2]  # nchw, or nhwc formats
    reference = golden["reference"]
    classes = int(reference.shape[1]) if meta.get("output_names") == ["logits"] and reference.ndim == 2 else None
    return {"name": meta.get("model"), "num_classes": classes, "input_size": size}


def summary_lines(report: dict) -> list[str]:
    """A few human lines for the CLI."""
    lines = [f"{report['model']['name']} / {report['target']} on {report['runner']}"]
    if report.get("note"):
        lines.append(f"note: {report['note']}")
    for c in report["checks"]:
        mark = "skip" if str(c["why"]).startswith("skipped") else "ok  " if c["ok"] else "FAIL"
        value = f"{c['value']:.6g}" if isinstance(c["value"], float) else c["value"]
        detail = "" if c["ok"] or c["why"] in ("above maximum", "below minimum") else f": {c['why']}"
        lines.append(f"  {mark} {c['metric']}: {value} (limit {c['limit']}){detail}")
    e2e = report["latency"]["end_to_end"]
    lines.append(f"  latency: median {e2e['median_ms']:.3f} ms at batch {e2e['batch']} ({report['latency']['what']})")
    if "gpu_compute" in report["latency"]:
        lines.append(f"  GPU compute: median {report['latency']['gpu_compute']['median_ms']:.3f} ms")
    entry = report["targets"][0]
    prof = entry.get("op_profile")
    if prof:
        top = ", ".join(f"{o['op_type']} {o['share']:.0%}" for o in prof["ops"][:3])
        lines.append(f"  layer profile: {prof['total_ms']:.3f} ms profiled at batch {prof['batch']}: {top}")
    elif entry.get("op_profile_error"):
        lines.append(f"  layer profile failed: {entry['op_profile_error']}")
    div = report.get("divergence")
    if div:
        worst = div.get("worst") or {}
        lines.append(f"  explain: {div['error']}" if div.get("error") else
                     f"  explain ({len(div['points'])} points, {div['ran_on']}): {worst.get('module')} "
                     f"{worst.get('reason', '')}")
    lines += _scenario_lines(entry.get("scenarios"))
    if entry.get("status") == "built" and report["passed"]:
        lines.append("BUILT, NOT RUN: no engine ran here (the precision-ready ONNX on onnxruntime stood in); the "
                     f"checks above are the ONNX's; run this on the device; report: {report['report_path']}")
    else:
        lines.append(("PASSED" if report["passed"] else "FAILED") + f"; report: {report['report_path']}")
    return lines


def _scenario_lines(sc: dict | None) -> list:
    """The scenarios' figures in a few summary lines (report/scenarios.py draws the host's tables)."""
    if not sc:
        return []
    if sc.get("note"):
        return [f"  scenarios: {sc['note']}"]
    out = []
    for key, what in (("single_stream", "single-stream"), ("multi_stream", "multi-stream"), ("offline", "offline")):
        r = sc.get(key)
        if r is None:
            continue
        if r.get("error"):
            out.append(f"  {what}: error: {r['error']}")
            continue
        if key == "offline":
            text = f"{r['images_per_s']:,.1f} images/s at batch {r['batch']}, {r['streams']} in flight"
        else:
            text = f"p50 {r.get('p50_ms')} ms, p99 {r.get('p99_ms')} ms" + (
                f" ({r['streams']} streams)" if key == "multi_stream" else "")
        energy = r.get("energy") or {}
        if energy.get("available"):
            text += f"; {energy.get('average_mw')} mW ({energy.get('total_is')}), {energy.get('mj_per_image')} mJ/image"
        if r.get("stability"):
            text += f"; {r['stability']['verdict']}: {r['stability']['reason']}"
        out.append(f"  {what}: {text}")
    if (sc.get("energy") or {}).get("reason"):
        out.append(f"  {sc['energy']['reason']}")
    return out


__all__ = ["create_bundle", "default_thresholds", "device_check", "resolve_artifact_dir", "summary_lines",
           "verify_bundle"]

