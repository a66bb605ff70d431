"""``xcit-export plant-fault``: a checkpoint with a fault planted in one block (:mod:`.faults`), to
see the debugger name it (docs/explain.md's worked example)."""

from __future__ import annotations

from pathlib import Path

import click

from ..device.cli import _fail_cleanly


@click.command("plant-fault")
@click.argument("kind", type=click.Choice(["outlier", "fp16-overflow", "nan"]))
@click.option("--block", type=click.IntRange(min=0), required=True, help="The block (blocks.N) to plant it in.")
@click.option("--out", "-o", "out", type=click.Path(path_type=Path), required=True,
              help="The .safetensors checkpoint to write (read it back with --weights FILE).")
@click.option("--model", "-m", default="xcit_nano_12_p16_224", show_default=True, help="Zoo model name.")
@click.option("--weights", "-w", default="demo", show_default=True, help="The weights to plant into.")
@click.option("--factor", type=float, help="outlier: the channel's scale (default 100); fp16-overflow: the "
                                           "query rows' scale (default 1e4).")
@click.option("--branch", type=click.Choice(["mlp", "attn", "local_mp"]),
              help="outlier: the branch whose input gets the outlier (default mlp; local_mp reaches every "
                   "INT8 backend, docs/explain.md).")
@_fail_cleanly
def plant_fault(kind, block, out, model, weights, factor, branch):
    """Write a checkpoint of MODEL with fault KIND planted in one block (docs/explain.md)."""
    from .faults import write_planted

    record = write_planted(kind, block, out, model=model, weights=weights, factor=factor, branch=branch)
    click.echo(f"planted {record['fault']} in {record['module']} ({', '.join(record['planted'])}): {out}")
