"""Build keys: what made an artifact, declared in one place.

A rerun reuses an artifact (the FP32 ONNX, each target's folder) when its build key is unchanged,
and skips its checks (the ONNX parity check, a target's build-time checks), so a key must hold
everything the artifact was made from. :data:`READS` says, for every field of
:class:`xcit_export.options.RunOptions` and of :class:`xcit_export.options.Inputs` (what the run
loaded), which artifacts read it; :data:`READ_BY_NONE` lists, with the reason, the fields no artifact
reads. The keys are derived from these tables (:func:`onnx_key`, :func:`target_key`), and
``tests/test_keys.py`` changes every field in turn, checks that every artifact that reads it gets a
new key, and fails when a field is in neither table, so a new option cannot be forgotten.

Readers:

* ``onnx``: the FP32 ONNX (and through it every target: a target's key holds the ONNX key);
* ``calibration``: targets whose build reads the calibration set (``Target.reads``);
* ``evaluation``: targets whose build reads the evaluation set (``Target.reads``: always, e.g.
  TensorRT's golden inputs, or only for the sensitivity / accuracy-budget search);
* ``target``: every target (its own options, as the plan gives them to it, and its recipe's
  ``max_top1_drop``);
* ``sizes``: every target (the sizes its build records).

A target's options are part of its key as a whole, every option at its canonical value, given or
default (every option a target accepts can change what it builds, or is cheap to rebuild for; two
spellings of one value, ``per_channel=yes`` and ``per_channel=true``, are one key);
``Target.key_inputs`` adds what decides the artifact besides (e.g. the CPU's ISA class).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import numpy as np

from .fingerprint import library_versions
from .models.deploy import seeds_parameters
from .models.fuse import FORM_VERSION
from .models.weights import weights_fingerprint

ONNX, CALIBRATION, EVALUATION, TARGET, SIZES = "onnx", "calibration", "evaluation", "target", "sizes"

# Every RunOptions / Inputs field an artifact reads -> the artifacts that read it.
READS: dict[str, tuple[str, ...]] = {
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
    "calib_data": (CALIBRATION,),  # Inputs: by content (calib_id, else a hash of the array)
    "calib_id": (CALIBRATION,),  # Inputs
    "calib_labels": (CALIBRATION,),  # Inputs: stratified subsets of the calibration set
    "on_bad_image": (CALIBRATION, EVALUATION),
    "class_index": (CALIBRATION, EVALUATION),
    "eval": (EVALUATION,),
    "eval_size": (EVALUATION,),
    "eval_data": (EVALUATION,),  # Inputs: by content (eval_id, else a hash of x and labels)
    "eval_id": (EVALUATION,),  # Inputs
    "eval_count": (EVALUATION,),  # the seeded inputs' count when no evaluation set is given
    # the target's own options, as the plan distributes and parses them (plan.distribute_options)
    "options": (TARGET,),
    "target_options": (TARGET,),
    "device": (TARGET,),
    "hint": (TARGET,),
    "thresholds": (TARGET,),  # the target's own max_top1_drop (the budget search reads it)
}

# Every RunOptions / Inputs field no artifact reads, and why.
READ_BY_NONE: dict[str, str] = {
    "targets": "which artifacts are made, not what any one is (each target is keyed on its own)",
    "out": "where artifacts are stored, not what they hold",
    "threads": "how fast a build runs; results do not depend on it",
    "warmup": "measurement only",
    "iterations": "measurement only",
    "min_seconds": "measurement only",
    "max_seconds": "measurement only",
    "latency_batches": "measurement only",
    "profile": "per-operator profiles, measured after building",
    "rebuild": "forces a rebuild; not an input",
    "wait": "how a run waits for the output folder",
    "progress": "how a run reports progress",
    "candidates": "--target auto plans targets; its batch-1 variants are keyed as their own builds",
    "max_top1_drop": "--target auto's recommendation budget, read after building",
    "min_top1_agreement": "--target auto's recommendation budget, read after building",
    "min_cosine_mean": "--target auto's recommendation budget, read after building",
    "require_winner": "--target auto's exit rule, read after building",
    "allow_no_winner": "--target auto's exit rule, read after building",
    "explain": "the per-point diagnosis (diagnose/) reads built artifacts, after building (a matrix "
               "cell's key holds it: a finished cell is explained when a rerun asks)",
    "fix": "--fix rebuilds in <out>/fixed with the remedies as target options, which key those builds",
    "scenarios": "--scenario: measurement only, after building",
    "streams": "--scenario: measurement only, after building",
    "scenario_seconds": "--scenario: measurement only, after building",
    "sustain": "--scenario: measurement only, after building",
    "mlperf_tail": "--scenario: measurement only, after building",
    "objective": "--target auto's ranking (latency or offline throughput), read after building",
}
INPUT_FIELDS = ("eval_data", "eval_id", "calib_data", "calib_id", "calib_labels")


def fields_read_by(reader: str) -> tuple[str, ...]:
    return tuple(f for f, readers in READS.items() if reader in readers)


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


def _value(options, inputs, name: str, reader: str, spec=None) -> Any:
    """What field ``name`` (of ``options`` or, for loaded data, ``inputs``) contributes to ``reader``'s key."""
    value = getattr(inputs, name) if name in INPUT_FIELDS else getattr(options, name)
    if name == "weights":
        return {"source": value, "content": weights_fingerprint(value, options.seed, spec)}  # pretrained: the Hub file
    if name == "seed" and reader == ONNX:
        # the seed decides the graph only where parameters are drawn from it
        return value if options.weights == "random" or seeds_parameters(options.output) else None
    if name == "calib_data":
        return None if inputs.calib_id is not None else array_id(value)
    if name == "calib_labels":
        return array_id(value)
    if name == "eval_data":
        if value is None or inputs.eval_id is not None:
            return None
        x, labels = value
        return array_id(x, labels)
    if name == "eval_count":
        return value if options.eval is None and inputs.eval_data is None else None  # else unused
    return value


def onnx_key(options, inputs, spec) -> str:
    """Key of the FP32 ONNX of ``options`` (``spec``: its resolved zoo.ModelSpec)."""
    obj = {"stage": "onnx", "export_form": FORM_VERSION, "libs": library_versions(),
           "resolved": {"model": spec.name, "num_classes": spec.num_classes,
                        "preprocessing": spec.preprocessing.to_dict()}}
    obj["config"] = {name: _value(options, inputs, name, ONNX, spec) for name in fields_read_by(ONNX)}
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


def max_top1_drop(options, target_name: str):
    """A recipe's ``max_top1_drop`` threshold for ``target_name`` (a budget-searching build reads it)."""
    return ((options.thresholds.get(target_name) or {}).get("thresholds") or {}).get("max_top1_drop")


def target_key(target, options, inputs, target_options: Mapping[str, Any], onnx: str,
               evaluation_given: bool = True) -> str:
    """Key of ``target``'s artifact built from the ONNX keyed ``onnx``; ``target_options``: its options
    as the plan gives them (parsed again here, which changes nothing for canonical values);
    ``evaluation_given``: whether the build is handed an evaluation set (else e.g. TensorRT's golden
    inputs are seeded)."""
    typed = target.parse_options(target_options)  # canonical: yes == true == True
    budget = max_top1_drop(options, target.name)
    obj: dict[str, Any] = {"stage": target.name, "onnx": onnx, "libs": library_versions(),
                           "target": {"options": typed, "max_top1_drop": budget}}
    if target.key_inputs is not None:  # e.g. the ISA class a CPU-specific format was chosen for
        obj["target_inputs"] = target.key_inputs(typed)
    obj[SIZES] = {name: _value(options, inputs, name, SIZES) for name in fields_read_by(SIZES)}
    reads = target_reads(target, typed, budget)
    for reader in (CALIBRATION, EVALUATION):
        if reader in reads:
            obj[reader] = {name: _value(options, inputs, name, reader) for name in fields_read_by(reader)}
    if EVALUATION in reads:
        obj[EVALUATION]["given"] = bool(evaluation_given)
    return digest(obj)
