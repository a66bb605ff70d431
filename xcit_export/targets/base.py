"""What every target provides: ``build(ctx) -> Artifact`` and ``load(artifact, ...) -> Runner``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from ..errors import ArtifactError, DataError, XcitExportError
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


# --------------------------------------------------------------------------------------------
# Option values: one parser for every target. Options arrive as strings from the CLI
# (``-O key=value``) or typed from a recipe (TOML lists, booleans, numbers); both mean the same.
# --------------------------------------------------------------------------------------------

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def as_list(value) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (blanks dropped); None or "" -> []."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def as_bool(value, name: str = "option") -> bool:
    """true/false, 1/0, yes/no, on/off (any case) or a bool; anything else is an error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise XcitExportError(f"option {name}={value!r} is not a boolean; use true or false")


def as_int(value, name: str = "option", minimum: int | None = 1, maximum: int | None = None) -> int | None:
    """An integer within [minimum, maximum]; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise XcitExportError(f"option {name}={value!r} is not a whole number")
    try:
        out = int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
    except (TypeError, ValueError):
        raise XcitExportError(f"option {name}={value!r} is not a whole number") from None
    if (minimum is not None and out < minimum) or (maximum is not None and out > maximum):
        rng = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise XcitExportError(f"option {name}={out} is out of range: it must be {rng}")
    return out


def as_float(value, name: str = "option", minimum: float | None = None, maximum: float | None = None) -> float | None:
    """A finite number within [minimum, maximum]; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise XcitExportError(f"option {name}={value!r} is not a number")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise XcitExportError(f"option {name}={value!r} is not a number") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise XcitExportError(f"option {name}={value!r} is not a finite number")
    if (minimum is not None and out < minimum) or (maximum is not None and out > maximum):
        raise XcitExportError(f"option {name}={out} is out of range: it must be between {minimum} and {maximum}")
    return out


def as_drop(value, name: str = "max_drop") -> float | None:
    """A top-1 drop budget as a fraction of the evaluation set (0.01 = 1 percentage point), the
    unit of every target's ``max_drop`` and of a recipe's ``max_top1_drop``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise XcitExportError(f"{name}={value!r} is not a number: give the top-1 drop as a fraction (0.01 = 1 point)")
    try:
        drop = float(value)
    except (TypeError, ValueError):
        raise XcitExportError(f"{name}={value!r} is not a number: give the top-1 drop as a fraction "
                              f"(0.01 = 1 point)") from None
    if drop != drop or drop < 0 or drop > 100:
        raise XcitExportError(f"{name}={value} is out of range: it is a top-1 drop as a fraction between 0 and "
                              f"1 (0.01 = 1 point)")
    if drop >= 1:  # most likely meant in percentage points (openvino-int8's unit before): refuse, never reread
        raise XcitExportError(f"{name}={value} is read as a fraction ({100 * drop:g} points); for {drop:g} "
                              f"point{'s' if drop != 1 else ''} pass {drop / 100:g}")
    return drop


def evaluation_reason(target_name: str, options: dict, max_top1_drop: float | None = None,
                      reads_budget: bool = False) -> str | None:
    """Which option makes ``target_name``'s build measure accuracy on the evaluation set
    (``-O ...:max_drop``, ``sensitivity=true``, or the recipe's ``max_top1_drop`` for a target that
    searches it: ``reads_budget``), or None. Such a build needs a real evaluation set (--eval):
    the pipeline refuses to run it on seeded noise, and the matrix passes the recipe's set to it."""
    if options.get("max_drop") is not None:
        return f"-O {target_name}:max_drop"
    if "sensitivity" in options and as_bool(options["sensitivity"], "sensitivity"):
        return f"-O {target_name}:sensitivity=true"
    if reads_budget and max_top1_drop is not None:
        return f"the recipe's max_top1_drop for {target_name}"
    return None


def no_evaluation_error(reason: str) -> XcitExportError:
    """The one-line refusal for a build that needs an evaluation set (:func:`evaluation_reason`)."""
    return XcitExportError(f"{reason} measures accuracy on an evaluation set, and none was given: pass --eval FOLDER "
                           f"(or --eval demo; in a recipe, [data] eval), or drop it; it never runs on seeded noise")


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
    # The ONNX has symbolic height and width (--dynamic-size); ``input_shape`` is then the export size.
    dynamic_size: bool = False
    # Every size the run evaluates at, (height, width) (--eval-sizes; TensorRT profiles span them).
    sizes: tuple[tuple[int, int], ...] = ()


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


SIZE_META = "input_size"  # artifact metadata: which input sizes the artifact takes (size_rule)


def size_rule(ctx: BuildContext) -> dict[str, Any]:
    """What input sizes an artifact built from ``ctx`` takes: its layout, the export size and, for a
    ``--dynamic-size`` artifact, the multiple height and width must be (the patch size)."""
    shape = tuple(ctx.input_shape)
    layout = "nchw" if shape[0] == 3 else "nhwc"
    h, w = (shape[1], shape[2]) if layout == "nchw" else (shape[0], shape[1])
    rule: dict[str, Any] = {"layout": layout, "height": int(h), "width": int(w), "dynamic": bool(ctx.dynamic_size)}
    if ctx.dynamic_size:
        rule["multiple"] = int(getattr(ctx.spec, "patch_size", 1) or 1)
    return rule


def check_input_size(rule: dict[str, Any] | None, x: np.ndarray, where: str = "this artifact") -> None:
    """A clear :class:`DataError` when ``x``'s height/width do not fit ``rule`` (see :func:`size_rule`).

    Every runner's ``infer`` goes through it (:class:`SizeCheckedRunner`), so a wrong size is named
    here instead of surfacing as a shape error from deep inside a runtime.
    """
    if not rule or getattr(x, "ndim", 0) != 4:
        return
    hax = 2 if rule.get("layout", "nchw") == "nchw" else 1
    h, w = int(x.shape[hax]), int(x.shape[hax + 1])
    if rule.get("dynamic"):
        m = int(rule.get("multiple", 1))
        lo = rule.get("min")
        hi = rule.get("max")
        if h % m or w % m or h < m or w < m:
            raise DataError(f"input size {h}x{w} does not fit {where}: height and width must be positive "
                            f"multiples of the patch size {m} (e.g. {max(m, h // m * m)}x{max(m, w // m * m)}); "
                            f"resize or crop the images to such a size")
        if lo and hi and not (lo[0] <= h <= hi[0] and lo[1] <= w <= hi[1]):
            raise DataError(f"input size {h}x{w} is outside {where}'s size range {lo[0]}x{lo[1]} .. {hi[0]}x{hi[1]} "
                            f"(its optimisation profile); rebuild it with --eval-sizes covering {h}x{w}")
    elif (h, w) != (rule.get("height"), rule.get("width")):
        raise DataError(f"input size {h}x{w} does not fit {where}, which was exported for "
                        f"{rule.get('height')}x{rule.get('width')} only; export with --dynamic-size for any size "
                        f"(a multiple of the patch size), or pass --input-size {h}x{w}")


class SizeCheckedRunner:
    """A runner whose ``infer`` first checks the input's height and width (:func:`check_input_size`);
    everything else is the wrapped runner's."""

    def __init__(self, runner: Any, rule: dict[str, Any], where: str):
        self._runner = runner
        self._rule = rule
        self._where = where

    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        check_input_size(self._rule, x, self._where)
        return self._runner.infer(x)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_runner":  # no recursion before __init__ (copy, pickle)
            raise AttributeError(name)
        return getattr(self._runner, name)


class _RecordSize:
    """``build`` that records the artifact's size rule in its metadata (picklable, unlike a closure)."""

    def __init__(self, build: Callable[[BuildContext], Artifact]):
        self.build = build

    def __call__(self, ctx: BuildContext) -> Artifact:
        artifact = self.build(ctx)
        rule = size_rule(ctx)
        rule.update(artifact.metadata.get(SIZE_META) or {})  # a target may add its range (TensorRT profiles)
        artifact.metadata[SIZE_META] = rule
        return artifact


class _CheckSize:
    """``load`` whose runner checks input sizes against the artifact's recorded rule."""

    def __init__(self, load: Callable[..., Runner], name: str):
        self.load = load
        self.name = name

    def __call__(self, artifact: Artifact, *args: Any, **kwargs: Any) -> Runner:
        runner = self.load(artifact, *args, **kwargs)
        rule = artifact.metadata.get(SIZE_META)
        if not rule or isinstance(runner, SizeCheckedRunner):
            return runner
        return SizeCheckedRunner(runner, rule, f"the {self.name} artifact '{artifact.path.name}'")


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
    # Requests in flight for the multi-stream and offline scenarios (xcit_export/evaluate/scenarios.py):
    # ``pool(artifact, x, streams=..., threads=..., **options)`` -> a pool running ``x`` with the
    # backend's own concurrency (OpenVINO AsyncInferQueue, onnxruntime concurrent runs). None: the
    # target has no concurrent runner here (TensorRT's is device-check's, on the device).
    pool: Callable[..., Any] | None = None
    # What else decides the artifact besides its options (e.g. the CPU's ISA class for a format
    # chosen by CPU): ``options -> dict`` added to the build key, so such an artifact is not reused
    # on a machine it was not made for.
    key_inputs: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # The image sets this target's build reads (its build key includes them; xcit_export/keys.py):
    # "calibration" (whenever one is given), "evaluation" (whenever given), "evaluation:search" (only when
    # sensitivity / max_drop / the recipe's max_top1_drop ask for it). Anything else it reads must be
    # its options or key_inputs.
    reads: tuple[str, ...] = ()
    # The build searches the recipe's ``max_top1_drop`` (BuildContext.max_top1_drop) as its budget.
    reads_budget: bool = False

    def needs_evaluation(self, options: dict[str, Any], max_top1_drop: float | None = None) -> str | None:
        """What makes this build read the evaluation set (see :func:`evaluation_reason`), or None."""
        return evaluation_reason(self.name, options, max_top1_drop, self.reads_budget)

    def __post_init__(self) -> None:
        unknown = set(self.reads) - {"calibration", "evaluation", "evaluation:search"}
        if unknown or (self.needs_calibration and "calibration" not in self.reads):
            raise ValueError(f"target {self.name}: reads={self.reads!r} must list its inputs among calibration, "
                             f"evaluation, evaluation:search (and calibration when it needs calibration)")
        # Every target's artifacts record which sizes they take, and every runner checks them.
        if not isinstance(self.build, _RecordSize):
            object.__setattr__(self, "build", _RecordSize(self.build))
        if not isinstance(self.load, _CheckSize):
            object.__setattr__(self, "load", _CheckSize(self.load, self.name))

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
