"""xcit-export: XCiT image classifiers from PyTorch to edge runtimes, validated end to end.

The Python API (:mod:`xcit_export.api`)::

    import xcit_export

    report = xcit_export.run("xcit_nano_12_p16_224", ["onnxruntime-fp32"], weights="random")
    report.passed, report.targets[0].latency["median_ms"], report.json_path

``run``, ``run_recipe``, ``recommend``, ``gate``, ``bundle``, ``load_report`` and the result classes
are imported on first use, so ``import xcit_export`` loads neither PyTorch nor the runtimes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

_API = ("run", "run_recipe", "recommend", "gate", "bundle", "load_report", "Report", "TargetResult",
        "Recommendation", "GateResult")
__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from .api import (GateResult, Recommendation, Report, TargetResult, bundle, gate, load_report, recommend, run,
                      run_recipe)


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'xcit_export' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
