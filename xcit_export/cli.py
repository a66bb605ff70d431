"""The ``xcit-export`` command line: thin wrappers that parse options and call one library function.

``xcit-export --model M --target T`` runs the pipeline; sub-commands list models and targets.
Errors derived from :class:`XcitExportError` are printed as one line (no traceback), exit 1.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click
from rich.console import Console

from .errors import XcitExportError

console = Console(stderr=True, log_path=False)


def _fail_cleanly(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except XcitExportError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(1)

    return wrapper


def _parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = value.lower().replace(",", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a size; use 256 or 256x320 (height x width)") from None
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2:
        raise click.BadParameter(f"'{value}' is not a size; use 256 or 256x320 (height x width)")
    return dims[0], dims[1]


def _split_targets(values: tuple[str, ...]) -> list[str]:
    from .targets import all_targets

    names: list[str] = []
    for v in values:
        for name in v.split(","):
            name = name.strip()
            if name == "all":
                names.extend(all_targets())
            elif name:
                names.append(name)
    return list(dict.fromkeys(names))


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
@click.option("--model", "-m", help="Zoo model name, e.g. xcit_nano_12_p16_224 (see list-models).")
@click.option("--target", "-t", "targets", multiple=True,
              help="Target(s): repeat or comma-separate; 'all' for every registered target.")
@click.option("--weights", "-w", default="random", show_default=True,
              help="'random' (seeded), 'pretrained' (timm hub download), or a checkpoint path (.pth/.safetensors, "
                   "timm or official facebookresearch/xcit format).")
@click.option("--seed", default=0, show_default=True, help="Seed for random weights and evaluation inputs.")
@click.option("--num-classes", type=int, help="Classifier classes (default: the zoo's 1000; 0 = feature extractor).")
@click.option("--input-size", help="Input size HxW or S (multiple of the patch size), e.g. 256.")
@click.option("--batch", type=int, help="Export a static batch N (default: dynamic batch).")
@click.option("--output", "output", type=click.Choice(["logits", "embedding", "tokens", "features"]),
              default="logits", show_default=True,
              help="What the graph returns: class logits, pooled embedding, all tokens, or 4 detection feature maps.")
@click.option("--input-format", type=click.Choice(["nchw", "nhwc", "nhwc-uint8", "nhwc-pm1"]), default="nchw",
              show_default=True,
              help="Graph input: normalised float NCHW/NHWC, raw uint8 NHWC (normalisation in the graph), or "
                   "float NHWC in [-1, 1] (TF Hub convention).")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 18; >= 17).")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Output folder (default: out/<model>).")
@click.option("--threads", type=int, help="Threads for every runner and PyTorch (default: all cores).")
@click.option("--eval-count", default=32, show_default=True, help="Seeded inputs to compare when no --eval set.")
@click.option("--warmup", default=10, show_default=True, help="Untimed warm-up inferences.")
@click.option("--iterations", default=50, show_default=True, help="Minimum timed inferences.")
@click.option("--min-seconds", default=0.0, show_default=True, help="Minimum timed duration (seconds).")
@click.option("--device", help="Inference device for targets that choose one (OpenVINO: CPU, GPU, NPU, AUTO).")
@click.option("--hint", type=click.Choice(["latency", "throughput"]),
              help="Performance hint for targets that take one (OpenVINO).")
@click.option("--option", "-O", "raw_options", multiple=True, metavar="[TARGET:]KEY=VALUE",
              help="A target option, e.g. -O openvino-int8:preset=mixed; see list-targets for each target's.")
@click.option("--rebuild", is_flag=True, help="Rebuild artifacts even when an identical one exists.")
@click.pass_context
@_fail_cleanly
def main(ctx, model, targets, weights, seed, num_classes, input_size, batch, output, input_format, opset, out, threads, eval_count,
         warmup, iterations, min_seconds, device, hint, raw_options, rebuild):
    """Export XCiT classifiers to edge runtimes and validate them against PyTorch.

    Example: xcit-export --model xcit_nano_12_p16_224 --target onnxruntime-fp32 --weights random
    """
    if ctx.invoked_subcommand is not None:
        return
    if not model or not targets:
        raise click.UsageError("give --model and --target (or a sub-command; see --help)")
    from . import export as export_mod
    from .pipeline import RunConfig, distribute_options, run
    from .report import markdown_table
    from .validate import LatencyOptions

    target_names = _split_targets(targets)
    general, specific = _parse_options(raw_options)
    if device:
        general["device"] = device
    if hint:
        general["hint"] = hint
    config = RunConfig(
        model=model, targets=target_names, target_options=distribute_options(target_names, general, specific), out_dir=out or Path("out") / model, weights=weights,
        seed=seed, num_classes=num_classes, input_size=_parse_size(input_size), batch=batch,
        opset=opset or export_mod.DEFAULT_OPSET, threads=threads, eval_count=eval_count,
        latency=LatencyOptions(warmup=warmup, iterations=iterations, min_seconds=min_seconds),
        output=output, input_format=input_format, rebuild=rebuild)
    with console.status("starting") as status:
        report = run(config, progress=lambda msg: (status.update(msg), console.log(msg)))
    click.echo(markdown_table(report))
    click.echo(f"report: {config.out_dir / 'report.json'}")
    if any(t["status"] == "failed" for t in report["targets"]):
        sys.exit(1)


@main.command("list-models")
def list_models():
    """Every model in the zoo, with its preprocessing."""
    from .zoo import MODELS

    for spec in MODELS.values():
        pp = spec.preprocessing
        click.echo(f"{spec.name:26s} {pp.input_size[0]}x{pp.input_size[1]}  crop {pp.crop_pct}  "
                   f"{pp.interpolation}  {spec.description}")


@main.command("list-targets")
def list_targets():
    """Every registered target, whether its libraries are installed, and where it was verified."""
    from .targets import all_targets

    for t in all_targets().values():
        missing = t.missing_requirements()
        state = "ready" if not missing else f"needs {', '.join(missing)}"
        click.echo(f"{t.name:22s} {state:28s} {t.description}")
        for key, help_text in t.options.items():
            click.echo(f"{'':24s}-O {t.name}:{key}=...  {help_text}")


if __name__ == "__main__":
    main()
