"""Recipes: a TOML file naming a model, its data, export options and a matrix of targets with
accuracy thresholds and latency budgets. Read with the standard library (``tomllib``).

Everything is checked before any work starts: an unknown key, a wrong type, a latency budget
without its unit, or a combination that cannot work (an INT8 target for real weights without
calibration images, labelled thresholds without a labelled evaluation set) raises :class:`RecipeError` naming the
file and the key. Relative paths resolve against the recipe's folder.

Layout (every table optional except ``model`` and ``targets``)::

    [model]    name (one name, or a list: a matrix of models), weights, num_classes, input_size, seed
    [export]   batch, opset, output, input_format, dynamic_size (bool), eval_sizes (list: 224, "512x768")
    [data]     calib, calib_size, eval, eval_size, eval_count, class_index, on_bad_image
    [latency]  threads, warmup, iterations, min_seconds, max_seconds, batch_sweep, profile (bool),
               scenarios (["single-stream", "multi-stream", "offline"] or "all"), streams, scenario_seconds,
               sustain (seconds), mlperf_tail (bool)   # docs/latency.md
    [diagnose] explain (bool), fix (bool): where the accuracy went (docs/explain.md)
    [targets.<target-name>]
    options        = { device = "CPU", ... }          # the target's own options
    thresholds     = { min_top1_agreement = 0.99, max_top1_drop = 0.01, min_cosine = 0.999 }
    latency_budget = { median_ms = 25.0, p99_ms = 40.0 }
    device         = "jetson-orin"                    # or a list: the device kind(s) it must run on

Several models, or a ``device`` on any target, make the recipe a *matrix* of cells
(model x target x device kind), run by :mod:`xcit_export.scale.matrix` on an executor (``--executor
local|ray``; docs/ray.md). A target without ``device`` runs on any node.

``--target auto`` (``evaluate/auto.py``): ``[targets] auto = true`` makes every target that runs here a
candidate (``[targets.<name>]`` tables may still give options and thresholds), and::

    [auto]     max_top1_drop = 0.01, min_top1_agreement = 0.97, min_cosine_mean = 0.99,
               require_winner = "openvino-fp32@batch1",  # a run (and `gate --recipe`) fails otherwise
               allow_no_winner = true,   # no candidate within the budget is not a failure (default: exit 1)
               objective = "latency"     # or "throughput": offline images/s
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RecipeError, XcitExportError
from .values import as_drop

try:
    import tomllib  # novermin: tomli below where it is missing (Python 3.10)
except ImportError:  # Python 3.10: the same parser as the tomli package (a dependency there)
    import tomli as tomllib  # type: ignore[no-redef]

THRESHOLD_KEYS = {
    "min_top1_agreement": "fraction of inputs whose top-1 class equals PyTorch's (0..1)",
    "min_top5_agreement": "fraction whose PyTorch top-1 is in the target's top-5 (0..1)",
    "min_cosine": "minimum per-input cosine similarity with PyTorch's output",
    "min_cosine_mean": "mean per-input cosine similarity with PyTorch's output",
    "max_abs_error": "largest absolute difference from PyTorch's output",
    "max_rel_error": "largest per-input relative error ||target - PyTorch|| / ||PyTorch|| (sees a scale or shift)",
    "max_rel_error_mean": "mean per-input relative error",
    "max_top1_drop": "labelled top-1 drop vs PyTorch, as a fraction (0.01 = 1 point)",
    "min_top1": "labelled top-1 accuracy (0..1)",
}
BUDGET_KEYS = ("median_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms")
_LABELLED = ("max_top1_drop", "min_top1")

_TARGET_KEYS = ("options", "thresholds", "latency_budget", "device")


def _schema() -> dict[str, dict[str, tuple[type, ...]]]:
    """Every scalar table's keys and the TOML types each takes, from the run options' declaration
    (:func:`xcit_export.options.recipe_keys`): a new option with a recipe key is a new recipe key."""
    from .options import recipe_keys, toml_types

    out: dict[str, dict[str, tuple[type, ...]]] = {"model": {"name": (str, list)}}
    for table, keys in recipe_keys().items():
        out.setdefault(table, {}).update({key: toml_types(f) for key, f in keys.items()})
    return out


_SCHEMA = _schema()  # every scalar table's keys and their TOML types (tools/cli_reference.py reads it)


@dataclass
class TargetPlan:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    latency_budget: dict[str, float] = field(default_factory=dict)
    devices: list[str | None] = field(default_factory=lambda: [None])  # None: any node


@dataclass
class Recipe:
    path: Path
    raw: dict[str, Any]
    targets: list[TargetPlan]

    def section(self, name: str) -> dict[str, Any]:
        return self.raw.get(name, {})

    def models(self) -> list[str]:
        name = self.section("model")["name"]
        return [name] if isinstance(name, str) else list(name)

    @property
    def is_matrix(self) -> bool:
        """Several models or device kinds: a matrix run (:mod:`xcit_export.scale.matrix`)."""
        return len(self.models()) > 1 or any(d is not None for t in self.targets for d in t.devices)

    def thresholds(self) -> dict[str, dict]:
        return {t.name: {"thresholds": t.thresholds, "latency_budget": t.latency_budget} for t in self.targets}

    @property
    def auto(self) -> bool:
        return self.raw.get("targets", {}).get("auto") is True

    def auto_settings(self) -> dict[str, Any]:
        """The ``[auto]`` table (budget and required winner), empty unless ``[targets] auto = true``."""
        return dict(self.section("auto")) if self.auto else {}


def _err(path: Path, where: str, message: str) -> RecipeError:
    return RecipeError(f"{path}: {where}: {message}")


def _check_table(path: Path, name: str, table: Any, schema: dict[str, tuple[type, ...]]) -> None:
    if not isinstance(table, dict):
        raise _err(path, f"[{name}]", "must be a table")
    for key, value in table.items():
        if key not in schema:
            import difflib

            close = difflib.get_close_matches(key, schema, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise _err(path, f"[{name}] {key}", f"unknown key{hint}; allowed: {', '.join(schema)}")
        types = schema[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types)
            raise _err(path, f"[{name}] {key}", f"must be {want}, got {type(value).__name__} {value!r}")


def _parse_table(path: Path, name: str, table: dict) -> None:
    """Each value through its option's parser (ranges, choices, sizes), before any work."""
    from .errors import OptionError
    from .options import recipe_keys

    fields = recipe_keys().get(name, {})
    for key, value in table.items():
        if key in fields and fields[key].metadata["opt"].parse is not None:
            try:
                fields[key].metadata["opt"].parse(value, key)
            except OptionError as exc:
                raise _err(path, f"[{name}] {key}", str(exc)) from None


def _number(path: Path, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _err(path, where, f"must be a number, got {value!r}")
    return float(value)


def _budget(path: Path, target: str, table: Any) -> dict[str, float]:
    where = f"[targets.{target}.latency_budget]"
    if not isinstance(table, dict):
        raise _err(path, where, "must be a table like { median_ms = 25.0 }")
    out = {}
    for key, value in table.items():
        if key not in BUDGET_KEYS:
            raise _err(path, f"{where} {key}", f"unknown budget; budgets are in milliseconds and named "
                                              f"{', '.join(BUDGET_KEYS)} (e.g. median_ms = 25.0, not median = \"25ms\")")
        if isinstance(value, str):
            raise _err(path, f"{where} {key}", f"must be a number of milliseconds, got the string {value!r}; "
                                              f"write {key} = 25.0")
        number = _number(path, f"{where} {key}", value)
        if number <= 0:
            raise _err(path, f"{where} {key}", f"must be a positive number of milliseconds, got {value!r}")
        out[key] = number
    return out


def _model_names(path: Path, value: Any) -> list[str]:
    from .errors import UnknownModelError
    from .models.zoo import get_spec

    names = [value] if isinstance(value, str) else value
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise _err(path, "[model] name", f"must be a model name or a list of distinct names, got {value!r}")
    for n in names:
        try:
            get_spec(n)
        except UnknownModelError as exc:
            raise _err(path, "[model] name", str(exc)) from None
    return names


def _devices(path: Path, target: str, value: Any) -> list[str | None]:
    """``device = "kind"`` or a list of kinds -> the kinds (``[None]``: any node)."""
    from .values import device_kind

    if value is None:
        return [None]
    kinds = [value] if isinstance(value, str) else value
    if not isinstance(kinds, list) or not kinds or len(set(map(str, kinds))) != len(kinds):
        raise _err(path, f"[targets.{target}] device", f"must be a device kind or a list of distinct kinds, "
                                                       f"e.g. \"jetson-orin\"; got {value!r}")
    for kind in kinds:
        try:
            device_kind(kind)
        except XcitExportError as exc:
            raise _err(path, f"[targets.{target}] device", str(exc)) from None
    return list(kinds)


def _thresholds(path: Path, target: str, table: Any) -> dict[str, float]:
    where = f"[targets.{target}.thresholds]"
    if not isinstance(table, dict):
        raise _err(path, where, "must be a table like { min_top1_agreement = 0.99 }")
    out = {}
    for key, value in table.items():
        if key not in THRESHOLD_KEYS:
            raise _err(path, f"{where} {key}", f"unknown threshold; allowed: {', '.join(THRESHOLD_KEYS)}")
        number = _number(path, f"{where} {key}", value)
        if key == "max_top1_drop":  # a fraction; 1 or more is refused as points (values.as_drop)
            try:
                as_drop(number, key)
            except XcitExportError as exc:
                raise _err(path, f"{where} {key}", str(exc)) from None
        elif key in ("max_abs_error", "max_rel_error", "max_rel_error_mean"):
            if not number >= 0:
                raise _err(path, f"{where} {key}", f"must be 0 or more ({THRESHOLD_KEYS[key]}), got {value!r}")
        elif not 0 <= number <= 1:
            raise _err(path, f"{where} {key}", f"is a fraction between 0 and 1 ({THRESHOLD_KEYS[key]}), got {value!r}")
        out[key] = number
    return out


def load_recipe(path: str | Path) -> Recipe:
    """Parse and check a recipe; nothing is built."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"recipe '{path}' does not exist; see recipes/ for examples") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe '{path}' cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"recipe '{path}' is not valid TOML: {exc}") from None
    schema_of = _SCHEMA
    allowed = set(schema_of) | {"targets"}
    for key in raw:
        if key not in allowed:
            raise _err(path, key, f"unknown table or key; allowed: {', '.join(sorted(allowed))}")
    for name, schema in schema_of.items():
        if name in raw:
            _check_table(path, name, raw[name], schema)
            _parse_table(path, name, raw[name])
    if "name" not in raw.get("model", {}):
        raise _err(path, "[model] name", "is required (a name from 'xcit-export list-models')")
    _model_names(path, raw["model"]["name"])
    targets_raw = raw.get("targets")
    if not isinstance(targets_raw, dict) or not targets_raw:
        raise _err(path, "[targets]", "list at least one target as a [targets.<name>] table")
    targets_raw = dict(targets_raw)
    auto = targets_raw.pop("auto", None)
    if auto is not None and not isinstance(auto, bool):
        raise _err(path, "[targets] auto", f"must be true or false, got {auto!r}")
    if "auto" in raw and not auto:
        raise _err(path, "[auto]", "sets the --target auto budget; add auto = true under [targets]")
    if not targets_raw and not auto:
        raise _err(path, "[targets]", "list at least one target as a [targets.<name>] table, or set auto = true")

    from .targets import get_target

    plans = []
    for name, body in targets_raw.items():
        if not isinstance(body, dict):
            raise _err(path, f"[targets.{name}]", "must be a table")
        for key in body:
            if key not in _TARGET_KEYS:
                raise _err(path, f"[targets.{name}] {key}", f"unknown key; allowed: {', '.join(_TARGET_KEYS)}")
        try:
            target = get_target(name)
            options = body.get("options", {})
            if not isinstance(options, dict):
                raise _err(path, f"[targets.{name}] options", "must be a table")
            options = target.parse_options(options)  # every value parsed before any work
        except RecipeError:
            raise
        except XcitExportError as exc:
            raise _err(path, f"[targets.{name}]", str(exc)) from None
        plans.append(TargetPlan(name, dict(options), _thresholds(path, name, body.get("thresholds", {})),
                                _budget(path, name, body.get("latency_budget", {})),
                                _devices(path, name, body.get("device"))))
    recipe = Recipe(path=path, raw=raw, targets=plans)
    _check_combinations(recipe)
    return recipe


def _check_combinations(recipe: Recipe) -> None:
    from .targets import get_target

    path = recipe.path
    data = recipe.section("data")
    export = recipe.section("export")
    labelled = "eval" in data
    classifies = export.get("output", "logits") == "logits" and recipe.section("model").get("num_classes", 1) != 0
    for plan in recipe.targets:
        weights = recipe.section("model").get("weights", "random")
        if get_target(plan.name).needs_calibration and "calib" not in data and weights not in ("random", "demo"):
            # random/demo weights calibrate on the bundled demo set by default (pipeline.py)
            raise _err(path, f"[targets.{plan.name}]", f"needs calibration images for weights '{weights}'; "
                                                       f"set [data] calib")
        for key in plan.thresholds:
            if key in _LABELLED and not labelled:
                raise _err(path, f"[targets.{plan.name}.thresholds] {key}",
                           "needs a labelled evaluation set; set [data] eval")
            if key.endswith("agreement") or key in _LABELLED:
                if not classifies:
                    raise _err(path, f"[targets.{plan.name}.thresholds] {key}",
                               "needs class scores, but the recipe exports no logits; use min_cosine")
    sweep = recipe.section("latency").get("batch_sweep", [])
    if sweep and "batch" in export and any(b != export["batch"] for b in sweep):
        raise _err(path, "[latency] batch_sweep", f"sweeps batch sizes {sweep}, but [export] batch = "
                                                  f"{export['batch']} is static; drop the sweep or the static batch")


def _resolve(recipe: Recipe, value: str | None, keywords: tuple[str, ...] = ()) -> str | None:
    """Paths in a recipe are relative to the recipe's folder (keywords like 'demo' stay as they are)."""
    if value is None or value in keywords or value.split(":")[0] in keywords:
        return value
    p = Path(value)
    return str(p if p.is_absolute() else (recipe.path.parent / p))


def to_run_options(recipe: Recipe, out: Path | None = None, rebuild: bool = False, wait: bool = True,
                   model_name: str | None = None):
    """The :class:`~xcit_export.options.RunOptions` a recipe describes (for ``model_name``, which a
    recipe listing several models must give): every declared recipe key, paths resolved against
    the recipe's folder, the targets' options and thresholds, ``[auto]``'s budget."""
    from .options import RunOptions, recipe_keys

    names = recipe.models()
    if model_name is None:
        if len(names) > 1:
            raise _err(recipe.path, "[model] name", f"lists {len(names)} models: run the recipe as a matrix "
                                                    f"(xcit-export --recipe {recipe.path} --executor local)")
        model_name = names[0]
    given: dict[str, Any] = {}
    for table, keys in recipe_keys().items():
        section = recipe.auto_settings() if table == "auto" else recipe.section(table)
        for key, f in keys.items():
            if key in section:
                path_words = f.metadata["opt"].path
                value = section[key]
                given[f.name] = value if path_words is None else _resolve(recipe, value, path_words)
    return RunOptions(model_name, ("auto",) if recipe.auto else tuple(t.name for t in recipe.targets),
                      target_options={t.name: t.options for t in recipe.targets}, thresholds=recipe.thresholds(),
                      out=out or Path("out") / recipe.path.stem, rebuild=rebuild, wait=wait, **given)
