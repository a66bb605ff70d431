"""A run's options, declared once.

:class:`RunOptions` is the one declaration of what a run (``xcit-export --model M --target T``,
``xcit_export.run``, a recipe) can be asked to do. Each field carries, in its :class:`Opt`, its
command-line flag, its help, its recipe key and the parser that turns what a user wrote into the
one canonical value (with its range); its default is the field's. From it are derived:

* the ``xcit-export`` command's options (:func:`click_options`, used by ``cli.main``);
* :func:`xcit_export.run`'s keyword arguments (its signature *is* this class's; its docstring
  lists every field's help), type-checked by mypy;
* a recipe's ``[model]``, ``[export]``, ``[data]``, ``[latency]``, ``[diagnose]`` and ``[auto]`` keys
  (:func:`recipe_keys`, read by :mod:`xcit_export.recipe`);
* which option each artifact's build key reads (:mod:`xcit_export.keys`; a field classified
  nowhere fails ``tests/test_keys.py``).

Adding an option is adding a field here. Values are parsed when a RunOptions is made, so a bad
one (``--eval-count -3``) is a usage error before anything else happens; how options combine
(``--eval-sizes`` needs ``--dynamic-size``, ``auto``'s budget only with ``--target auto``) is
checked when the run is planned (:mod:`xcit_export.plan`). Loaded inputs (image arrays, content
hashes) are not options: they live in :class:`Inputs`, never written back here.

This module stays cheap to import (no PyTorch): ``import xcit_export; xcit_export.run`` reads it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

from .errors import OptionError
from .evaluate.auto import OBJECTIVES, Budget
from .evaluate.scenarios import (DEFAULT_SECONDS, DEFAULT_STREAMS, OFFLINE, ScenarioOptions, parse_scenarios,
                                   scenario_options)
from .evaluate.validate import LatencyOptions
from .data.sets import DEFAULT_CALIB_SIZE, ON_BAD_IMAGE
from .models.zoo import INPUT_FORMATS, OUTPUTS
from .values import as_bool, as_choice, as_drop, as_float, as_fraction, as_int, as_list, parse_size, parse_sizes

# The ONNX opset: export.py says why 18 by default, and why not below 17.
DEFAULT_OPSET = 18
MIN_OPSET = 17
HINTS = ("latency", "throughput")

PathLike = Union[str, "os.PathLike[str]"]
# Stage messages (``progress("ONNX: exporting")``); an object that also has ``step(label, done, total)``
# gets counts too (:class:`xcit_export.console.Progress`, itself such a callable); True: progress bars on stderr.
ProgressArg = Union[bool, Callable[[str], None], None]


@dataclass(frozen=True)
class Opt:
    """How one :class:`RunOptions` field is written, read and explained.

    ``flag``: the command-line option (None: not on the command line), with ``short`` and, for an
    on/off pair, ``off`` (``--no-profile``); ``recipe``: ``(table, key)`` in a recipe (None: not
    in one); ``parse(value, name)``: what a user wrote -> the canonical value, raising
    :class:`~xcit_export.errors.OptionError` (None: taken as given); ``path``: a file or folder, relative
    to a recipe's folder, except the keywords listed; ``cli_type``: what the command line reads
    (``int``, ``float``, ``str``, a tuple of choices, ``bool`` for a flag); ``multiple``: repeatable;
    ``toml``: the TOML types a recipe may give (default: those of ``cli_type``; ``Path``: a file or
    folder on the command line, text in a recipe).
    """

    help: str
    flag: str | None = None
    short: str | None = None
    off: str | None = None
    recipe: tuple[str, str] | None = None
    parse: Callable[[Any, str], Any] | None = None
    path: tuple[str, ...] | None = None
    cli_type: Any = str
    multiple: bool = False
    metavar: str | None = None
    default_text: str | None = None  # the default in words, where the field's default is None
    toml: tuple[type, ...] | None = None  # what a recipe may write (default: from cli_type)


def _opt(default: Any = None, *, factory: Callable[[], Any] | None = None, **spec: Any) -> Any:
    meta = {"opt": Opt(**spec)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# -- parsers of run options (values.py holds the kinds; these name the option) -----------------------

class _Whole:
    def __init__(self, minimum: int | None = None):
        self.minimum = minimum

    def __call__(self, value: Any, name: str) -> int | None:
        return as_int(value, name, self.minimum)


class _Seconds:
    def __init__(self, above_zero: bool = False):
        self.above_zero = above_zero

    def __call__(self, value: Any, name: str) -> float | None:
        if self.above_zero:
            return as_float(value, name, above=0.0)
        return as_float(value, name, minimum=0.0)


class _Choice:
    def __init__(self, choices: Sequence[str]):
        self.choices = tuple(choices)

    def __call__(self, value: Any, name: str) -> str:
        return as_choice(value, name, self.choices)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise OptionError(f"option {name}={value!r} is not text")
    return os.fspath(value)


def _path(value: Any, name: str) -> Path:
    return Path(_text(value, name))


def _flag(value: Any, name: str) -> bool:
    return as_bool(value, name)


def _size(value: Any, name: str) -> tuple[int, int]:
    return parse_size(value, name)


def _sizes(value: Any, name: str) -> tuple[tuple[int, int], ...]:
    return parse_sizes(value, name)


def _names(value: Any, name: str) -> tuple[str, ...]:
    """Target names: repeated, comma-separated, or a list (``all``/``auto`` are resolved by the plan)."""
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        out += as_list(str(item))
    return tuple(dict.fromkeys(out))


def _batches(value: Any, name: str) -> tuple[int, ...]:
    items = [value] if isinstance(value, (int, str)) and not isinstance(value, bool) else list(value)
    return tuple(int(as_int(v, name, 1)) for b in items for v in (as_list(b) if isinstance(b, str) else [b]))


def _key_values(value: Any, name: str) -> dict[str, Any]:
    """``-O [TARGET:]KEY=VALUE`` (repeatable; a value is read as JSON where it parses: ``true``, ``8``,
    ``["MatMul"]``), or a mapping of ``[TARGET:]KEY`` to values."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    items = [value] if isinstance(value, str) else list(value)
    out: dict[str, Any] = {}
    for item in items:
        head, eq, text = str(item).partition("=")
        if not eq or not head or head.endswith(":"):
            raise OptionError(f"{name} '{item}' is not KEY=VALUE or TARGET:KEY=VALUE")
        try:
            out[head] = json.loads(text)
        except ValueError:
            out[head] = text
    return out


def _per_target(value: Any, name: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise OptionError(f"{name} must map target names to their options, e.g. "
                          f"{{\"openvino-int8\": {{\"preset\": \"mixed\"}}}}")
    return {str(k): dict(v) for k, v in value.items()}


def _scenario_names(value: Any, name: str) -> tuple[str, ...]:
    return parse_scenarios(value, name)


def _drop(value: Any, name: str) -> float | None:
    return as_drop(value, name)


def _fraction(value: Any, name: str) -> float | None:
    return as_fraction(value, name)


_LAT = LatencyOptions()
_BUDGET = Budget()


@dataclass(frozen=True)
class RunOptions:
    """Everything one run is asked to do (see the module docstring): what ``xcit-export``'s options,
    :func:`xcit_export.run`'s keyword arguments and a one-model recipe say."""

    # -- what to export --------------------------------------------------------------------------
    model: str = _opt(dataclasses.MISSING, flag="--model", short="-m", parse=_text, recipe=("model", "name"),
                      help="Zoo model name, e.g. xcit_nano_12_p16_224 (see list-models).")
    targets: str | Sequence[str] = _opt(
        ("onnxruntime-fp32",), flag="--target", short="-t", multiple=True, parse=_names,
        help="Target(s): repeat or comma-separate; 'all' for every registered target; 'auto' (alone) to try every "
             "target that runs here and recommend the fastest within the accuracy budget.")
    _: KW_ONLY
    weights: str = _opt("random", flag="--weights", short="-w", parse=_text, recipe=("model", "weights"),
                        path=("random", "pretrained", "demo"),
                        help="'random' (seeded), 'demo' (bundled fixture), 'pretrained' (timm's weights through the "
                             "Hugging Face cache; HF_HUB_OFFLINE/HF_ENDPOINT apply), or a checkpoint path "
                             "(.pth/.safetensors, timm or official facebookresearch/xcit format).")
    seed: int = _opt(0, flag="--seed", cli_type=int, parse=_Whole(0), recipe=("model", "seed"),
                     help="Seed for random weights and evaluation inputs (0 or more).")
    num_classes: int | None = _opt(flag="--num-classes", cli_type=int, parse=_Whole(0), recipe=("model", "num_classes"),
                                   default_text="the zoo's 1000",
                                   help="Classifier classes (0 = feature extractor).")
    input_size: int | str | Sequence[int] | None = _opt(
        flag="--input-size", parse=_size, recipe=("model", "input_size"), toml=(int, list), default_text="the model's",
        help="Input size HxW or S (a multiple of the patch size), e.g. 256.")
    batch: int | None = _opt(flag="--batch", cli_type=int, parse=_Whole(1), recipe=("export", "batch"),
                             default_text="dynamic batch", help="Export a static batch N.")
    dynamic_size: bool = _opt(False, flag="--dynamic-size", cli_type=bool, parse=_flag,
                              recipe=("export", "dynamic_size"),
                              help="Symbolic height and width: one ONNX/artifact for any size that is a multiple of "
                                   "the patch size (docs/dynamic-size.md).")
    eval_sizes: str | Sequence[Any] = _opt(
        (), flag="--eval-sizes", parse=_sizes, recipe=("export", "eval_sizes"), toml=(list, str),
        help="Validate and time at each size, e.g. 224,384,512x768,800x1344 (needs --dynamic-size).")
    output: str = _opt("logits", flag="--output", cli_type=OUTPUTS, parse=_Choice(OUTPUTS), recipe=("export", "output"),
                       help="What the graph returns: class logits, pooled embedding, all tokens, or 4 detection "
                            "feature maps.")
    input_format: str = _opt("nchw", flag="--input-format", cli_type=INPUT_FORMATS, parse=_Choice(INPUT_FORMATS),
                             recipe=("export", "input_format"),
                             help="Graph input: normalised float NCHW/NHWC, raw uint8 NHWC (normalisation in the "
                                  "graph), or float NHWC in [-1, 1] (TF Hub convention).")
    opset: int = _opt(DEFAULT_OPSET, flag="--opset", cli_type=int, parse=_Whole(MIN_OPSET), recipe=("export", "opset"),
                      help=f"ONNX opset ({MIN_OPSET} or more).")
    out: PathLike | None = _opt(flag="--out", short="-o", parse=_path, cli_type=Path, default_text="out/<model>",
                                help="Output folder.")
    threads: int | None = _opt(flag="--threads", cli_type=int, parse=_Whole(1), recipe=("latency", "threads"),
                               default_text="all cores", help="Threads for every runner and PyTorch, 1 or more.")
    # -- data ------------------------------------------------------------------------------------
    calib: str | None = _opt(flag="--calib", parse=_text, recipe=("data", "calib"), path=("demo",),
                             help="Calibration images: ImageFolder/flat folder, .txt list, .npy/.npz, or 'demo'.")
    calib_size: int = _opt(DEFAULT_CALIB_SIZE, flag="--calib-size", cli_type=int, parse=_Whole(1), recipe=("data", "calib_size"),
                           help="Calibration images drawn (seeded) from --calib.")
    eval: str | None = _opt(flag="--eval", parse=_text, recipe=("data", "eval"), path=("demo",),
                            help="Labelled evaluation images: ImageFolder tree, .npz with x/y, or 'demo'.")
    eval_size: int | None = _opt(flag="--eval-size", cli_type=int, parse=_Whole(1), recipe=("data", "eval_size"),
                                 default_text="all", help="Evaluation images drawn (seeded) from --eval.")
    class_index: str | None = _opt(flag="--class-index", parse=_text, recipe=("data", "class_index"), path=(),
                                   cli_type=Path,
                                   help="Folder name -> class index file (JSON or txt, ImageNet style).")
    on_bad_image: str = _opt("fail", flag="--on-bad-image", cli_type=ON_BAD_IMAGE, parse=_Choice(ON_BAD_IMAGE), recipe=("data", "on_bad_image"),
                             help="An unreadable image: stop naming it, or skip it and count it in the report.")
    eval_count: int = _opt(32, flag="--eval-count", cli_type=int, parse=_Whole(1), recipe=("data", "eval_count"),
                           help="Seeded inputs to compare when no --eval set.")
    # -- latency ---------------------------------------------------------------------------------
    warmup: int = _opt(_LAT.warmup, flag="--warmup", cli_type=int, parse=_Whole(0), recipe=("latency", "warmup"),
                       help="Untimed warm-up inferences.")
    iterations: int = _opt(_LAT.iterations, flag="--iterations", cli_type=int, parse=_Whole(1),
                           recipe=("latency", "iterations"), help="Minimum timed inferences.")
    min_seconds: float = _opt(_LAT.min_seconds, flag="--min-seconds", cli_type=float, parse=_Seconds(),
                              recipe=("latency", "min_seconds"), help="Minimum timed duration (seconds).")
    max_seconds: float | None = _opt(flag="--max-seconds", cli_type=float, parse=_Seconds(above_zero=True),
                                     recipe=("latency", "max_seconds"),
                                     default_text="30 s, only when neither asks for more than its default",
                                     help="Stop the timed loop after this long even if --iterations/--min-seconds are "
                                          "not met.")
    latency_batches: Sequence[int] = _opt((), parse=_batches, recipe=("latency", "batch_sweep"), toml=(list,),
                                          help="Also time every dynamic-batch artifact at each of these batch sizes.")
    profile: bool = _opt(True, flag="--profile", off="--no-profile", cli_type=bool, parse=_flag, recipe=("latency", "profile"),
                         help="Per-operator-type latency breakdown from each runtime's profiler (a separate pass).")
    # -- scenarios (evaluate/scenarios.py, docs/latency.md) ----------------------------------------
    scenarios: str | Sequence[str] = _opt(
        (), flag="--scenario", parse=_scenario_names, recipe=("latency", "scenarios"), toml=(list, str), metavar="LIST",
        help="Also run these scenarios per target: single-stream, multi-stream, offline (comma-separated, or all); "
             "docs/latency.md.")
    streams: int = _opt(DEFAULT_STREAMS, flag="--streams", cli_type=int, parse=_Whole(1), recipe=("latency", "streams"),
                        help="Concurrent streams of the multi-stream scenario.")
    scenario_seconds: float = _opt(DEFAULT_SECONDS, flag="--scenario-seconds", cli_type=float,
                                   parse=_Seconds(above_zero=True), recipe=("latency", "scenario_seconds"),
                                   help="Seconds of a multi-stream run and of the offline figure.")
    sustain: float | None = _opt(flag="--sustain", cli_type=float, parse=_Seconds(above_zero=True),
                                 recipe=("latency", "sustain"), metavar="SECONDS",
                                 help="Run each scenario this long and judge it stable, drifting or noisy (alone: "
                                      "single-stream).")
    mlperf_tail: bool = _opt(False, flag="--mlperf-tail", cli_type=bool, parse=_flag, recipe=("latency", "mlperf_tail"),
                             help="MLPerf's rule for the tail: latency scenarios run at least 600 s and report "
                                  "LoadGen's early-stopping estimate of p90 (single-stream) and p99 (multi-stream).")
    # -- target options --------------------------------------------------------------------------
    device: str | None = _opt(flag="--device", parse=_text,
                              help="Inference device for targets that choose one (OpenVINO: CPU, GPU, NPU, AUTO).")
    hint: str | None = _opt(flag="--hint", cli_type=HINTS, parse=_Choice(HINTS),
                            help="Performance hint for targets that take one (OpenVINO).")
    options: Mapping[str, Any] = _opt(
        factory=dict, flag="--option", short="-O", multiple=True, parse=_key_values, metavar="[TARGET:]KEY=VALUE",
        help="A target option, e.g. -O openvino-int8:preset=mixed (KEY=VALUE: every selected target that takes it); "
             "see list-targets --options for each target's.")
    target_options: Mapping[str, Mapping[str, Any]] = _opt(
        factory=dict, parse=_per_target, recipe=("targets", "options"),
        help="Per target, its options: {\"openvino-int8\": {\"preset\": \"mixed\"}} (a recipe's "
             "[targets.<name>] options).")
    thresholds: Mapping[str, Mapping[str, Any]] = _opt(
        factory=dict, recipe=("targets", "thresholds"),
        help="Per target, {\"thresholds\": {...}, \"latency_budget\": {...}} (a recipe's [targets.<name>] "
             "thresholds and latency_budget; recipe.py lists the keys).")
    # -- --target auto ---------------------------------------------------------------------------
    candidates: Sequence[str] = _opt((), parse=_names,
                                     help="--target auto: the candidates (default: every registered target).")
    max_top1_drop: float | None = _opt(flag="--max-top1-drop", cli_type=float, parse=_drop, recipe=("auto", "max_top1_drop"),
                                       default_text=str(_BUDGET.max_top1_drop),
                                       help="--target auto: largest labelled top-1 drop vs PyTorch a candidate may "
                                            "have, as a fraction (0.01 = 1 point).")
    min_top1_agreement: float | None = _opt(flag="--min-top1-agreement", cli_type=float, parse=_fraction,
                                            recipe=("auto", "min_top1_agreement"),
                                            default_text=str(_BUDGET.min_top1_agreement),
                                            help="--target auto: smallest top-1 agreement with PyTorch a candidate "
                                                 "may have.")
    min_cosine_mean: float | None = _opt(flag="--min-cosine-mean", cli_type=float, parse=_fraction,
                                         recipe=("auto", "min_cosine_mean"), default_text=str(_BUDGET.min_cosine_mean),
                                         help="--target auto: smallest mean cosine with PyTorch where it stands in "
                                              "(no labels/no logits).")
    require_winner: str | None = _opt(flag="--require-winner", parse=_text, recipe=("auto", "require_winner"),
                                      help="--target auto: exit 1 unless this candidate is recommended, e.g. "
                                           "openvino-fp32@batch1.")
    allow_no_winner: bool = _opt(False, flag="--allow-no-winner", cli_type=bool, parse=_flag,
                                 recipe=("auto", "allow_no_winner"),
                                 help="--target auto: exit 0 even when no candidate holds the accuracy budget (by "
                                      "default that exits 1).")
    # -- where the accuracy went (docs/explain.md) -------------------------------------------------
    explain: bool = _opt(False, flag="--explain", cli_type=bool, parse=_flag, recipe=("diagnose", "explain"),
                         help="Per-block error of every target against PyTorch, named by module path, and each "
                              "backend's remedy (docs/explain.md); targets that miss their accuracy limits are "
                              "explained anyway.")
    fix: bool = _opt(False, flag="--fix", cli_type=bool, parse=_flag, recipe=("diagnose", "fix"),
                     help="Rebuild every explained target with its remedy in <out>/fixed and report before and after "
                          "(implies --explain).")
    objective: str | None = _opt(flag="--objective", cli_type=OBJECTIVES, parse=_Choice(OBJECTIVES),
                                 recipe=("auto", "objective"), default_text="latency",
                                 help="--target auto: rank by median latency per image, or by offline images/s (adds "
                                      "the offline scenario).")
    # -- how to run ------------------------------------------------------------------------------
    rebuild: bool = _opt(False, flag="--rebuild", cli_type=bool, parse=_flag,
                         help="Rebuild artifacts even when an identical one exists.")
    wait: bool = _opt(True, flag="--wait", off="--no-wait", cli_type=bool, parse=_flag,
                      help="Another run is writing to the output folder: wait for it (--no-wait: fail at once).")
    progress: ProgressArg = _opt(help="None/False (silent), True (progress bars on stderr), or a callable taking "
                                      "stage messages (give it a step(label, done, total) method to get counts).")

    def __post_init__(self) -> None:
        for f in option_fields():
            opt = f.metadata["opt"]
            value = getattr(self, f.name)
            default = default_of(f.name)
            if value is None and default is not None:
                value = default  # None: the default
            if value is None or opt.parse is None or (value is default or _same(value, default)):
                object.__setattr__(self, f.name, value)
                continue
            try:
                object.__setattr__(self, f.name, opt.parse(value, opt.flag or f.name))
            except OptionError as exc:  # "option --eval-count=-3 ..." -> "--eval-count -3 ..."
                message = str(exc).replace(f"option {opt.flag}=", f"{opt.flag} ", 1)
                raise OptionError(message.replace(f"{opt.flag}=", f"{opt.flag} ", 1)) from None

    # -- derived ---------------------------------------------------------------------------------
    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else Path("out") / self.model

    @property
    def latency(self) -> LatencyOptions:
        """The timed loop's settings (checked: ``--min-seconds`` no more than ``--max-seconds``)."""
        return LatencyOptions(warmup=self.warmup, iterations=self.iterations, min_seconds=self.min_seconds,
                              max_seconds=self.max_seconds).check()

    def resolved_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    def budget(self) -> Budget:
        """--target auto's accuracy budget: the options given, :class:`Budget`'s defaults for the others."""
        given = {k: getattr(self, k) for k in ("max_top1_drop", "min_top1_agreement", "min_cosine_mean")
                 if getattr(self, k) is not None}
        return dataclasses.replace(_BUDGET, **given).check()

    @property
    def explains(self) -> bool:
        """Whether every target is explained (``--explain``, or ``--fix``, which needs the diagnosis)."""
        return bool(self.explain or self.fix)
    def scenario_options(self, auto: bool = False) -> ScenarioOptions:
        """What the scenario pass runs (:func:`~xcit_export.evaluate.scenarios.scenario_options`:
        ``--sustain`` or ``--mlperf-tail`` alone run single-stream); ``--target auto`` ranking by
        throughput adds the offline scenario. Checked (``--mlperf-tail`` needs a latency scenario)."""
        names = tuple(self.scenarios)
        if auto and self.objective == "throughput" and OFFLINE not in names:
            names = (*names, OFFLINE)
        return scenario_options(names, self.streams, self.scenario_seconds, self.sustain, self.mlperf_tail)

    def replace(self, **changes: Any) -> "RunOptions":
        return dataclasses.replace(self, **changes)


@dataclass
class Inputs:
    """What a run loaded or was handed as data, apart from its options: preprocessed NCHW arrays
    (library use and tests give them directly) and the content hashes that key the artifacts made
    from them. Filled while the run loads its image sets; never written into :class:`RunOptions`."""

    eval_data: Any = None  # (x, labels-or-None)
    eval_id: str | None = None
    calib_data: Any = None
    calib_id: str | None = None
    calib_labels: Any = None  # when the calibration set is labelled (stratified subsets)


def _same(value: Any, default: Any) -> bool:
    try:
        return type(value) is type(default) and bool(value == default)
    except Exception:  # noqa: BLE001 - arrays and the like: not a default
        return False


def option_fields() -> list[dataclasses.Field]:
    """Every declared field of :class:`RunOptions` (the ``_`` keyword-only marker aside)."""
    return [f for f in dataclasses.fields(RunOptions) if "opt" in f.metadata]


def recipe_keys() -> dict[str, dict[str, dataclasses.Field]]:
    """``{table: {key: field}}`` of every option a recipe's scalar tables may set."""
    out: dict[str, dict[str, dataclasses.Field]] = {}
    for f in option_fields():
        where = f.metadata["opt"].recipe
        if where is not None and where[0] != "targets" and where != ("model", "name"):
            out.setdefault(where[0], {})[where[1]] = f
    return out


def toml_types(f: dataclasses.Field) -> tuple[type, ...]:
    """The TOML value types a recipe may give for option ``f``."""
    opt = f.metadata["opt"]
    if opt.toml is not None:
        return opt.toml
    return {int: (int,), float: (int, float), bool: (bool,)}.get(opt.cli_type, (str,))


def default_of(name: str) -> Any:
    """The declared default of RunOptions field ``name`` (None for the required ``model``)."""
    f = next(f for f in option_fields() if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def options_doc() -> str:
    """Every option's help, for :func:`xcit_export.run`'s docstring."""
    lines = []
    for f in option_fields():
        opt = f.metadata["opt"]
        default = default_of(f.name)
        said = opt.default_text or (None if default in (None, (), {}) else repr(default))
        flag = f" ({opt.flag})" if opt.flag else ""
        lines.append(f"    {f.name}{flag}: {opt.help}" + (f" Default: {said}." if said else ""))
    return "\n".join(lines)
