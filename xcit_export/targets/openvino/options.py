"""OpenVINO targets' options: the values they take, parsed once before any work (``Target.parse_options``);
every message names the value and the fix. Also the process's one ``openvino.Core``."""

from __future__ import annotations

import re
from typing import Any

from ...errors import ArtifactError, OptionError
from ...values import as_int
from ..base import Boolean, Drop, Option

DEVICES = ("CPU", "GPU", "NPU", "AUTO")
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
PRECISIONS = {"f32": "f32", "bf16": "bf16", "f16": "f16", "default": None}  # option -> INFERENCE_PRECISION_HINT
PRESETS = ("performance", "mixed")
# NNCF's recommendation is 300 calibration images; fewer than MIN_CALIBRATION give activation
# ranges that are mostly noise, so they are refused rather than quantized badly.
DEFAULT_SUBSET_SIZE = 300
MIN_CALIBRATION = 32

_CORE = None


def _core():
    """One ``openvino.Core`` per process (creating one loads the plugin registry)."""
    global _CORE
    if _CORE is None:
        import openvino as ov

        _CORE = ov.Core()
    return _CORE


def parse_device(value: Any, name: str = "device") -> str:
    """``CPU``/``GPU``/``NPU``/``AUTO`` (case-insensitive; ``GPU.1`` and ``AUTO:GPU,CPU`` allowed)."""
    text = str(value if value is not None else "CPU").strip().upper()
    base = re.split(r"[.:]", text, maxsplit=1)[0]
    if base not in DEVICES or not text:
        raise OptionError(f"unsupported OpenVINO device '{value}' (--device): use one of {', '.join(DEVICES)}")
    return text


def check_device_available(device: str) -> None:
    """Raise naming the devices that exist when ``device`` is not on this machine (AUTO always is)."""
    if device.startswith("AUTO"):
        return
    available = list(_core().available_devices)
    names = set(available) | {d.split(".")[0] for d in available}
    if device not in names:
        raise ArtifactError(f"OpenVINO device {device} is not available on this machine; available: "
                            f"{', '.join(available) or 'none'}. The IR is device-independent: copy "
                            f"model.xml and model.bin to a machine that has one, or "
                            f"validate here with --device CPU")


def preflight(options: dict[str, Any]) -> None:
    """A run's ``device`` must exist on this machine: checked before the export (Target.preflight).
    The CPU always does (and needs no OpenVINO core to say so)."""
    device = parse_device(options.get("device"))
    if device != "CPU":
        check_device_available(device)


def parse_hint(value: Any, name: str = "hint") -> str:
    key = str(value if value is not None else "latency").strip().lower()
    if key not in HINTS:
        raise OptionError(f"unsupported OpenVINO hint '{value}' (--hint): use latency or throughput")
    return key


def parse_precision(value: Any, name: str = "inference_precision") -> str:
    key = str(value).strip().lower()
    if key not in PRECISIONS:
        raise OptionError(f"unsupported inference_precision '{value}' (-O inference_precision=...): use "
                          f"{', '.join(PRECISIONS)}")
    return key


def precision_hint(option: str | None, target_precision: str) -> str | None:
    """``INFERENCE_PRECISION_HINT`` for the option's value (None: f32 for openvino-fp32, else the
    device's default)."""
    if option is None:
        return "f32" if target_precision == "fp32" else None
    return PRECISIONS[option]


SHAPES = ("static", "dynamic")


def parse_shapes(value: Any, name: str = "shapes") -> str:
    """``-O shapes=``: how a --dynamic-size IR runs: ``static`` (a reshape per input shape, the default:
    faster on CPU) or ``dynamic`` (one compile for every shape)."""
    text = str(value).strip().lower()
    if text not in SHAPES:
        raise OptionError(f"-O shapes={value!r}: use static (a reshape per input size, faster on CPU) or dynamic")
    return text


def parse_preset(value: Any, name: str = "preset") -> str:
    text = str(value).strip().lower()
    if text not in PRESETS:
        raise OptionError(f"preset '{value}' is not an NNCF preset: use performance or mixed")
    return text


def parse_subset_size(value: Any, name: str = "subset_size") -> int:
    subset = as_int(value, name, minimum=None)
    if subset < MIN_CALIBRATION:
        raise OptionError(f"subset_size={subset} is too small: NNCF needs at least {MIN_CALIBRATION} "
                          f"calibration images ({DEFAULT_SUBSET_SIZE} recommended)")
    return subset


def check_ignored_scope(value: Any, name: str = "ignored_scope") -> Any:
    """The syntax of ``ignored_scope`` (a dict of names/patterns/types, a list, or a comma-separated
    string), as the canonical dict or list of strings; which list entries are op types needs the
    model (:func:`parse_ignored_scope`)."""
    if value is None or value == [] or value == "":
        return None
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"names", "patterns", "types"})
        if unknown:
            raise OptionError(f"ignored_scope has unknown key(s) {', '.join(unknown)}: use names, patterns, types")
        canonical: Any = {k: [str(v) for v in (value.get(k) or [])] for k in ("names", "patterns", "types")}
        patterns = canonical["patterns"]
    else:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise OptionError(f"ignored_scope={value!r} is neither a list nor a dict; e.g. "
                              f"-O openvino-int8:ignored_scope='[\"MatMul\"]'")
        canonical = patterns = [str(i).strip() for i in items if str(i).strip()]
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise OptionError(f"ignored_scope pattern '{pattern}' is not a regular expression ({exc})") from None
    return canonical


def parse_ignored_scope(value: Any, op_types: set[str]):
    """An ``nncf.IgnoredScope`` and its spec from the option's value (:func:`check_ignored_scope`).

    In a list, an entry that is an op type present in the model (``MatMul``, ``Multiply``) is a
    type; anything else is a regular expression on node names.
    """
    import nncf

    value = check_ignored_scope(value)
    if value is None:
        return None, None
    if isinstance(value, dict):
        spec = value
    else:
        spec = {"names": [], "patterns": [i for i in value if i not in op_types],
                "types": [i for i in value if i in op_types]}
    return nncf.IgnoredScope(**spec), spec


COMMON_OPTIONS = (
    Option("device", parse_device, "CPU", "inference device: CPU, GPU, NPU or AUTO (GPU.1 picks one of several); "
                                          "it must exist here to validate", example="AUTO"),
    Option("hint", parse_hint, "latency", "performance hint: latency or throughput", example="throughput"),
    Option("inference_precision", parse_precision, None,
           "runtime precision of floating-point ops: f32, bf16, f16 or default (the device's own; default: f32 for "
           "openvino-fp32, the device's for the others)", example="bf16"),
    Option("shapes", parse_shapes, "static", "a --dynamic-size IR: static (a reshape and compile per input size, "
                                             "faster on CPU) or dynamic (one compile for every size)",
           example="dynamic"),
)
INT8_OPTIONS = (
    *COMMON_OPTIONS,
    Option("subset_size", parse_subset_size, None, f"calibration images NNCF uses (default: up to "
                                                   f"{DEFAULT_SUBSET_SIZE}, at least {MIN_CALIBRATION})", example=64),
    Option("preset", parse_preset, "mixed", "performance (symmetric activations) or mixed (asymmetric activations)",
           example="performance"),
    Option("ignored_scope", check_ignored_scope, None,
           "nodes kept in floating point: a list of OpenVINO op types (e.g. [\"MatMul\"]) and/or node-name regexes, "
           "or {\"names\": [...], \"patterns\": [...], \"types\": [...]}", example=["MatMul"]),
    Option("fast_bias_correction", Boolean(), True, "false: slower, sometimes more accurate bias correction",
           example=False),
    Option("max_drop", Drop(), None, "enable accuracy-controlled quantization: maximum top-1 drop as a fraction "
                                     "(0.01 = 1 point) against the evaluation set's labels (or agreement with FP32 "
                                     "if unlabelled), e.g. 0.01", example=0.01),
)




def last_line(exc: Exception) -> str:
    """The last non-empty line of an OpenVINO exception's message (its own words), cut to 300 characters."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]
