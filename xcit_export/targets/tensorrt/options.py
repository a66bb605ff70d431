"""Target options of the TensorRT targets: parsing, the optimisation profile, compute capabilities."""

from __future__ import annotations

from ...errors import OptionError, XcitExportError
from ...evaluate.validate import EVAL_BATCH
from ...values import as_list, parse_size
from .device import library_version

DEFAULT_WORKSPACE_MB = 1024
DEFAULT_MAX_BATCH = EVAL_BATCH  # the profile's largest batch: what the evaluation feeds
DEFAULT_GOLDEN = 16


def _exclude_op_types(value) -> list[str]:
    """INT8 op types left unquantized: the defaults (residual Adds) plus the option's; 'none' clears."""
    from ...quantize.precision import INT8_DEFAULT_EXCLUDE_OP_TYPES

    given = as_list(value)
    if [v.lower() for v in given] == ["none"]:
        return []
    return list(dict.fromkeys([*INT8_DEFAULT_EXCLUDE_OP_TYPES, *given]))


def batch_profile(static_batch: int | None, options: dict) -> dict:
    """min/opt/max batch of the optimisation profile (all equal to a static export batch)."""
    if static_batch is not None:
        given = {k: options[k] for k in ("min_batch", "opt_batch", "max_batch") if options.get(k) is not None}
        if any(int(v) != static_batch for v in given.values()):
            raise XcitExportError(f"the ONNX was exported with a static batch {static_batch} (--batch), so "
                                  f"{', '.join(f'{k}={v}' for k, v in given.items())} cannot apply; drop them "
                                  f"or export with a dynamic batch")
        return {"min": static_batch, "opt": static_batch, "max": static_batch}
    lo = options.get("min_batch") or 1
    opt = options.get("opt_batch") or max(lo, 1)
    hi = options.get("max_batch") or max(DEFAULT_MAX_BATCH, opt)
    if not lo <= opt <= hi:
        raise XcitExportError(f"optimisation profile needs min_batch <= opt_batch <= max_batch; got "
                              f"{lo} <= {opt} <= {hi}")
    return {"min": lo, "opt": opt, "max": hi}


def compute_capabilities(trt, value) -> list:
    """``-O compute_capability=8.6,8.9`` -> TensorRT-RTX ``ComputeCapability`` members ([] = default)."""
    names = as_list(value)
    if not names or names in (["portable"], ["default"]):
        return []
    enum = getattr(trt, "ComputeCapability", None)
    if enum is None:
        raise XcitExportError("compute_capability is a TensorRT-RTX option; this library cannot target "
                              "compute capabilities ahead of time")
    known = [m for m in enum.__members__ if m.startswith("SM")]
    out = []
    for name in names:
        key = name.lower().replace("sm_", "").replace("sm", "").replace(".", "").strip()
        member = "CURRENT" if key == "current" else f"SM{key}"
        if member not in enum.__members__:
            readable = ", ".join(f"{m[2:-1]}.{m[-1]}" for m in known)
            raise XcitExportError(f"compute_capability '{name}' is not one {trt.__name__} "
                                  f"{library_version(trt)} can target (it knows {readable}, or 'current')")
        out.append(getattr(enum, member))
    return out


def _cc_text(member) -> str:
    name = str(member).split(".")[-1]
    return "current GPU" if name == "CURRENT" else f"sm_{name[2:]}"


def _hw(options: dict, key: str, default: tuple[int, int]) -> tuple[int, int]:
    value = options.get(key)
    if value is None:
        return default
    h, w = parse_size(value, f"option {key}")
    return h, w


class ComputeCapabilities:
    """``-O compute_capability=8.6,sm_120,current`` -> ``["8.6", "12.0", "current"]`` (which of them the
    installed library can target is checked at build: :func:`compute_capabilities`)."""

    def __call__(self, value, name: str) -> list:
        out = []
        for item in as_list(value):
            key = item.lower().replace("sm_", "").replace("sm", "").replace(".", "").strip()
            if key in ("current", "portable", "default"):
                out.append(key)
            elif key.isdigit() and len(key) >= 2:
                out.append(f"{int(key[:-1])}.{key[-1]}")
            else:
                raise OptionError(f"option {name}={item!r} is not a compute capability; use e.g. 8.6, 8.6,12.0 or "
                                  f"current")
        return out


def size_profile(input_shape, dynamic_size: bool, sizes, options: dict) -> dict | None:
    """min/opt/max height and width of the optimisation profile of a ``--dynamic-size`` ONNX.

    Default: min and max span the export size and every ``--eval-sizes`` size (height and width
    separately), opt is the export size (where INT8 calibrates and the kernels are tuned);
    ``-O min_size= opt_size= max_size=`` (``HxW``) override. None for a static-size ONNX.
    """
    given = [k for k in ("min_size", "opt_size", "max_size") if options.get(k) is not None]
    if not dynamic_size:
        if given:
            raise XcitExportError(f"{', '.join(given)} need a --dynamic-size export (this ONNX has a static size)")
        return None
    shape = tuple(input_shape)
    layout = "nchw" if shape[0] == 3 else "nhwc"
    export = (int(shape[1]), int(shape[2])) if layout == "nchw" else (int(shape[0]), int(shape[1]))
    every = [export, *[(int(h), int(w)) for h, w in (sizes or ())]]
    lo = _hw(options, "min_size", (min(s[0] for s in every), min(s[1] for s in every)))
    opt = _hw(options, "opt_size", export)
    hi = _hw(options, "max_size", (max(s[0] for s in every), max(s[1] for s in every)))
    if not all(lo[i] <= opt[i] <= hi[i] for i in (0, 1)):
        raise XcitExportError(f"optimisation profile needs min_size <= opt_size <= max_size (height and width); got "
                              f"{lo[0]}x{lo[1]} <= {opt[0]}x{opt[1]} <= {hi[0]}x{hi[1]}")
    return {"layout": layout, "min": list(lo), "opt": list(opt), "max": list(hi)}


def profile_shapes(profile: dict, input_shape) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Full (batch, ...) min/opt/max input shapes of ``profile`` (batch range, plus ``size`` when the
    height and width are dynamic) for an input of ``input_shape`` (without the batch)."""
    size = profile.get("size")

    def shape(which: str) -> tuple[int, ...]:
        dims = [int(d) for d in input_shape]
        if size:
            h, w = size[which]
            axis = 1 if size.get("layout", "nchw") == "nchw" else 0
            dims[axis], dims[axis + 1] = int(h), int(w)
        return (int(profile[which]), *dims)

    return shape("min"), shape("opt"), shape("max")
