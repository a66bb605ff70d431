"""Stage: each target's artifact, built from the checked ONNX (or reused when its build key is unchanged).

A target that cannot be built (its library missing, a build error) fails its cells, not the run:
the failure is recorded in its entry and the other targets go on. ``--target auto`` also builds
every candidate from a static batch-1 export (``<out>/batch1/``, entries ``<target>@batch1``).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import keys as keys_mod
from ..errors import BackendUnavailableError, XcitExportError
from ..evaluate.validate import evaluation_batch
from ..io import atomic_dir
from ..plan import RunPlan
from ..targets import Artifact, BuildContext, get_target
from ..targets.base import ARTIFACT_META
from .prepare import PreparedModel, SizeSource, prepare_onnx
from .store import file_hashes, reusable

Progress = Callable[[str], None]


@dataclass
class Built:
    """One target (or ``--target auto``'s batch-1 variant) between its build and its report entry."""

    name: str  # the entry's name: "<target>" or "<target>@batch1"
    target: Any  # targets.base.Target
    plan: RunPlan  # the plan it was built under (a batch-1 variant's: batch 1, in <out>/batch1)
    entry: dict  # target, backend, precision; reused and artifact, or status "failed" and the error
    artifact: Artifact | None = None  # None: the build failed (entry says why)
    batch1: bool = False
    progress: Progress = field(default=lambda msg: None, repr=False)

    @property
    def options(self) -> dict:
        return self.plan.options_of(self.target.name)

    @property
    def runner_batch(self) -> int:
        """The batch the evaluation feeds its runner: a static export's, else :data:`~xcit_export.evaluate.validate.EVAL_BATCH`."""
        return evaluation_batch(self.plan.options.batch)


def fail(entry: dict, exc: BaseException) -> None:
    """Record ``exc`` as the entry's failure (a bug or a backend crash keeps its traceback)."""
    entry["status"] = "failed"
    if isinstance(exc, XcitExportError):
        entry["error"] = str(exc)
    else:
        entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["traceback"] = traceback.format_exc(limit=8)


def build_all(prepared: PreparedModel, progress: Progress) -> list[Built]:
    """Every target of the plan, then (``--target auto``, unless the export batch is 1 already) each
    again from a static batch-1 export."""
    plan = prepared.plan
    evaluation = build_evaluation(prepared, prepared.sources[0])
    onnx_key = prepared.onnx_meta["build_key"]
    built = [build_one(get_target(name), plan, prepared, prepared.onnx_path, onnx_key, evaluation, progress)
             for name in plan.targets]
    if plan.auto and plan.options.batch != 1:
        built += _batch1_builds(prepared, evaluation, progress)
    return built


def _batch1_builds(prepared: PreparedModel, evaluation: Callable, progress: Progress) -> list[Built]:
    """``--target auto``: every candidate again from a static batch-1 export, for latency-bound use.

    It lives in ``<out>/batch1/`` (its own ``onnx/`` and target folders, keyed like any other
    build, so reruns reuse it) and its entries are named ``<target>@batch1``.
    """
    from ..console import renamed
    from ..evaluate.auto import BATCH1, variant_name

    plan = prepared.plan
    b1 = plan.replace(batch=1, out=plan.out_dir / BATCH1, latency_batches=())
    progress("auto: static batch-1 variants")
    onnx_path, onnx_meta = prepare_onnx(b1, prepared.inputs, prepared.model, progress)
    out = []
    for name in plan.targets:
        say = renamed(progress, name, variant_name(name, True))
        one = build_one(get_target(name), b1, prepared, onnx_path, onnx_meta["build_key"], evaluation, say,
                        batch1=True)
        one.name = one.entry["target"] = variant_name(name, True)
        out.append(one)
    return out


def build_one(target: Any, plan: RunPlan, prepared: PreparedModel, onnx_path, onnx_key: str, evaluation: Callable,
              progress: Progress, batch1: bool = False) -> Built:
    """Build (or reuse) one target's artifact; a failure is recorded in the entry, not raised."""
    entry: dict[str, Any] = {"target": target.name, "backend": target.backend, "precision": target.precision}
    one = Built(target.name, target, plan, entry, batch1=batch1, progress=progress)
    options = plan.options_of(target.name)
    try:
        missing = target.missing_requirements()
        if missing:
            raise BackendUnavailableError(
                f"target {target.name} needs {', '.join(missing)}, which is not installed; install the "
                f"project's extras (see README) or pick another target")
        artifact, entry["reused"] = build_artifact(
            target, plan, prepared, onnx_path, onnx_key,
            evaluation(target, options, plan.max_top1_drop(target.name)), progress)
        entry["artifact"] = {"path": str(artifact.path), "size_bytes": artifact.size_bytes, **artifact.metadata}
        one.artifact = artifact
    except Exception as exc:  # noqa: BLE001 - recorded in the entry; the other targets go on
        fail(entry, exc)
    entry["export_batch"] = 1 if batch1 else (plan.options.batch or "dynamic")
    return one


def build_artifact(target: Any, plan: RunPlan, prepared: PreparedModel, onnx_path, onnx_key: str, evaluation,
                   progress: Progress) -> tuple[Artifact, bool]:
    """Build ``target`` from the checked ONNX (or reuse the artifact with the same build key).

    Returns the artifact and whether it was reused. ``evaluation`` is ``(x, labels)`` or None (only
    accuracy-controlled quantization and TensorRT's golden inputs read it).
    """
    o, inputs = plan.options, prepared.inputs
    options = plan.options_of(target.name)
    # every input the target's build reads (keys.READS, Target.reads), e.g. the calibration set for
    # tensorrt-fp16's AutoCast and the evaluation set for TensorRT's golden inputs
    key = keys_mod.target_key(target, o, inputs, options, onnx_key, evaluation_given=evaluation is not None)
    folder = plan.out_dir / target.name
    artifact = None if o.rebuild else reusable(folder, key, progress)
    if artifact is not None:
        progress(f"{target.name}: reusing unchanged artifact")
        return artifact, True
    progress(f"{target.name}: building")
    t0 = time.perf_counter()
    with atomic_dir(folder, marker=ARTIFACT_META) as tmp:
        ctx = BuildContext(spec=plan.spec, onnx_path=onnx_path, out_dir=tmp, batch=o.batch,
                           input_shape=prepared.model.input_shape, calibration=prepared.calibration,
                           calibration_id=inputs.calib_id, options=options, threads=plan.threads,
                           evaluation=evaluation, max_top1_drop=plan.max_top1_drop(target.name), seed=o.seed,
                           calibration_labels=inputs.calib_labels, dynamic_size=o.dynamic_size,
                           sizes=tuple(o.eval_sizes))
        made = target.build(ctx)
        made.metadata["build_key"] = key
        made.metadata["file_sha256"] = file_hashes(made.files)
        made.metadata["build_seconds"] = round(time.perf_counter() - t0, 2)
        made.save_metadata()
    return Artifact.from_dir(folder), False


def build_evaluation(prepared: PreparedModel, source: SizeSource) -> Callable:
    """What a build gets as its evaluation set (``BuildContext.evaluation``), per target options.

    Sets given as arrays are passed as they are. A streamed set is read whole only for a build
    that reads every image (sensitivity, ``max_drop``, a recipe's ``max_top1_drop``, without
    ``search_images``); any other build gets its images as :class:`~xcit_export.data.sets.LazyRows`,
    decoded when indexed (TensorRT reads its 16 golden inputs), so the set is never held whole.
    Either way it honours ``--on-bad-image`` as the evaluation pass does.
    """
    from ..data.sets import LazyRows

    images, labelled, fmt = source.images, prepared.labelled(source), prepared.fmt
    cache: dict[str, Any] = {}

    def labels_of():
        if not labelled:
            return None
        return np.asarray([images.labels[i] for i in images._order()], dtype=np.int64)

    def evaluation(target, options: dict, budget) -> tuple:
        if source.in_memory:  # arrays given to the run or seeded inputs: as they are
            if "arrays" not in cache:
                cache["arrays"] = (fmt(np.asarray(images.array)), labels_of())
            return cache["arrays"]
        reads_all = target.needs_evaluation(options, budget) is not None and options.get("search_images") is None
        if reads_all:
            if "all" not in cache:
                x, y = images.load()
                cache["all"] = (fmt(x), y if labelled else None)
            return cache["all"]
        if "lazy" not in cache:
            cache["lazy"] = (LazyRows(images, fmt), labels_of())
        return cache["lazy"]

    return evaluation
