"""Sharded evaluation: split an evaluation set into index ranges, evaluate each anywhere, add up.

Two rules make a sharded result *identical* to the unsharded one, not merely close:

1. Shards start on evaluation-batch boundaries (:func:`shard_ranges`), and
   :meth:`xcit_export.data.sets.ImageSet.iter_batches` decodes index-aligned batches, so every input
   passes through PyTorch and the runtime in the same batch as in one pass over the whole set.
2. Shards return *counts* (:class:`~xcit_export.evaluate.counts.AccuracyCounts`): correct top-1/top-5, agreements, the number
   of inputs, exact sums (as :class:`fractions.Fraction`) of per-input cosines and absolute errors,
   minima and maxima. Adding counts is exact and order-free; averaging per-shard percentages is
   neither, so it is never done.

The task functions (:func:`reference_shard`, :func:`accuracy_shard`, :func:`latency_probe`) run
on workers. They import PyTorch only for the reference, so a device node that only evaluates and
times artifacts needs the ``device-check`` dependencies (numpy, Pillow, its runtime), not PyTorch.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import XcitExportError
from ..evaluate.counts import AccuracyCounts


def shard_ranges(count: int, shards: int, batch: int) -> list[tuple[int, int]]:
    """``count`` positions in at most ``shards`` contiguous ranges that start on multiples of ``batch``."""
    if shards < 1:
        raise XcitExportError(f"--shards must be a positive number, got {shards}")
    batches = -(-count // batch)
    shards = min(shards, max(batches, 1))
    out, lo = [], 0
    for s in range(shards):
        hi = min(count, ((s + 1) * batches // shards) * batch)
        if hi > lo:
            out.append((lo, hi))
        lo = hi
    return out


# --------------------------------------------------------------------------------------------
# Artifacts travel as bytes (Ray's object store, or in-process for the local executor)
# --------------------------------------------------------------------------------------------

def pack_artifact(artifact) -> dict:
    """An artifact's files (and its ``artifact.json``) as bytes, to ship to the node that runs it."""
    from ..targets.base import ARTIFACT_META

    folder = artifact.path.parent
    names = [f.relative_to(folder).as_posix() for f in artifact.files] + [ARTIFACT_META]
    return {"target": artifact.target, "key": artifact.metadata.get("build_key"),
            "files": {name: (folder / name).read_bytes() for name in dict.fromkeys(names)}}


def _unpack(pack: dict, root: Path):
    from ..targets import Artifact

    for name, blob in pack["files"].items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    return Artifact.from_dir(root)


def _batches(source, batch: int, start: int, stop: int, input_format: str, pp):
    for x, y in source.iter_batches(batch, start, stop):
        if input_format != "nchw":
            from ..models.deploy import to_input_format  # imports PyTorch: only for other input formats

            x = to_input_format(x, input_format, pp)
        yield x, y


def _run(infer, x: np.ndarray, batch: int) -> list[np.ndarray]:
    from ..evaluate.validate import run_in_batches

    return run_in_batches(infer, x, batch)


# --------------------------------------------------------------------------------------------
# Task functions (run on workers)
# --------------------------------------------------------------------------------------------

def reference_shard(model, source, start: int, stop: int, batch: int, threads: int, input_format: str) -> dict:
    """PyTorch outputs for positions ``start..stop`` of ``source`` (an ImageSet), decoded per batch."""
    from ..evaluate.validate import torch_infer

    infer = torch_infer(model, threads)
    outs: list[list[np.ndarray]] = []
    labels: list[np.ndarray] = []
    for x, y in _batches(source, batch, start, stop, input_format, source.pp):
        outs.append(_run(infer, x, batch))
        if y is not None:
            labels.append(y)
    return {"outputs": [np.concatenate(parts) for parts in zip(*outs)],
            "labels": np.concatenate(labels) if labels else None, "skipped": list(source.skipped)}


def accuracy_shard(pack: dict, target_name: str, options: dict, source, start: int, stop: int, batch: int,
                   threads: int, input_format: str, reference: dict, output_names: list[str],
                   classify: bool) -> dict:
    """Counts of one target on one shard against the reference's outputs for the same shard."""
    from ..targets import get_target

    target = get_target(target_name)
    with tempfile.TemporaryDirectory(prefix="xcit-cell-") as tmp:
        runner = target.load(_unpack(pack, Path(tmp)), threads=threads, **options)
        try:
            outs: list[list[np.ndarray]] = []
            for x, _ in _batches(source, batch, start, stop, input_format, source.pp):
                outs.append(_run(runner.infer, x, batch))
        finally:
            runner.close()
    outputs = [np.concatenate(parts) for parts in zip(*outs)]
    labels = reference["labels"]
    counts = {name: AccuracyCounts.of(o, r, labels if i == 0 else None, classify=classify)
              for i, (name, o, r) in enumerate(zip(output_names, outputs, reference["outputs"]))}
    return {"counts": counts, "node": socket.gethostname()}


def latency_probe(pack: dict, target_name: str, options: dict, x: np.ndarray, latency, threads: int) -> dict:
    """Load the artifact here and time it (the caller holds this node alone while it runs)."""
    from ..fingerprint import device_fingerprint
    from ..targets import get_target
    from ..evaluate.validate import measure_latency, rss_mb

    target = get_target(target_name)
    result: dict[str, Any] = {"node": socket.gethostname(), "pid": os.getpid(), "fingerprint": device_fingerprint()}
    with tempfile.TemporaryDirectory(prefix="xcit-cell-") as tmp:
        artifact = _unpack(pack, Path(tmp))
        rss_before = rss_mb()
        t0 = time.perf_counter()
        runner = target.load(artifact, threads=threads, **options)
        result["load_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        try:
            result.update(threads=runner.threads, device=runner.device)
            if getattr(runner, "measures_latency", True):
                result["latency"] = measure_latency(runner.infer, np.array(x, order="C"), latency).to_dict()  # a writeable copy, once: Ray hands out read-only arrays
            result["memory_mb"] = round(rss_mb() - rss_before, 1)
        finally:
            runner.close()
    return result
