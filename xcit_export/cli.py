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


def _parse_value(text: str):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _parse_options(raw: tuple[str, ...]) -> tuple[dict, dict[str, dict]]:
    general: dict = {}
    specific: dict[str, dict] = {}
    for item in raw:
        head, eq, value = item.partition("=")
        if not eq or not head:
            raise click.BadParameter(f"'{item}' is not KEY=VALUE or TARGET:KEY=VALUE", param_hint="--option")
        target, colon, key = head.rpartition(":")
        (specific.setdefault(target, {}) if colon else general)[key] = _parse_value(value)
    return general, specific


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="xcit-export", message="%(prog)s %(version)s")
@click.option("--model", "-m", help="Zoo model name, e.g. xcit_nano_12_p16_224 (see list-models).")
@click.option("--target", "-t", "targets", multiple=True,
              help="Target(s): repeat or comma-separate; 'all' for every registered target; 'auto' (alone) to "
                   "try every target that runs here and recommend the fastest within the accuracy budget.")
@click.option("--weights", "-w", default="random", show_default=True,
              help="'random' (seeded), 'demo' (bundled fixture), 'pretrained' (timm's weights through the Hugging Face "
                   "cache; HF_HUB_OFFLINE/HF_ENDPOINT apply), or a checkpoint path (.pth/.safetensors, timm or "
                   "official facebookresearch/xcit format).")
@click.option("--seed", default=0, show_default=True, help="Seed for random weights and evaluation inputs.")
@click.option("--num-classes", type=int, help="Classifier classes (default: the zoo's 1000; 0 = feature extractor).")
@click.option("--input-size", help="Input size HxW or S (multiple of the patch size), e.g. 256.")
@click.option("--batch", type=int, help="Export a static batch N (default: dynamic batch).")
@click.option("--dynamic-size", is_flag=True,
              help="Symbolic height and width: one ONNX/artifact for any size that is a multiple of the patch size "
                   "(docs/dynamic-size.md).")
@click.option("--eval-sizes", help="Validate and time at each size, e.g. 224,384,512x768,800x1344 (needs --dynamic-size).")
@click.option("--output", "output", type=click.Choice(["logits", "embedding", "tokens", "features"]),
              default="logits", show_default=True,
              help="What the graph returns: class logits, pooled embedding, all tokens, or 4 detection feature maps.")
@click.option("--input-format", type=click.Choice(["nchw", "nhwc", "nhwc-uint8", "nhwc-pm1"]), default="nchw",
              show_default=True,
              help="Graph input: normalised float NCHW/NHWC, raw uint8 NHWC (normalisation in the graph), or "
                   "float NHWC in [-1, 1] (TF Hub convention).")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 18; >= 17).")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Output folder (default: out/<model>).")
@click.option("--threads", type=click.IntRange(min=1),
              help="Threads for every runner and PyTorch, 1 or more (default: all cores).")
@click.option("--calib", help="Calibration images: ImageFolder/flat folder, .txt list, .npy/.npz, or 'demo'.")
@click.option("--calib-size", default=300, show_default=True, help="Calibration images drawn (seeded) from --calib.")
@click.option("--eval", "eval_source", help="Labelled evaluation images: ImageFolder tree, .npz with x/y, or 'demo'.")
@click.option("--eval-size", type=int, help="Evaluation images drawn (seeded) from --eval (default: all).")
@click.option("--class-index", type=click.Path(), help="Folder name -> class index file (JSON or txt, ImageNet style).")
@click.option("--on-bad-image", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="An unreadable image: stop naming it, or skip it and count it in the report.")
@click.option("--eval-count", default=32, show_default=True, help="Seeded inputs to compare when no --eval set.")
@click.option("--warmup", default=10, show_default=True, help="Untimed warm-up inferences.")
@click.option("--iterations", default=50, show_default=True, help="Minimum timed inferences.")
@click.option("--min-seconds", default=0.0, show_default=True, help="Minimum timed duration (seconds).")
@click.option("--max-seconds", type=float,
              help="Stop the timed loop after this long even if --iterations/--min-seconds are not met (default: "
                   "30 s, only when neither asks for more than its default).")
@click.option("--device", help="Inference device for targets that choose one (OpenVINO: CPU, GPU, NPU, AUTO).")
@click.option("--hint", type=click.Choice(["latency", "throughput"]),
              help="Performance hint for targets that take one (OpenVINO).")
@click.option("--option", "-O", "raw_options", multiple=True, metavar="[TARGET:]KEY=VALUE",
              help="A target option, e.g. -O openvino-int8:preset=mixed; see list-targets for each target's.")
@click.option("--recipe", type=click.Path(path_type=Path),
              help="Run a recipe (recipes/*.toml): model, data, targets, thresholds. Only --out, --rebuild, --no-wait and the "
                   "matrix options (--executor, --ray-address, --shards) combine with it.")
@click.option("--rebuild", is_flag=True, help="Rebuild artifacts even when an identical one exists.")
@click.option("--no-wait", is_flag=True,
              help="Fail at once if another run is writing to the output folder (default: wait for it).")
@click.option("--max-top1-drop", type=float, default=0.01, show_default=True,
              help="--target auto: largest labelled top-1 drop vs PyTorch a candidate may have (0.01 = 1 point).")
@click.option("--min-top1-agreement", type=float, default=0.97, show_default=True,
              help="--target auto: smallest top-1 agreement with PyTorch a candidate may have.")
@click.option("--min-cosine-mean", type=float, default=0.99, show_default=True,
              help="--target auto: smallest mean cosine with PyTorch where it stands in (no labels/no logits).")
@click.option("--require-winner", help="--target auto: exit 1 unless this candidate is recommended, "
                                        "e.g. openvino-fp32@batch1.")
@click.option("--scenario", "scenario", metavar="LIST",
              help="Also run these scenarios per target: single-stream, multi-stream, offline (comma-separated, or "
                   "all); docs/latency.md.")
@click.option("--streams", type=click.IntRange(min=1), help="Concurrent streams of the multi-stream scenario (default 4).")
@click.option("--scenario-seconds", type=float,
              help="Seconds of a multi-stream run and of the offline figure (default 2).")
@click.option("--sustain", type=float, metavar="SECONDS",
              help="Run each scenario this long and judge it stable, drifting or noisy (default scenario: "
                   "single-stream).")
@click.option("--mlperf-tail", is_flag=True,
              help="MLPerf's rule for the tail: latency scenarios run at least 600 s and report LoadGen's "
                   "early-stopping estimate of p90 (single-stream) and p99 (multi-stream).")
@click.option("--objective", type=click.Choice(["latency", "throughput"]), default="latency", show_default=True,
              help="--target auto: rank by median latency per image, or by offline images/s.")
@click.option("--profile/--no-profile", "op_profile", default=True, show_default=True,
              help="Per-operator-type latency breakdown from each runtime's profiler (a separate pass).")
@click.option("--executor", type=click.Choice(["local", "ray"]),
              help="Run the recipe's model x target x device matrix here, serially (local), or on Ray (docs/ray.md).")
@click.option("--ray-address", help="Ray cluster to join, e.g. HEAD:6379 (default: start a local Ray here).")
@click.option("--shards", type=click.IntRange(min=1), help="Split each evaluation set into N shards (default: local 1, ray: the cluster's CPUs).")
@click.option("--quiet", "-q", is_flag=True, help="No progress; only the results table and errors (CI logs).")
@click.option("--verbose", "-v", is_flag=True,
              help="Also every threshold check, the INT8 details and each per-op profile's correction story.")
@click.pass_context
@_fail_cleanly
def main(ctx, model, targets, weights, seed, num_classes, input_size, batch, dynamic_size, eval_sizes, output, input_format, opset, out, threads,
         calib, calib_size, eval_source, eval_size, class_index, on_bad_image, eval_count,
         warmup, iterations, min_seconds, max_seconds, device, hint, raw_options, recipe, rebuild, no_wait, max_top1_drop,
         min_top1_agreement, min_cosine_mean, require_winner, scenario, streams, scenario_seconds, sustain, mlperf_tail,
         objective, op_profile, executor, ray_address, shards, quiet, verbose):
    """Export XCiT classifiers to edge runtimes and validate them against PyTorch.

    Example: xcit-export --model xcit_nano_12_p16_224 --target onnxruntime-fp32 --weights random
    """
    if ctx.invoked_subcommand is not None:
        return
    from . import api
    from .errors import UsageError

    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose do not combine; pick one")
    shown = {"quiet", "verbose"}
    if recipe is not None:
        given = [p for p in ctx.params if p not in ("recipe", "out", "rebuild", "no_wait", "executor", "ray_address",
                                                     "shards", *shown)
                 and ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"--recipe sets the run; drop {', '.join('--' + g.replace('_', '-') for g in given)} "
                                   f"(or edit the recipe)")
        from .recipe import load_recipe

        loaded = load_recipe(recipe)
        if executor or ray_address or shards is not None or loaded.is_matrix:
            _run_matrix(loaded, executor or "local", ray_address, out, rebuild, shards, wait=not no_wait, quiet=quiet)
            return
        _run_and_print(lambda progress: api.run_recipe(recipe, out=out, rebuild=rebuild, wait=not no_wait,
                                                       progress=progress), quiet, verbose)
        return
    if executor or ray_address or shards is not None:
        raise click.UsageError("--executor, --ray-address and --shards run a recipe's matrix; give --recipe")
    if not model or not targets:
        raise click.UsageError("give --model and --target, or --recipe (or a sub-command; see --help)")

    auto_flags = [f"--{p.replace('_', '-')}" for p in ("max_top1_drop", "min_top1_agreement", "min_cosine_mean",
                                                        "require_winner", "objective")
                  if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE]
    general, specific = _parse_options(raw_options)
    options = dict(
        weights=weights, seed=seed, num_classes=num_classes, input_size=input_size, batch=batch, output=output,
        input_format=input_format, opset=opset, out=out, threads=threads, dynamic_size=dynamic_size,
        eval_sizes=eval_sizes, calib=calib, calib_size=calib_size,
        eval=eval_source, eval_size=eval_size, class_index=class_index, on_bad_image=on_bad_image,
        eval_count=eval_count, warmup=warmup, iterations=iterations, min_seconds=min_seconds, max_seconds=max_seconds, device=device,
        hint=hint, options=general, target_options=specific, rebuild=rebuild, wait=not no_wait, profile=op_profile,
        scenarios=scenario, streams=streams, scenario_seconds=scenario_seconds, sustain=sustain,
        mlperf_tail=mlperf_tail)
    # The accuracy budget's defaults are the CLI's; only the options given count as "given for auto".
    budget = dict(max_top1_drop=max_top1_drop, min_top1_agreement=min_top1_agreement,
                  min_cosine_mean=min_cosine_mean, require_winner=require_winner, objective=objective)
    if "auto" not in [t.strip() for t in ",".join(targets).split(",")]:
        if auto_flags:
            raise click.UsageError(f"{', '.join(auto_flags)} only apply to --target auto")
        budget = {}
    try:
        _run_and_print(lambda progress: api.run(model, list(targets), **options, **budget, progress=progress),
                       quiet, verbose)
    except UsageError as exc:  # options that do not combine: a usage error, exit 2, as click's own
        raise click.UsageError(str(exc)) from None


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
    if any(c["status"] == "failed" or c.get("passed") is False for c in report["cells"]):
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
            for key, help_text in t.options.items():
                click.echo(f"{'':22s}-O {t.name}:{key}=...  {help_text}")


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
    merged = merge_reports([read_report(p) for p in reports], list(labels) or None)
    ensure_writable_dir(out)
    write_json_atomic(out / "merged.json", merged)
    write_text_atomic(out / "merged.md", merged_markdown(merged))
    write_html(merged, out / "merged.html")
    click.echo(merged_markdown(merged))


main.add_command(_bundle_cmd)
main.add_command(_device_check_cmd)


if __name__ == "__main__":
    main()
