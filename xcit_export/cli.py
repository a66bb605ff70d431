"""The ``xcit-export`` command line: thin wrappers that parse options and call one library function.

``xcit-export --model M --target T`` runs the pipeline; sub-commands list models and targets.
Errors derived from :class:`XcitExportError` are printed as one line (no traceback), exit 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .version import __version__
from .device.cli import _fail_cleanly  # one error printer for every command
from .device.cli import bundle as _bundle_cmd
from .device.cli import device_check as _device_check_cmd


def _run_option(f) -> click.Option:
    """The ``click.Option`` of RunOptions field ``f`` (options.py declares flag, help, default, type)."""
    from .options import default_of

    opt = f.metadata["opt"]
    decls = [opt.flag + (f"/{opt.off}" if opt.off else ""), *([opt.short] if opt.short else []), f.name]
    default = default_of(f.name)
    help_text = opt.help
    if opt.default_text:  # "Export a static batch N (default: dynamic batch)."
        help_text = help_text.rstrip(".") + f" (default: {opt.default_text})."
    kwargs: dict = {"help": help_text}
    if opt.cli_type is bool:
        kwargs.update(is_flag=True, default=default, show_default=bool(opt.off))
    elif opt.multiple:
        kwargs.update(multiple=True, metavar=opt.metavar)
    else:
        kwargs["type"] = (click.Choice(opt.cli_type) if isinstance(opt.cli_type, tuple) else
                          click.Path() if opt.cli_type is Path else opt.cli_type)
        if default not in (None, (), {}) and f.name != "targets":
            kwargs.update(default=default, show_default=True)
    if opt.metavar and not opt.multiple:
        kwargs["metavar"] = opt.metavar
    return click.Option(decls, **kwargs)


def _with_run_options(command):
    """Add every RunOptions field that has a flag to ``command``, in their declared order."""
    from .options import option_fields

    after = next((i + 1 for i, p in enumerate(command.params) if p.name == "version"), 0)
    command.params[after:after] = [_run_option(f) for f in option_fields() if f.metadata["opt"].flag]
    return command


# Options of the command itself (not of a run): a recipe, its matrix, what is shown.
_RECIPE_ONLY = ("recipe", "out", "rebuild", "wait", "executor", "ray_address", "shards", "quiet", "verbose")


@_with_run_options
@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="xcit-export", message="%(prog)s %(version)s")
@click.option("--recipe", type=click.Path(path_type=Path),
              help="Run a recipe (recipes/*.toml): model, data, targets, thresholds. Only --out, --rebuild, --no-wait and the "
                   "matrix options (--executor, --ray-address, --shards) combine with it.")
@click.option("--executor", type=click.Choice(["local", "ray"]),
              help="Run the recipe's model x target x device matrix here, serially (local), or on Ray (docs/ray.md).")
@click.option("--ray-address", help="Ray cluster to join, e.g. HEAD:6379 (default: start a local Ray here).")
@click.option("--shards", type=click.IntRange(min=1), help="Split each evaluation set into N shards (default: local 1, ray: the cluster's CPUs).")
@click.option("--quiet", "-q", is_flag=True, help="No progress; only the results table and errors (CI logs).")
@click.option("--verbose", "-v", is_flag=True,
              help="Also every threshold check, the INT8 details and each per-op profile's correction story.")
@click.pass_context
@_fail_cleanly
def main(ctx, recipe, executor, ray_address, shards, quiet, verbose, **run_options):
    """Export XCiT classifiers to edge runtimes and validate them against PyTorch.

    Example: xcit-export --model xcit_nano_12_p16_224 --target onnxruntime-fp32 --weights random
    """
    if ctx.invoked_subcommand is not None:
        return
    from .errors import UsageError

    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose do not combine; pick one")
    given = [p for p in run_options if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE]
    try:
        if recipe is not None:
            _run_recipe_command(recipe, given, run_options, executor, ray_address, shards, quiet, verbose)
            return
        if executor or ray_address or shards is not None:
            raise click.UsageError("--executor, --ray-address and --shards run a recipe's matrix; give --recipe")
        _run_command(run_options, given, quiet, verbose)
    except UsageError as exc:  # options that do not parse or combine: a usage error, exit 2, as click's own
        raise click.UsageError(str(exc)) from None


def _run_command(run_options: dict, given: list[str], quiet: bool, verbose: bool) -> None:
    """``xcit-export --model M --target T ...``: every option given (or defaulted) is a RunOptions field."""
    from .options import RunOptions
    from .plan import plan_run

    if not run_options.get("model") or not run_options.get("targets"):
        raise click.UsageError("give --model and --target, or --recipe (or a sub-command; see --help)")
    options = RunOptions(**{k: v for k, v in run_options.items() if v is not None})
    plan = plan_run(options)
    _run_and_print(lambda progress: _api()._run_plan(plan, progress), quiet, verbose)


def _run_recipe_command(recipe: Path, given: list[str], run_options: dict, executor, ray_address, shards,
                        quiet: bool, verbose: bool) -> None:
    """``xcit-export --recipe R``: a one-model run, or a matrix (several models or device kinds, or an executor)."""
    from .plan import plan_run
    from .recipe import load_recipe, to_run_options

    extra = [g for g in given if g not in _RECIPE_ONLY]
    if extra:
        raise click.UsageError(f"--recipe sets the run; drop {', '.join('--' + g.replace('_', '-') for g in extra)} "
                               f"(or edit the recipe)")
    loaded = load_recipe(recipe)
    out = Path(run_options["out"]) if run_options.get("out") else None
    rebuild, wait = bool(run_options.get("rebuild")), run_options.get("wait", True)
    if executor or ray_address or shards is not None or loaded.is_matrix:
        _run_matrix(loaded, executor or "local", ray_address, out, rebuild, shards, wait=wait, quiet=quiet)
        return
    plan = plan_run(to_run_options(loaded, out=Path(out) if out else None, rebuild=rebuild, wait=wait))
    _run_and_print(lambda progress: _api()._run_plan(plan, progress), quiet, verbose)


def _api():
    from . import api

    return api


def _run_matrix(recipe, executor_name, address, out, rebuild, shards, wait: bool = True, quiet: bool = False) -> None:
    from .console import TerminalProgress, make_console
    from .scale.executor import make_executor
    from .scale.matrix import matrix_markdown, run_matrix

    out = out or Path("out") / recipe.path.stem
    executor = make_executor(executor_name, address)
    try:
        with TerminalProgress(make_console(stderr=True), quiet=quiet) as progress:
            report = run_matrix(recipe, executor, out, rebuild=rebuild, shards=shards, wait=wait, progress=progress)
    finally:
        executor.close()
    click.echo(matrix_markdown(report))
    click.echo(f"report: {out / 'matrix.json'} (also matrix.md, matrix.html)")
    from .verdict import report_passed

    if not report_passed(report):  # a cell that failed or missed its limits; an auto matrix without a winner
        sys.exit(1)


def _run_and_print(run_with, quiet: bool, verbose: bool) -> None:
    """Run (``run_with(progress)`` returns an :class:`api.Report`) with a progress display on stderr,
    print the results on stdout, exit 1 unless the report passed."""
    from .console import TerminalProgress, make_console, print_report

    with TerminalProgress(make_console(stderr=True), quiet=quiet, verbose=verbose) as progress:
        report = run_with(progress)
    print_report(report.to_dict(), make_console(), verbose=verbose, json_path=report.json_path)
    if not report.passed:
        sys.exit(1)


@main.command("list-models")
def list_models():
    """Every model in the zoo, with its preprocessing."""
    from .models.zoo import MODELS

    for spec in MODELS.values():
        pp = spec.preprocessing
        click.echo(f"{spec.name:26s} {pp.input_size[0]}x{pp.input_size[1]}  crop {pp.crop_pct}  "
                   f"{pp.interpolation}  {spec.description}")


def _option_text(value) -> str:
    """A target option's canonical value as a user would write it after ``-O name=``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


@main.command("list-targets")
@click.option("--options", "show_options", is_flag=True, help="Also list each target's -O options.")
def list_targets(show_options):
    """Every registered target, whether its libraries are installed, and its description."""
    from .targets import all_targets

    for t in all_targets().values():
        missing = t.missing_requirements()
        state = "ready" if not missing else f"needs {', '.join(missing)}"
        click.echo(f"{t.name:20s} {state:24s} {t.description}")
        if show_options:
            for key, option in t.options.items():
                default = "" if option.default is None else f" (default {_option_text(option.default)})"
                click.echo(f"{'':22s}-O {t.name}:{key}=...  {option.help}{default}")


@main.command("gate")
@click.argument("report_path", metavar="REPORT", type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path), required=True,
              help="The accepted report.json to compare with.")
@click.option("--recipe", type=click.Path(path_type=Path), help="Thresholds and latency budgets to apply too.")
@click.option("--update-baseline", is_flag=True, help="Accept REPORT as the new baseline (deliberately) and exit 0.")
@click.option("--require-winner", help="Fail unless the report's --target auto recommendation is this candidate.")
@_fail_cleanly
def gate_cmd(report_path, baseline, recipe, update_baseline, require_winner):
    """Exit 0 when every target holds against the baseline (and recipe); else one line per failure."""
    from .report.gate import gate, read_report
    from .io import write_json_atomic

    report = read_report(report_path)
    if update_baseline:
        write_json_atomic(baseline, report)
        click.echo(f"baseline updated: {baseline} <- {report_path}")
        return
    thresholds = None
    if recipe is not None:
        from .recipe import load_recipe

        loaded = load_recipe(recipe)
        thresholds = loaded.thresholds()
        require_winner = require_winner or loaded.auto_settings().get("require_winner")
    checks = gate(report, read_report(baseline), thresholds, require_winner=require_winner)
    failed = [c for c in checks if not c.ok]
    skipped = [c for c in checks if c.skipped]
    for c in skipped:
        click.echo(f"SKIP {c.line()}")
    for c in failed:
        click.echo(f"FAIL {c.line()}")
    click.echo(f"gate: {len(checks) - len(failed) - len(skipped)} passed, {len(failed)} failed, "
               f"{len(skipped)} skipped")
    if failed:
        sys.exit(1)


@main.group("report")
def report_group():
    """Work with report.json files."""


@report_group.command("merge")
@click.argument("reports", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="Folder for merged.json/.md/.html.")
@click.option("--label", "labels", multiple=True, help="Device label per report, in order (default: CPU/GPU name).")
@_fail_cleanly
def report_merge(reports, out, labels):
    """Combine reports of one model from several devices into one comparison."""
    from .errors import ReportError
    from .report.gate import read_report
    from .io import ensure_writable_dir, write_json_atomic, write_text_atomic
    from .report.document import merge_reports, merged_markdown, write_html

    if labels and len(labels) != len(reports):
        raise ReportError(f"{len(labels)} --label value(s) for {len(reports)} reports; give one per report or none")
    merged = merge_reports([read_report(p) for p in reports], list(labels) or None, [str(p) for p in reports])
    ensure_writable_dir(out)
    write_json_atomic(out / "merged.json", merged)
    write_text_atomic(out / "merged.md", merged_markdown(merged))
    write_html(merged, out / "merged.html")
    click.echo(merged_markdown(merged))


main.add_command(_bundle_cmd)
main.add_command(_device_check_cmd)


if __name__ == "__main__":
    main()
