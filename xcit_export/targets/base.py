"""What every target provides: ``build(ctx) -> Artifact`` and ``load(artifact, ...) -> Runner``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from ..errors import ArtifactError, XcitExportError
from ..io import write_json_atomic

ARTIFACT_META = "artifact.json"

# Options of the Q/DQ INT8 targets' sensitivity analysis and accuracy-budget search
# (xcit_export/quantize/sensitivity.py). Data only, here so the device-side modules can list them without
# importing the analysis.
SEARCH_OPTIONS = {
    "sensitivity": "measure each layer group quantized alone on the evaluation set (default false)",
    "max_drop": "accuracy budget: largest top-1 drop as a fraction (0.01 = 1 point); keeps the most damaging "
                "layer groups in higher precision until it holds",
    "search_images": "evaluation images used by sensitivity and max_drop (default: all)",
}


@dataclass
class BuildContext:
    """Everything a target may use to build.

    ``onnx_path`` is the simplified, parity-checked FP32 ONNX; ``out_dir`` is the target's own
    folder (a fresh temporary folder that replaces the old one on success); ``calibration`` is an
    array of preprocessed calibration images in the graph's input format (``(N, 3, H, W)``
    float32 for the default ``nchw``; ``input_shape`` is that shape without N), or None; ``options`` holds target-specific options
    from the CLI or recipe (device, hint, calibration method...).
    """

    spec: Any  # zoo.ModelSpec
    onnx_path: Path
    out_dir: Path
    batch: int | None
    input_shape: tuple[int, int, int]
    calibration: np.ndarray | None = None
    calibration_id: str | None = None
    calibration_labels: np.ndarray | None = None  # when the calibration set is labelled (stratified subsets)
    # Seed for every subset a build draws (golden inputs, search_images, NNCF's subset_size, the FP16
    # reference images: data.sets.representative_subset); part of the build key of targets that read data.
    seed: int = 0
    # (x, labels-or-None) of the evaluation set, for accuracy-controlled quantization.
    evaluation: tuple[np.ndarray, np.ndarray | None] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    # The recipe's max_top1_drop for this target (a fraction), for targets that search an accuracy budget.
    max_top1_drop: float | None = None


@dataclass
class Artifact:
    """A built target: its main file, every file it consists of, and metadata stored beside it."""

    target: str
    path: Path
    files: list[Path]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files if f.exists())

    def save_metadata(self) -> Path:
        meta = {"target": self.target, "path": self.path.name,
                "files": [f.name for f in self.files], **self.metadata}
        return write_json_atomic(self.path.parent / ARTIFACT_META, meta)

    @classmethod
    def from_dir(cls, folder: Path) -> "Artifact":
        meta_path = Path(folder) / ARTIFACT_META
        if not meta_path.exists():
            raise ArtifactError(f"'{folder}' holds no {ARTIFACT_META}: it is not a built target folder")
        meta = json.loads(meta_path.read_text())
        files = [Path(folder) / f for f in meta.pop("files")]
        path = Path(folder) / meta.pop("path")
        target = meta.pop("target")
        return cls(target=target, path=path, files=files, metadata=meta)


class Runner(Protocol):
    """An opened artifact. ``infer`` takes an NCHW float32 batch and returns one array per output.

    ``measures_latency`` is False for a stand-in runner whose timings say nothing about the
    deployed artifact (e.g. a TensorRT target's precision-ready ONNX run on the host CPU):
    the pipeline then reports its accuracy but no latency.
    """

    threads: int | None
    device: str
    measures_latency: bool

    def infer(self, x: np.ndarray) -> list[np.ndarray]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Target:
    """A registered target: ``name`` is ``<backend>-<precision>``."""

    name: str
    backend: str
    precision: str
    description: str
    build: Callable[[BuildContext], Artifact]
    load: Callable[..., Runner]
    requires: tuple[str, ...] = ()  # importable modules needed to build / run
    needs_calibration: bool = False
    # Why this machine cannot run the deployed artifact (None: it can). Such a target still
    # validates accuracy through a stand-in runner (TensorRT: its precision-ready ONNX on
    # onnxruntime) but cannot be timed here, so ``--target auto`` leaves it out.
    runs_here: Callable[[], str | None] | None = None
    verified: str = ""  # where this path has been exercised (README's targets table)
    # Target-specific options this target accepts (name -> help). Anything else is rejected
    # before work starts, so a misspelt or misplaced option never goes silently unused.
    options: dict[str, str] = field(default_factory=dict)
    # Optional per-op-type latency breakdown from the runtime's own profiler:
    # ``profile(artifact, x, threads=..., runs=..., **options) -> dict`` (xcit_export/evaluate/profiling.py).
    # It opens the artifact separately, so the runner and its latency figures are never touched.
    profile: Callable[..., dict] | None = None
    # What else decides the artifact besides its options (e.g. the CPU's ISA class for a format
    # chosen by CPU): ``options -> dict`` added to the build key, so such an artifact is not reused
    # on a machine it was not made for.
    key_inputs: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # The image sets this target's build reads (its build key includes them; xcit_export/keys.py):
    # "calibration" (whenever one is given), "evaluation" (whenever given), "evaluation:search" (only when
    # sensitivity / max_drop / the recipe's max_top1_drop ask for it). Anything else it reads must be
    # its options or key_inputs.
    reads: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = set(self.reads) - {"calibration", "evaluation", "evaluation:search"}
        if unknown or (self.needs_calibration and "calibration" not in self.reads):
            raise ValueError(f"target {self.name}: reads={self.reads!r} must list its inputs among calibration, "
                             f"evaluation, evaluation:search (and calibration when it needs calibration)")

    def check_options(self, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            accepted = ", ".join(sorted(self.options)) or "none"
            raise XcitExportError(f"target {self.name} does not take option(s) {', '.join(unknown)} "
                                  f"(it accepts: {accepted})")

    def missing_requirements(self) -> list[str]:
        import importlib.util

        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def why_not_here(self) -> str | None:
        return self.runs_here() if self.runs_here else None
