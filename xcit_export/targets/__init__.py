"""The target registry: one module per backend, each registering its targets once.

A target turns the simplified FP32 ONNX into a deployable artifact (``build``) and opens that
artifact as a :class:`~xcit_export.targets.base.Runner` for validation (``load``). Adding a
backend means writing one module that calls :func:`register` and naming it in ``_BACKENDS``;
the pipeline and the CLI do not change.
"""

from __future__ import annotations

import difflib
import importlib

from ..errors import UnknownTargetError, XcitExportError
from .base import Artifact, BuildContext, Runner, Target

# Backend modules imported (cheaply: heavy libraries are imported lazily inside build/load).
_BACKENDS = ("onnxruntime", "openvino", "tensorrt")

TARGETS: dict[str, Target] = {}


def register(target: Target) -> Target:
    if target.name in TARGETS:
        raise RuntimeError(f"target {target.name} registered twice")
    TARGETS[target.name] = target
    return target


def _load_backends() -> None:
    # Every backend, every time: importing is idempotent, and a backend module imported directly
    # elsewhere (a test, a plugin) must not hide the others.
    for mod in _BACKENDS:
        importlib.import_module(f"{__name__}.{mod}")


def all_targets() -> dict[str, Target]:
    _load_backends()
    return TARGETS


def get_target(name: str) -> Target:
    targets = all_targets()
    try:
        return targets[name]
    except KeyError:
        close = difflib.get_close_matches(name, targets, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownTargetError(f"unknown target '{name}'.{hint} Run 'xcit-export list-targets' for all "
                                 f"targets.") from None


def unavailable_reason(target, has_calibration: bool) -> str | None:
    """Why ``target`` cannot be a candidate on this machine, or None when it can."""
    missing = target.missing_requirements()
    if missing:
        return f"cannot run here: needs {', '.join(missing)} (not installed)"
    why = target.why_not_here()
    if why:
        return f"cannot run here: {why}"
    if target.needs_calibration and not has_calibration:
        return "not tried: needs calibration images (--calib)"
    return None


def candidates(selected: list[str] | None, has_calibration: bool) -> tuple[list[str], dict[str, str]]:
    """Candidate target names among ``selected`` (default: every registered target), and for
    each one left out the reason, in registry order."""
    names = list(selected) if selected else list(all_targets())
    runnable, left_out = [], {}
    for name in names:
        reason = unavailable_reason(get_target(name), has_calibration)
        if reason:
            left_out[name] = reason
        else:
            runnable.append(name)
    if not runnable:
        raise XcitExportError("--target auto found no target that can run on this machine: "
                              + "; ".join(f"{k}: {v}" for k, v in left_out.items()))
    return runnable, left_out


__all__ = ["Artifact", "BuildContext", "Runner", "Target", "TARGETS", "all_targets", "candidates", "get_target",
           "register", "unavailable_reason"]
