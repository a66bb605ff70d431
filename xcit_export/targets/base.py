"""What every target provides: ``build(ctx) -> Artifact`` and ``load(artifact, ...) -> Runner``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from ..errors import ArtifactError, DataError, OptionError, XcitExportError
from ..io import write_json_atomic
from ..values import as_bool, as_choice, as_drop, as_int, as_list, parse_size

ARTIFACT_META = "artifact.json"

# --------------------------------------------------------------------------------------------
# Target options: declared typed, parsed once (before any work), canonical in build keys
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """One ``-O TARGET:name=value`` option of a target.

    ``parse(value, name)`` turns what a user wrote (a string from the CLI, a TOML value, a Python
    value) into the one canonical value the build, the runner, the profiler and the build key
    receive, and accepts its own output unchanged; a value it cannot read raises
    :class:`~xcit_export.errors.OptionError`. ``default`` is the canonical value when the option is
    not given (None: the build decides, and ``help`` says how). ``example`` is a valid value other
    than the default (``list-targets --options`` shows it; tests set every option to it).
    """

    name: str
    parse: Callable[[Any, str], Any]
    default: Any = None
    help: str = ""
    example: Any = None


class Boolean:
    """true/false, yes/no, on/off, 1/0 (``values.as_bool``)."""

    def __call__(self, value: Any, name: str) -> bool:
        return as_bool(value, name)


class Whole:
    """A whole number within [minimum, maximum] (``values.as_int``)."""

    def __init__(self, minimum: int = 1, maximum: int | None = None):
        self.minimum, self.maximum = minimum, maximum

    def __call__(self, value: Any, name: str) -> int | None:
        return as_int(value, name, self.minimum, self.maximum)


class Choice:
    """One of a few words, compared case-insensitively; canonical in lower case."""

    def __init__(self, *choices: str):
        self.choices = choices

    def __call__(self, value: Any, name: str) -> str:
        return as_choice(value, name, self.choices)


class Words:
    """A list of names: ``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (``values.as_list``)."""

    def __init__(self, non_empty: bool = False):
        self.non_empty = non_empty

    def __call__(self, value: Any, name: str) -> list:
        out = as_list(value)
        if self.non_empty and not out:
            raise OptionError(f"option {name} is empty: give at least one name, e.g. {name}=MatMul,Conv")
        return out


class Drop:
    """A top-1 drop budget as a fraction (0.01 = 1 point; ``values.as_drop``)."""

    def __call__(self, value: Any, name: str) -> float | None:
        return as_drop(value, name)


class HeightWidth:
    """A size ``384`` or ``512x768`` -> ``[height, width]`` (``values.parse_size``)."""

    def __call__(self, value: Any, name: str) -> list:
        return list(parse_size(value, f"option {name}"))


class Text:
    """Any text (a file path, a name), kept as written."""

    def __call__(self, value: Any, name: str) -> str:
        return str(value)


# Options of the Q/DQ INT8 targets' sensitivity analysis and accuracy-budget search
# (xcit_export/quantize/sensitivity.py). Data only, here so the device-side modules can list them without
# importing the analysis.
SEARCH_OPTIONS = (
    Option("sensitivity", Boolean(), False, "measure each layer group quantized alone on the evaluation set",
           example=True),
    Option("max_drop", Drop(), None, "accuracy budget: largest top-1 drop as a fraction (0.01 = 1 point); keeps the "
                                     "most damaging layer groups in higher precision until it holds (default: the "
                                     "recipe's max_top1_drop, else none)", example=0.02),
    Option("search_images", Whole(1), None, "evaluation images used by sensitivity and max_drop (default: all)",
           example=64),
)


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
        """Bytes of what is deployed: every file but the ``support_files`` the metadata names (e.g.
        TensorRT's golden data for device-check), which are listed and hashed like the others."""
        support = set(self.metadata.get("support_files") or ())
        return sum(f.stat().st_size for f in self.files if f.exists() and f.name not in support)

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


def parse_target_options(target: str, declared: Mapping[str, Option], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every option of ``declared`` as its canonical value (see :meth:`Target.parse_options`)."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        accepted = ", ".join(sorted(declared)) or "none"
        raise OptionError(f"target {target} does not take option(s) {', '.join(unknown)} (it accepts: {accepted})")
    out: dict[str, Any] = {}
    for name, option in declared.items():
        value = given.get(name)
        try:
            out[name] = option.default if value is None else option.parse(value, name)
        except OptionError as exc:
            raise OptionError(f"target {target}: {exc}") from None
    return out


class _RecordSize:
    """``build`` that gets its options parsed (whoever made the context) and records the artifact's
    size rule in its metadata (picklable, unlike a closure)."""

    def __init__(self, build: Callable[[BuildContext], Artifact], name: str, options: Mapping[str, Option]):
        self.build = build
        self.name = name
        self.options = options

    def __call__(self, ctx: BuildContext) -> Artifact:
        import dataclasses

        ctx = dataclasses.replace(ctx, options=parse_target_options(self.name, self.options, ctx.options))
        artifact = self.build(ctx)
        rule = size_rule(ctx)
        rule.update(artifact.metadata.get(SIZE_META) or {})  # a target may add its range (TensorRT profiles)
        artifact.metadata[SIZE_META] = rule
        return artifact


def _typed(name: str, declared: Mapping[str, Option], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` of a load or profile call with the target's options parsed (the others as given)."""
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in declared}
    return {**kwargs, **parse_target_options(name, declared, options)}


class _CheckSize:
    """``load`` whose options are parsed and whose runner checks input sizes against the artifact's
    recorded rule."""

    def __init__(self, load: Callable[..., Runner], name: str, options: Mapping[str, Option]):
        self.load = load
        self.name = name
        self.options = options

    def __call__(self, artifact: Artifact, *args: Any, **kwargs: Any) -> Runner:
        runner = self.load(artifact, *args, **_typed(self.name, self.options, kwargs))
        rule = artifact.metadata.get(SIZE_META)
        if not rule or isinstance(runner, SizeCheckedRunner):
            return runner
        return SizeCheckedRunner(runner, rule, f"the {self.name} artifact '{artifact.path.name}'")


class _ParsedProfile:
    """``profile`` whose options are parsed."""

    def __init__(self, profile: Callable[..., dict], name: str, options: Mapping[str, Option]):
        self.profile = profile
        self.name = name
        self.options = options

    def __call__(self, artifact: Artifact, *args: Any, **kwargs: Any) -> dict:
        return self.profile(artifact, *args, **_typed(self.name, self.options, kwargs))


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
    # Target-specific options this target accepts (name -> :class:`Option`; registered as a sequence of
    # Options). Anything else is rejected, and every value parsed, before work starts
    # (:meth:`parse_options`), so a misspelt, misplaced or malformed option never goes silently unused.
    options: Mapping[str, Option] = field(default_factory=dict)
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
    # Raises when this machine cannot serve ``options`` at all (OpenVINO: ``--device GPU`` with no such
    # device), so a run stops before the export instead of after it (:meth:`check_here`).
    preflight: Callable[[dict[str, Any]], None] | None = None

    def needs_evaluation(self, options: dict[str, Any], max_top1_drop: float | None = None) -> str | None:
        """What makes this build read the evaluation set (see :func:`evaluation_reason`), or None."""
        return evaluation_reason(self.name, options, max_top1_drop, self.reads_budget)

    def __post_init__(self) -> None:
        if not isinstance(self.options, Mapping):
            object.__setattr__(self, "options", {o.name: o for o in self.options})
        unknown = set(self.reads) - {"calibration", "evaluation", "evaluation:search"}
        if unknown or (self.needs_calibration and "calibration" not in self.reads):
            raise ValueError(f"target {self.name}: reads={self.reads!r} must list its inputs among calibration, "
                             f"evaluation, evaluation:search (and calibration when it needs calibration)")
        # Every target's artifacts record which sizes they take, and every runner checks them.
        # Every build, load and profile gets its options parsed; every artifact records which sizes it
        # takes, and every runner checks them.
        if not isinstance(self.build, _RecordSize):
            object.__setattr__(self, "build", _RecordSize(self.build, self.name, self.options))
        if not isinstance(self.load, _CheckSize):
            object.__setattr__(self, "load", _CheckSize(self.load, self.name, self.options))
        if self.profile is not None and not isinstance(self.profile, _ParsedProfile):
            object.__setattr__(self, "profile", _ParsedProfile(self.profile, self.name, self.options))

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Unknown option names or values that do not parse raise :class:`OptionError`."""
        self.parse_options(options)

    def parse_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every option of this target as its canonical value: the given ones parsed, the others
        their defaults. Unknown names and values that do not parse raise
        :class:`~xcit_export.errors.OptionError` naming the target. Parsing canonical values again
        changes nothing, so equivalent spellings (``yes``, ``true``, ``True``) give one build key."""
        return parse_target_options(self.name, self.options, options)

    def check_here(self, options: dict[str, Any]) -> None:
        """Refuse, before any work, options this machine cannot serve (a run on this machine only: a
        recipe's matrix cell is checked on the node that runs it, when it loads)."""
        if self.preflight is not None and not self.missing_requirements():
            self.preflight(options)

    def missing_requirements(self) -> list[str]:
        import importlib.util

        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def why_not_here(self) -> str | None:
        return self.runs_here() if self.runs_here else None
