"""Stage: what is made once per model before any target: the image sets, the calibration arrays,
the PyTorch model, the checked FP32 ONNX, and the evaluation inputs at every size.

:func:`open_image_sets` reads and checks the data (before the output folder is locked: nothing is
written); :func:`prepare_model` then builds the model and its ONNX under the lock and returns the
:class:`PreparedModel` every later step (build, evaluate, measure, record) reads.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import export as export_mod
from .. import keys as keys_mod
from ..console import stepper
from ..evaluate.validate import evaluation_batch
from ..io import atomic_dir
from ..options import Inputs
from ..plan import DEFAULT_CALIB_NOTE, RunPlan
from ..targets.base import ARTIFACT_META, Artifact
from .store import file_hashes, reusable

Progress = Callable[[str], None]


@dataclass
class SizeSource:
    """The evaluation inputs at one size: an ImageSet streamed batch by batch (images preprocessed at
    that size, the arrays handed to the run, or seeded inputs), what they are in words, and whether
    they are arrays in memory (builds then get them as they are)."""

    size: tuple[int, int]
    images: Any  # data.sets.ImageSet
    description: str
    in_memory: bool

    @property
    def label(self) -> str:
        return f"{self.size[0]}x{self.size[1]}"


@dataclass
class ImageSets:
    """The calibration set (read into :class:`~xcit_export.options.Inputs`) and the evaluation set
    (opened, not read), with their provenance for the report."""

    info: dict = field(default_factory=dict)
    evaluation: Any = None  # data.sets.ImageSet, or None


@dataclass
class PreparedModel:
    """One model, ready for its targets: built once, read by every cell."""

    plan: RunPlan
    inputs: Inputs
    model: Any  # models.deploy.DeployModel
    onnx_path: Path
    onnx_meta: dict
    calibration: np.ndarray | None  # in the deployed input format
    sources: list[SizeSource]  # the export size first, then every other --eval-sizes size
    data_info: dict

    @property
    def spec(self) -> Any:
        return self.plan.spec

    @property
    def output_names(self) -> list[str]:
        return list(self.model.output_names)

    @property
    def classify(self) -> bool:
        return self.plan.options.output == "logits" and self.spec.num_classes > 0

    def labelled(self, source: SizeSource) -> bool:
        return source.images.labelled and self.plan.options.output == "logits"  # labels need class scores

    @property
    def batch(self) -> int:
        """The evaluation batch: a static export's, else :data:`~xcit_export.evaluate.validate.EVAL_BATCH`."""
        return evaluation_batch(self.plan.options.batch)

    @property
    def latency_batch(self) -> int:
        return self.plan.options.batch or 1

    def fmt(self, x: np.ndarray) -> np.ndarray:
        """``x`` in the deployed input format: the reference and every target see identical values."""
        from ..models.deploy import to_input_format

        return to_input_format(x, self.plan.options.input_format, self.spec.preprocessing)


def open_image_sets(plan: RunPlan, inputs: Inputs, progress: Progress) -> ImageSets:
    """Open ``--calib`` / ``--eval`` with the model's preprocessing.

    Checks what can be checked before any export: the sets exist, are large enough, fit the model's
    classes, and do not overlap. The calibration set (``--calib-size`` images) is read into
    ``inputs.calib_data``; the evaluation set is *not* read: the evaluation streams it batch by batch.
    """
    from ..data import sets as data

    o, spec = plan.options, plan.spec
    sets = ImageSets()
    calib_set = None
    if o.calib is not None:
        calib_set = data.calibration_set(o.calib, spec.preprocessing, o.calib_size, o.seed, o.on_bad_image,
                                         o.class_index)
    if o.eval is not None:
        sets.evaluation = data.evaluation_set(o.eval, spec.preprocessing, o.eval_size, o.seed, o.on_bad_image,
                                              o.class_index, _label_classes(plan))
    if calib_set is not None and sets.evaluation is not None:
        data.check_disjoint(calib_set, sets.evaluation)
    if calib_set is not None:
        progress(f"Data: preprocessing {len(calib_set)} calibration images")
        inputs.calib_data, inputs.calib_labels = calib_set.load(
            on_decoded=stepper(progress, "decoding calibration images"))
        inputs.calib_id = calib_set.content_hash()
        sets.info["calibration"] = {"source": o.calib, "count": int(len(inputs.calib_data)),
                                    "content_hash": inputs.calib_id, "skipped": len(calib_set.skipped),
                                    "warnings": calib_set.warnings}
        if plan.calib_default:
            sets.info["calibration"].update(default=True, note=DEFAULT_CALIB_NOTE)
    if inputs.calib_data is not None and inputs.calib_id is None:
        inputs.calib_id = hashlib.sha256(np.ascontiguousarray(inputs.calib_data).tobytes()).hexdigest()
    if sets.evaluation is not None:
        digest = sets.evaluation.content_hash()
        inputs.eval_id = f"{o.eval} ({digest[:12]})"
        # count, skipped and warnings are final once the evaluation pass has read every image
        sets.info["evaluation_set"] = {"source": o.eval, "count": len(sets.evaluation), "content_hash": digest,
                                       "skipped": 0, "warnings": sets.evaluation.warnings}
    return sets


def _label_classes(plan: RunPlan) -> int | None:
    """The class count labels must fit, when the graph returns class scores."""
    spec = plan.spec
    return spec.num_classes if plan.options.output == "logits" and spec.num_classes else None


def prepare_model(plan: RunPlan, inputs: Inputs, sets: ImageSets, progress: Progress) -> PreparedModel:
    """The PyTorch model (its weights checked), the checked ONNX (or the identical one on disk), the
    calibration set in the deployed format, and the evaluation inputs at every size."""
    from ..evaluate.validate import check_weights
    from ..models.deploy import DeployModel
    from ..models.weights import load_model

    o, spec = plan.options, plan.spec
    progress(f"Model: building {spec.name} ({o.weights} weights)")
    model = DeployModel(load_model(spec, o.weights, o.seed), spec.preprocessing, o.output, o.input_format,
                        seed=o.seed, dynamic_size=o.dynamic_size)
    check_weights(model)  # NaN/inf weights: stop naming the checkpoint, before the export is blamed
    onnx_path, onnx_meta = prepare_onnx(plan, inputs, model, progress)
    prepared = PreparedModel(plan=plan, inputs=inputs, model=model, onnx_path=onnx_path, onnx_meta=onnx_meta,
                             calibration=None, sources=[], data_info=sets.info)
    if inputs.calib_data is not None:
        prepared.calibration = prepared.fmt(inputs.calib_data)
    export_size = tuple(spec.preprocessing.input_size)
    prepared.sources = [evaluation_source(plan, inputs, sets.evaluation, export_size)]
    prepared.sources += [evaluation_source(plan, inputs, None, size) for size in o.eval_sizes if size != export_size]
    return prepared


def evaluation_source(plan: RunPlan, inputs: Inputs, eval_set: Any, size: tuple[int, int]) -> SizeSource:
    """The evaluation inputs at ``size``: the ``--eval`` images (preprocessed at that size: timm's
    rule, resize to size / crop_pct, centre crop), the arrays handed to the run (the export size
    only: the plan refuses them with ``--eval-sizes``), or seeded random inputs of that size."""
    import dataclasses

    from ..data import sets as data

    o, spec = plan.options, plan.spec
    at_export = size == tuple(spec.preprocessing.input_size)
    where = "" if at_export else f" at {size[0]}x{size[1]}"
    pp = dataclasses.replace(spec.preprocessing, input_size=tuple(size))
    if o.eval is not None:
        images = eval_set if at_export and eval_set is not None else data.evaluation_set(
            o.eval, pp, o.eval_size, o.seed, o.on_bad_image, o.class_index, _label_classes(plan))
        return SizeSource(size, images, (inputs.eval_id or o.eval) + where, in_memory=False)
    if inputs.eval_data is not None:
        x, labels = inputs.eval_data
        images = data.ImageSet(source="evaluation data", pp=pp, option="--eval", array=x,
                               labels=None if labels is None else [int(v) for v in labels])
        return SizeSource(size, images, inputs.eval_id or "evaluation set", in_memory=True)
    x = export_mod.seeded_inputs((3, *size), o.eval_count, seed=o.seed + 2)
    return SizeSource(size, data.ImageSet(source="seeded", pp=pp, option="--eval", array=x),
                      f"{o.eval_count} seeded random inputs (seed {o.seed + 2}){where}", in_memory=True)


def prepare_onnx(plan: RunPlan, inputs: Inputs, model: Any, progress: Progress) -> tuple[Path, dict]:
    """Export, check, simplify and parity-check the FP32 ONNX (or reuse an identical one)."""
    o, spec = plan.options, plan.spec
    options = export_mod.ExportOptions(batch=o.batch, opset=o.opset, dynamic_size=o.dynamic_size)
    options.validate()
    key = keys_mod.onnx_key(o, inputs, spec)  # every field the ONNX reads (keys.READS)
    folder = plan.out_dir / "onnx"
    reused = None if o.rebuild else reusable(folder, key, progress)
    if reused is not None:
        progress("ONNX: reusing unchanged export")
        return reused.path, reused.metadata
    with atomic_dir(folder, marker=ARTIFACT_META) as tmp:
        meta = _export(plan, model, options, tmp, progress)
        meta["build_key"] = key
        meta["file_sha256"] = file_hashes([tmp / "model.onnx"])
        Artifact("onnx", tmp / "model.onnx", [tmp / "model.onnx"], meta).save_metadata()
    return folder / "model.onnx", meta


def _export(plan: RunPlan, model: Any, options: Any, tmp: Path, progress: Progress) -> dict:
    """Trace, simplify and parity-check into ``tmp``; the ONNX artifact's metadata."""
    from ..models.deploy import to_input_format

    o, spec = plan.options, plan.spec
    progress("ONNX: exporting with torch.onnx (dynamo)")
    t0 = time.perf_counter()
    raw = export_mod.export_onnx(model, model.input_shape, tmp / "model.raw.onnx", options, model.input_dtype)
    progress("ONNX: simplifying with onnxsim")
    simplified = export_mod.simplify_onnx(raw, tmp / "model.onnx")
    progress("ONNX: parity check against PyTorch")
    h, w = spec.preprocessing.input_size
    x = export_mod.seeded_inputs((3, h, w), options.batch or options.parity_inputs, seed=o.seed + 1)
    x = to_input_format(x, o.input_format, spec.preprocessing)
    worst = export_mod.check_parity(simplified, x, export_mod.torch_reference(model, x))
    if o.dynamic_size:  # also at other sizes: nothing may be baked at the export size
        worst = export_mod.check_parity_at_sizes(simplified, model, spec, o.input_format, options, o.seed, worst)
    meta = {"opset": o.opset, "batch": o.batch or "dynamic", "output": o.output, "output_names": model.output_names,
            "input_format": o.input_format, "input_shape": list(model.input_shape),
            "input_dtype": str(model.input_dtype).replace("torch.", ""), "dynamic_size": o.dynamic_size,
            "export_seconds": round(time.perf_counter() - t0, 2), "parity_max_abs_error": worst,
            "raw_size_bytes": raw.stat().st_size, "size_bytes": simplified.stat().st_size}
    raw.unlink()  # the raw trace is only an intermediate
    return meta
