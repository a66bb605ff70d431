"""Planning a run: every check that needs no work, once, before anything is built or written.

:func:`plan_run` turns :class:`~xcit_export.options.RunOptions` (each value already parsed) into a
:class:`RunPlan`: which targets (``all``, ``auto``'s candidates that run here), every target option
parsed and given to the targets that take it, the model's resolved spec, the calibration set to use,
and the options checked against each other and against this machine: ``--eval-sizes`` with
``--dynamic-size`` and the patch grid, ``auto``'s budget, a search without ``--eval``, an INT8
target without calibration images, an array evaluation set with ``--eval-sizes``, an OpenVINO
device that is not here, a checkpoint that does not exist, an output folder that cannot be
written. A run that stops here has built, written and created nothing (issue 29, item 5).

The single run, the API, a recipe and each model of a recipe matrix are planned by this one
function, once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import CheckpointError, UsageError, XcitExportError
from .options import Inputs, RunOptions

# INT8 targets with weights that are not a real model's calibrate on the bundled demo set by default.
DEFAULT_CALIB = "demo"
DEFAULT_CALIB_WEIGHTS = ("random", "demo")
DEFAULT_CALIB_NOTE = "calibrated on the bundled demo set; pass --calib with your own images for real weights"
AUTO_ONLY = ("max_top1_drop", "min_top1_agreement", "min_cosine_mean", "require_winner", "allow_no_winner",
             "candidates", "objective")
ARRAY_SUFFIXES = (".npz", ".npy")


@dataclass(frozen=True)
class RunPlan:
    """A checked run: ``options`` resolved (``targets`` the names to build, ``calib`` the set used),
    ``spec`` the model with its class count and input size, ``target_options`` every option of every
    target at its canonical value."""

    options: RunOptions
    spec: Any  # models.zoo.ModelSpec
    target_options: Mapping[str, Mapping[str, Any]]
    auto: bool = False
    budget: Any = None  # evaluate.auto.Budget, for --target auto
    left_out: Mapping[str, str] = field(default_factory=dict)  # auto: candidates not tried here, and why
    calib_default: bool = False  # INT8 calibrates on the bundled demo set (the report says so)
    scenarios: Any = None  # evaluate.scenarios.ScenarioOptions: what --scenario runs per cell (None: nothing)

    @property
    def targets(self) -> list[str]:
        return list(self.options.targets)

    @property
    def out_dir(self) -> Path:
        return self.options.out_dir

    @property
    def threads(self) -> int:
        return self.options.resolved_threads()

    def options_of(self, target: str) -> dict[str, Any]:
        return dict(self.target_options.get(target, {}))

    def max_top1_drop(self, target: str) -> float | None:
        """The recipe's ``max_top1_drop`` threshold for ``target`` (its budget search reads it)."""
        from .keys import max_top1_drop

        return max_top1_drop(self.options, target)

    def replace(self, **changes: Any) -> "RunPlan":
        """This plan with some options changed (the batch-1 variants of ``--target auto``)."""
        return dataclasses.replace(self, options=self.options.replace(**changes))


def _given(value: Any) -> bool:
    """An option left at its default says nothing (None, no candidates, a flag off; 0.0 is a value)."""
    return value is not None and value is not False and value != ()


def plan_run(options: RunOptions, inputs: Inputs | None = None, *, here: bool = True) -> RunPlan:
    """Check ``options`` (and ``inputs``, arrays handed to the run) and resolve what they leave open.

    ``here``: the targets run on this machine (a recipe matrix places cells on other nodes: the
    OpenVINO device is then not looked for here). Raises :class:`~xcit_export.errors.UsageError`
    (exit 2) for options that do not combine, other :class:`XcitExportError` for inputs that are
    not there; nothing is built, written or created.
    """
    from .targets import get_target

    inputs = inputs or Inputs()
    names, auto, budget, left_out = _targets(options)
    targets = [get_target(n) for n in names]  # unknown names fail here
    target_options = distribute_options(names, options)
    spec = _spec(options)
    resolved = options.replace(targets=tuple(names))
    _check_sizes(resolved, spec, inputs)
    resolved.latency  # --min-seconds above --max-seconds
    _refuse_search_without_data(resolved, inputs, targets, target_options)
    calib_default = _needs_default_calibration(resolved, inputs, targets)
    if calib_default:
        resolved = resolved.replace(calib=DEFAULT_CALIB)
    _check_weights(options.weights)
    if here:
        _check_devices(targets, target_options)
    scenarios = resolved.scenario_options(auto)  # --mlperf-tail without a latency scenario
    check_output_dir(resolved.out_dir)
    return RunPlan(options=resolved, spec=spec, target_options=target_options, auto=auto, budget=budget,
                   left_out=left_out, calib_default=calib_default, scenarios=scenarios if scenarios.active else None)


def _targets(options: RunOptions) -> tuple[list[str], bool, Any, dict[str, str]]:
    """The target names to build; for ``auto``, its budget and the candidates left out here."""
    from .targets import all_targets, candidates

    names: list[str] = []
    for name in options.targets:
        names.extend(all_targets() if name == "all" else [name])
    names = list(dict.fromkeys(names))
    if not names:
        raise UsageError("no target given: name one or more (list-targets), 'all', or 'auto'")
    given = [k for k in AUTO_ONLY if _given(getattr(options, k))]
    if "auto" not in names:
        if given:
            flags = ", ".join(f"{k} (--{k.replace('_', '-')})" for k in given)
            raise UsageError(f"{flags} only applies to --target auto (targets='auto')")
        return names, False, None, {}
    if names != ["auto"]:
        raise UsageError("target 'auto' picks among every target that runs here; give it alone")
    budget = options.budget()
    runnable, left_out = candidates(list(options.candidates) or None, calibration_available(options))
    return runnable, True, budget, left_out


def distribute_options(names: list[str], options: RunOptions) -> dict[str, dict[str, Any]]:
    """Per target, every option at its canonical value (:meth:`~xcit_export.targets.base.Target.parse_options`).

    ``-O KEY=VALUE`` (and ``--device``, ``--hint``) go to every selected target that takes them; one
    no selected target takes is an error rather than silently unused. ``-O TARGET:KEY=VALUE`` and
    ``target_options`` go to that target, which must be selected.
    """
    from .errors import OptionError
    from .targets import get_target

    targets = [get_target(n) for n in names]
    general: dict[str, Any] = {}
    specific: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in options.options.items():
        target, colon, name = key.rpartition(":")
        if colon:
            if target not in specific:
                raise OptionError(f"option given for target '{target}', which is not selected")
            specific[target][name] = value
        else:
            general[key] = value
    for key in ("device", "hint"):
        if getattr(options, key) is not None:
            general[key] = getattr(options, key)
    for name, given in options.target_options.items():
        if name not in specific:
            raise OptionError(f"option given for target '{name}', which is not selected")
        specific[name].update(given)
    for key, value in general.items():
        takers = [t.name for t in targets if key in t.options]
        if not takers:
            raise OptionError(f"option '{key}' is not used by any selected target ({', '.join(names)}); drop it "
                              f"or pick a target that takes it")
        for name in takers:
            specific[name].setdefault(key, value)
    return {t.name: t.parse_options(specific[t.name]) for t in targets}


def _spec(options: RunOptions) -> Any:
    from .models.weights import default_num_classes
    from .models.zoo import get_spec

    num_classes = options.num_classes
    if num_classes is None:
        num_classes = default_num_classes(options.weights, options.model)
    return get_spec(options.model).with_overrides(num_classes, options.input_size)


def _check_sizes(options: RunOptions, spec: Any, inputs: Inputs) -> None:
    """``--eval-sizes``: a ``--dynamic-size`` export, every size on the patch grid, and images to
    preprocess at each size (an array set holds one size only)."""
    if not options.eval_sizes:
        return
    from .evaluate.sizes import check_run

    try:
        check_run(options.eval_sizes, spec.patch_size, spec.name, options.dynamic_size)
    except XcitExportError as exc:  # options that do not combine: a usage error
        raise UsageError(str(exc)) from None
    source = options.eval
    tensors = inputs.eval_data is not None or bool(source and Path(source).suffix.lower() in ARRAY_SUFFIXES)
    other = [s for s in options.eval_sizes if tuple(s) != tuple(spec.preprocessing.input_size)]
    if tensors and other:  # tensors cannot be preprocessed again at another size
        what = f"--eval '{source}'" if source else "the evaluation array"
        raise UsageError(f"{what} holds tensors preprocessed at one size, which cannot be evaluated at "
                         f"{', '.join(f'{h}x{w}' for h, w in other)} (--eval-sizes); give images there (a folder, "
                         f"a .txt list or demo) or drop --eval to use seeded inputs at each size")


def calibration_available(options: RunOptions, inputs: Inputs | None = None) -> bool:
    """Whether INT8 targets can calibrate: images were given, or the weights allow the bundled set."""
    return (options.calib is not None or (inputs is not None and inputs.calib_data is not None)
            or options.weights in DEFAULT_CALIB_WEIGHTS)


def _needs_default_calibration(options: RunOptions, inputs: Inputs, targets: list) -> bool:
    """True when an INT8 target has no calibration set and the weights allow the bundled one.

    Random and demo weights calibrate on the demo set (the report says so). Real weights (a
    checkpoint, ``pretrained``) calibrated on synthetic shapes would be a trap: refuse.
    """
    needing = [t.name for t in targets if t.needs_calibration]
    if not needing or options.calib is not None or inputs.calib_data is not None:
        return False
    if not calibration_available(options):
        raise XcitExportError(f"target {needing[0]} needs calibration images: pass --calib FOLDER with images like "
                              f"those --weights {options.weights} will see (the bundled demo set is used by default "
                              f"only for random or demo weights)")
    return True


def _refuse_search_without_data(options: RunOptions, inputs: Inputs, targets: list,
                                target_options: Mapping[str, Mapping[str, Any]]) -> None:
    """Sensitivity, the budget search and NNCF accuracy control measure accuracy on the evaluation
    set: without --eval they would tune on seeded noise and report figures that mean nothing."""
    from .keys import max_top1_drop
    from .targets.base import no_evaluation_error

    if options.eval is not None or inputs.eval_data is not None:
        return
    for target in targets:
        reason = target.needs_evaluation(dict(target_options[target.name]), max_top1_drop(options, target.name))
        if reason:
            raise no_evaluation_error(reason)


def _check_weights(weights: str) -> None:
    """A checkpoint path that cannot be read (missing, a folder, a wrong suffix): the loader's own check."""
    from .models.weights import check_checkpoint_path

    check_checkpoint_path(weights)


def _check_devices(targets: list, target_options: Mapping[str, Mapping[str, Any]]) -> None:
    """What a target is asked to run on must be here (OpenVINO ``--device GPU``: each target's
    :attr:`~xcit_export.targets.base.Target.preflight`): said now, not after the export, the
    calibration and the reference."""
    for target in targets:
        try:
            target.check_here(dict(target_options[target.name]))
        except XcitExportError as exc:
            raise UsageError(f"target {target.name}: {exc}") from None


def check_output_dir(path: Path, option: str = "--out") -> None:
    """That ``path`` can be created and written, without creating it (a run refused before any work
    leaves no folder behind): an existing folder is probed with a temporary file, a missing one by
    its nearest existing parent."""
    import os
    import tempfile

    from .errors import OutputDirError

    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    problem = None
    if probe.exists() and not probe.is_dir():
        problem = f"'{probe}' is a file, not a folder"
    elif probe == path:
        try:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
                pass
        except OSError as exc:
            problem = exc.strerror or str(exc)
    elif not os.access(probe, os.W_OK | os.X_OK):
        problem = f"'{probe}' is not writable"
    if problem:
        raise OutputDirError(f"output folder '{path}' is not writable ({problem}); choose another folder with {option}")
