"""Build keys: what made an artifact, declared in one place.

A rerun reuses an artifact (the FP32 ONNX, each target's folder) when its build key is unchanged,
and skips its checks (the ONNX parity check, a target's build-time checks), so a key must hold
everything the artifact was made from. :data:`RUN_CONFIG_READS` says, for every field of
:class:`xcit_export.pipeline.RunConfig`, which artifacts read it; :data:`READ_BY_NONE` lists, with
the reason, the fields no artifact reads. The keys are derived from these tables
(:func:`onnx_key`, :func:`target_key`), and ``tests/test_keys.py`` changes every field in turn,
checks that every artifact that reads it gets a new key, and fails when a field is in neither
table, so a new ``RunConfig`` field cannot be forgotten.

Readers:

* ``onnx``: the FP32 ONNX (and through it every target: a target's key holds the ONNX key);
* ``calibration``: targets whose build reads the calibration set (``Target.reads``);
* ``evaluation``: targets whose build reads the evaluation set (``Target.reads``: always, e.g.
  TensorRT's golden inputs, or only for the sensitivity / accuracy-budget search);
* ``target``: every target (its own options and its recipe's ``max_top1_drop``).

A target's options are part of its key as a whole (every option a target accepts can change what
it builds, or is cheap to rebuild for); ``Target.key_inputs`` adds what decides the artifact
besides (e.g. the CPU's ISA class).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from .fingerprint import library_versions
from .models.deploy import seeds_parameters
from .models.fuse import FORM_VERSION
from .models.weights import weights_fingerprint

ONNX, CALIBRATION, EVALUATION, TARGET, SIZES = "onnx", "calibration", "evaluation", "target", "sizes"

# Every RunConfig field an artifact reads -> the artifacts that read it.
RUN_CONFIG_READS: dict[str, tuple[str, ...]] = {
    "model": (ONNX,),
    "weights": (ONNX,),  # the name and the file's content (weights_fingerprint)
    # random weights and the features neck are seeded; every subset a build draws is too
    "seed": (ONNX, CALIBRATION, EVALUATION),
    "num_classes": (ONNX,),
    "input_size": (ONNX,),
    "batch": (ONNX,),
    "opset": (ONNX,),
    "output": (ONNX,),
    "input_format": (ONNX,),
    "dynamic_size": (ONNX,),  # symbolic height and width
    # --eval-sizes: every target's build records the sizes it takes (TensorRT: the profile's
    # min/opt/max and per-size golden data), so each target reads them
    "eval_sizes": (SIZES,),
    "calib": (CALIBRATION,),
    "calib_size": (CALIBRATION,),
    "calib_data": (CALIBRATION,),  # by content (calib_id, else a hash of the array)
    "calib_id": (CALIBRATION,),
    "calib_labels": (CALIBRATION,),  # stratified subsets of the calibration set
    "on_bad_image": (CALIBRATION, EVALUATION),
    "class_index": (CALIBRATION, EVALUATION),
    "eval": (EVALUATION,),
    "eval_size": (EVALUATION,),
    "eval_data": (EVALUATION,),  # by content (eval_id, else a hash of x and labels)
    "eval_id": (EVALUATION,),
    "eval_count": (EVALUATION,),  # the seeded inputs' count when no evaluation set is given
    "target_options": (TARGET,),  # the target's own entry
    "thresholds": (TARGET,),  # the target's own max_top1_drop (the budget search reads it)
}

# Every RunConfig field no artifact reads, and why.
READ_BY_NONE: dict[str, str] = {
    "targets": "which artifacts are made, not what any one is (each target is keyed on its own)",
    "out_dir": "where artifacts are stored, not what they hold",
    "threads": "how fast a build runs; results do not depend on it",
    "latency": "measurement only",
    "latency_batches": "measurement only",
    "rebuild": "forces a rebuild; not an input",
    "wait_for_lock": "how a run waits for the output folder",
    "auto": "--target auto plans targets; its batch-1 variants are keyed as their own builds",
    "budget": "--target auto's recommendation budget, read after building",
    "require_winner": "--target auto's exit rule, read after building",
    "profile": "per-operator profiles, measured after building",
    "scenarios": "--scenario/--sustain: measurement only, after building",
    "objective": "--target auto's ranking (latency or offline throughput), read after building",
}


def fields_read_by(reader: str) -> tuple[str, ...]:
    return tuple(f for f, readers in RUN_CONFIG_READS.items() if reader in readers)


def digest(obj: Any) -> str:
    """Build key of ``obj``: what made an artifact, plus this tool's version."""
    from .version import __version__

    blob = json.dumps({"xcit_export": __version__, **obj}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def array_id(*arrays) -> str | None:
    """sha256 over arrays' dtypes, shapes and bytes (None entries count); None if all are None."""
    if all(a is None for a in arrays):
        return None
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _value(config, name: str, reader: str, spec=None) -> Any:
    """What field ``name`` of ``config`` contributes to ``reader``'s key."""
    value = getattr(config, name)
    if name == "weights":
        return {"source": value, "content": weights_fingerprint(value, config.seed, spec)}  # pretrained: the Hub file
    if name == "seed" and reader == ONNX:
        # the seed decides the graph only where parameters are drawn from it
        return value if config.weights == "random" or seeds_parameters(config.output) else None
    if name == "calib_data":
        return None if config.calib_id is not None else array_id(value)
    if name == "calib_labels":
        return array_id(value)
    if name == "eval_data":
        if value is None or config.eval_id is not None:
            return None
        x, labels = value
        return array_id(x, labels)
    if name == "eval_count":
        return value if config.eval is None and config.eval_data is None else None  # else unused
    return value


def onnx_key(config, spec) -> str:
    """Key of the FP32 ONNX of ``config`` (``spec``: its resolved zoo.ModelSpec)."""
    obj = {"stage": "onnx", "export_form": FORM_VERSION, "libs": library_versions(),
           "resolved": {"model": spec.name, "num_classes": spec.num_classes,
                        "preprocessing": spec.preprocessing.to_dict()}}
    obj["config"] = {name: _value(config, name, ONNX, spec) for name in fields_read_by(ONNX)}
    return digest(obj)


def target_reads(target, options: dict, budget) -> set[str]:
    """The readers among ``calibration`` / ``evaluation`` that ``target``'s build is, with these options."""
    out = set()
    if "calibration" in target.reads:
        out.add(CALIBRATION)
    # "evaluation:search": only when an option asks for a search (the one rule, Target.needs_evaluation)
    if "evaluation" in target.reads or ("evaluation:search" in target.reads
                                        and target.needs_evaluation(options, budget) is not None):
        out.add(EVALUATION)
    return out


def max_top1_drop(config, target_name: str):
    return ((config.thresholds.get(target_name) or {}).get("thresholds") or {}).get("max_top1_drop")


def target_key(target, config, onnx: str, evaluation_given: bool = True) -> str:
    """Key of ``target``'s artifact built from the ONNX keyed ``onnx``; ``evaluation_given``: whether
    the build is handed an evaluation set (else e.g. TensorRT's golden inputs are seeded)."""
    options = dict(config.target_options.get(target.name, {}))
    budget = max_top1_drop(config, target.name)
    obj: dict[str, Any] = {"stage": target.name, "onnx": onnx, "libs": library_versions(),
                           "target": {"options": options, "max_top1_drop": budget}}
    if target.key_inputs is not None:  # e.g. the ISA class a CPU-specific format was chosen for
        obj["target_inputs"] = target.key_inputs(options)
    obj[SIZES] = {name: _value(config, name, SIZES) for name in fields_read_by(SIZES)}
    reads = target_reads(target, options, budget)
    for reader in (CALIBRATION, EVALUATION):
        if reader in reads:
            obj[reader] = {name: _value(config, name, reader) for name in fields_read_by(reader)}
    if EVALUATION in reads:
        obj[EVALUATION]["given"] = bool(evaluation_given)
    return digest(obj)
