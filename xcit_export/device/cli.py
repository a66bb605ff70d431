"""``xcit-export bundle`` and ``xcit-export device-check``: the Jetson/RTX device workflow.

On the host, after ``xcit-export --model M --target tensorrt-int8 --calib ...``::

    xcit-export bundle out/M/tensorrt-int8            # -> out/M/bundles/M-tensorrt-int8{,.tar.gz}

On the device, without installing xcit-export (numpy, TensorRT and cuda-python only), the bundle's
own zipapp (:mod:`xcit_export.device.app`)::

    tar xzf M-tensorrt-int8.tar.gz && cd M-tensorrt-int8 && python3 device_check.pyz .

or, where xcit-export is installed::

    xcit-export device-check M-tensorrt-int8.tar.gz   # exit status 0 only if every check passed

Both commands are thin: :mod:`xcit_export.device.bundle` does the work. They are registered on the main
group by ``cli.py`` (``main.add_command(bundle)``, ``main.add_command(device_check)``) and also run
stand-alone as ``python -m xcit_export.device.cli device-check BUNDLE``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from ..errors import XcitExportError


def _fail_cleanly(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except XcitExportError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def _say(msg: str) -> None:
    click.echo(msg, err=True)


@click.command("bundle")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--target", "-t", help="Target folder inside ARTIFACT when ARTIFACT is a run folder (out/<model>).")
@click.option("--out", "-o", "out_dir", type=click.Path(path_type=Path),
              help="Bundle folder (default: <run folder>/bundles/<model>-<target>); a .tar.gz is written beside it.")
@click.option("--golden-count", type=int, help="Golden inputs to ship (default: all the target kept).")
@click.option("--min-cosine", type=float, help="Override the cosine threshold (engine vs FP32 reference).")
@click.option("--min-top1-agreement", type=float, help="Override the top-1 agreement threshold.")
@click.option("--max-latency-ms", type=float, help="Fail device-check when the engine's median latency exceeds this.")
@click.option("--no-tarball", is_flag=True, help="Write the folder only.")
@_fail_cleanly
def bundle(artifact, target, out_dir, golden_count, min_cosine, min_top1_agreement, max_latency_ms, no_tarball):
    """Make a device bundle from a built tensorrt target folder (out/<model>/<target>)."""
    from .bundle import create_bundle, resolve_artifact_dir

    folder = resolve_artifact_dir(artifact, target)
    overrides = {"min_cosine": min_cosine, "min_top1_agreement": min_top1_agreement, "max_latency_ms": max_latency_ms}
    path = create_bundle(folder, out_dir, golden_count=golden_count, thresholds=overrides,
                         tarball=not no_tarball, progress=_say)
    click.echo(str(path))


@click.command("device-check")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path, exists=True))
@click.option("--work", "work_dir", type=click.Path(path_type=Path),
              help="Folder for the engine and the report (default: BUNDLE/device-check).")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Report file (default: <work>/report.json).")
@click.option("--require-engine", is_flag=True, help="Fail unless a TensorRT engine is built and run (no CPU fallback).")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for the onnxruntime fallback (1 or more).")
@click.option("--warmup", default=10, show_default=True, help="Untimed warm-up inferences.")
@click.option("--iterations", default=50, show_default=True, help="Timed inferences.")
@click.option("--cuda-graph", is_flag=True, help="Replay inference as a CUDA graph.")
@click.option("--profile/--no-profile", default=True, show_default=True,
              help="Per-layer-type breakdown from TensorRT's layer profiler, in a separate pass after the timing.")
@click.option("--explain", is_flag=True,
              help="Per-point error of the engine against the FP32 reference (a second engine with the points of a "
                   "bundle made from an --explain run marked as outputs; docs/explain.md).")
@click.option("--scenario", metavar="LIST", help="Also single-stream, multi-stream, offline (or all), with power from "
                                                 "tegrastats; docs/latency.md.")
@click.option("--streams", type=click.IntRange(min=1), help="Concurrent streams of the multi-stream scenario (default 4).")
@click.option("--scenario-seconds", type=float, help="Seconds of a multi-stream run and of the offline figure (default 2).")
@click.option("--sustain", type=float, metavar="SECONDS", help="Run each scenario this long and judge its stability.")
@click.option("--mlperf-tail", is_flag=True, help="MLPerf's 600 s minimum and early-stopping tail estimate.")
@_fail_cleanly
def device_check(bundle_path, work_dir, report_path, require_engine, threads, warmup, iterations, cuda_graph, profile,
                 explain, scenario, streams, scenario_seconds, sustain, mlperf_tail):
    """Verify a bundle, build its engine if possible, check the golden outputs and time it."""
    from .bundle import device_check as run_check, summary_lines
    from ..evaluate.scenarios import scenario_options

    options = scenario_options(scenario, streams, scenario_seconds, sustain, mlperf_tail)
    report = run_check(bundle_path, work_dir=work_dir, report_path=report_path, require_engine=require_engine,
                       threads=threads, warmup=warmup, iterations=iterations, cuda_graph=cuda_graph, profile=profile,
                       explain=explain, scenarios=options, progress=_say)
    for line in summary_lines(report):
        click.echo(line)
    if not report["passed"]:
        sys.exit(1)


@click.group()
def _standalone():
    """xcit-export's device commands (also available as sub-commands of xcit-export)."""


_standalone.add_command(bundle)
_standalone.add_command(device_check)

if __name__ == "__main__":
    _standalone()
