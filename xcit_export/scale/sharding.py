"""Where evaluation and timing run: the task functions of the one engine, and shards of a set.

Every run (a single run on the local executor, a recipe matrix locally or on Ray) evaluates and
times its cells through these functions (:mod:`xcit_export.engine.cells` builds the tasks):

* :func:`evaluate_shard`: one streaming pass (:func:`xcit_export.evaluate.stream.evaluate_stream`)
  over positions ``lo..hi`` of an evaluation set, decoded in parallel, through the reference and
  every cell's runner, reduced to addable counts. The reference is the PyTorch model itself (run in
  the same pass: a single run, the local executor) or its outputs for those positions, computed by
  :func:`reference_shard` on a node with PyTorch (Ray, where a device node has none);
* :func:`measure_cell`: one cell's latency (and sweep, and per-operator profile) with only its
  runner loaded, on a node held alone; :func:`measure_reference`: PyTorch's.

Two rules make a sharded result *identical* to the unsharded one, not merely close:

1. Shards start on evaluation-batch boundaries (:func:`shard_ranges`), and
   :meth:`xcit_export.data.sets.ImageSet.stream` decodes index-aligned batches, so every input
   passes through PyTorch and the runtime in the same batch as in one pass over the whole set.
2. Shards return *counts* (:class:`~xcit_export.evaluate.counts.AccuracyCounts`): correct top-1/top-5,
   agreements, the number of inputs, exact sums (as :class:`fractions.Fraction`) of per-input cosines
   and absolute errors, minima and maxima. Adding counts is exact and order-free; averaging per-shard
   percentages is neither, so it is never done.

The task functions run on workers. They import PyTorch only for the reference, so a device node
that only evaluates and times artifacts needs the ``device-check`` dependencies (numpy, Pillow, its
runtime), not PyTorch. Artifacts travel as a folder path (the local executor) or as bytes
(:func:`pack_artifact`, through Ray's object store).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import XcitExportError
from ..evaluate.validate import EVAL_BATCH


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


@dataclass
class CellRunner:
    """What a task needs to open one cell's artifact: the entry's name, the registered target, the
    artifact (a folder path, or a :func:`pack_artifact` dict), its parsed options, and the batch its
    runner is fed in during evaluation (a static-batch artifact's batch; else :data:`~xcit_export.evaluate.validate.EVAL_BATCH`),
    and whether its batch is static (the offline scenario then searches no other batch)."""

    name: str
    target: str
    artifact: Any
    options: dict
    batch: int = EVAL_BATCH
    static: bool = False


@contextlib.contextmanager
def opened_artifact(ref: Any):
    """The :class:`~xcit_export.targets.base.Artifact` of ``ref``: a folder here, or unpacked into a
    temporary folder for the length of the block."""
    from ..targets import Artifact

    if type(ref).__name__ == "ObjectRef":  # Ray resolves a task's top-level arguments, not those in a CellRunner
        import ray

        ref = ray.get(ref)
    if not isinstance(ref, dict):
        yield Artifact.from_dir(Path(ref))
        return
    with tempfile.TemporaryDirectory(prefix="xcit-cell-") as tmp:
        yield _unpack(ref, Path(tmp))


def _formatted(batches, input_format: str, pp):
    """Batches in the deployed input format (``nchw`` as decoded; others through models.deploy)."""
    for x, y in batches:
        if input_format != "nchw":
            from ..models.deploy import to_input_format  # imports PyTorch: only for other input formats

            x = to_input_format(x, input_format, pp)
        yield x, y


class _Replay:
    """The reference's outputs for a shard, computed elsewhere, handed out batch by batch in order
    (``evaluate_stream`` calls it once per batch; a padded last chunk gets its last row repeated)."""

    def __init__(self, outputs: dict):
        self.outputs = outputs["outputs"]
        self.at = 0
        self.real = 0  # rows of the current batch that are inputs (the rest is padding)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        n = min(self.real, len(x))
        out = [o[self.at:self.at + n] for o in self.outputs]
        self.at += n
        self.real -= n
        if n < len(x):
            out = [np.concatenate([o, np.repeat(o[-1:], len(x) - n, axis=0)]) for o in out]
        return out

    def feed(self, batches):
        for x, y in batches:
            self.real = len(x)
            yield x, y


# --------------------------------------------------------------------------------------------
# Task functions (run on workers)
# --------------------------------------------------------------------------------------------

def reference_shard(model, source, start: int, stop: int, batch: int, threads: int, input_format: str,
                    description: str = "the evaluation inputs") -> dict:
    """PyTorch outputs for positions ``start..stop`` of ``source`` (an ImageSet), checked: a
    non-finite reference raises :class:`~xcit_export.errors.BrokenReferenceError` here, where the
    model is, as in a single run."""
    from ..evaluate.validate import check_reference, run_in_batches, torch_infer

    infer = torch_infer(model, threads)
    outs: list[list[np.ndarray]] = []
    labels: list[np.ndarray] = []
    for x, y in _formatted(source.stream(batch, workers=max(1, threads), start=start, stop=stop), input_format,
                           source.pp):
        out = run_in_batches(infer, x, batch)
        check_reference(out, model.output_names, model, description)
        outs.append(out)
        if y is not None:
            labels.append(y)
    return {"outputs": [np.concatenate(parts) for parts in zip(*outs)],
            "labels": np.concatenate(labels) if labels else None, "skipped": list(source.skipped)}


def _open_runners(cells: list[CellRunner], threads: int, stack: contextlib.ExitStack) -> list:
    """A StreamTarget per cell, its runner opened (a cell whose runner fails to open carries the error)."""
    from ..evaluate.stream import StreamTarget
    from ..targets import get_target

    streamed = []
    for cell in cells:
        st = StreamTarget(cell.name, lambda x: [], cell.batch)
        streamed.append(st)
        try:
            artifact = stack.enter_context(opened_artifact(cell.artifact))
            runner = get_target(cell.target).load(artifact, threads=threads, **cell.options)
        except XcitExportError as exc:
            st.error = str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - a backend crash: this cell fails, the others go on
            st.error, st.traceback = f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=8)
            continue
        stack.callback(runner.close)
        st.infer = runner.infer
    return streamed


def evaluate_shard(reference, source, start: int, stop: int, batch: int, cells: list[CellRunner],
                   output_names: list[str], classify: bool, threads: int, input_format: str,
                   description: str = "the evaluation inputs", progress=None, cache=None) -> dict:
    """One streaming pass over positions ``start..stop`` of ``source`` through the reference (a
    DeployModel run here, or :func:`reference_shard`'s outputs for these positions) and every cell's
    runner (all open together, closed before anything is timed). Returns the pass's
    :class:`~xcit_export.evaluate.stream.StreamResult`, where each cell's counts or error are under
    its name, the images skipped, and the node.

    ``cache`` (``(root, key)``, a pass over the whole set with the model here): the reference's
    outputs are read from :mod:`xcit_export.evaluate.reference_cache` when cached, else computed at
    the reference's own batch (the set is then streamed in chunks of a multiple of ``batch`` at least
    that large, so each cell still sees whole batches of its own) and cached when the pass ends."""
    from ..console import stepper
    from ..data.sets import DecodeStats, default_decode_workers
    from ..evaluate.stream import evaluate_stream
    from ..evaluate.validate import check_reference, torch_infer

    say = progress or (lambda message: None)
    stats = DecodeStats()
    workers = min(default_decode_workers(), max(1, threads))
    check, cached, chunk = None, None, batch
    if isinstance(reference, dict):
        replay = _Replay(reference)
        infer = replay
    else:
        infer = torch_infer(reference, threads)
        check = lambda ref: check_reference(ref, output_names, reference, description)  # noqa: E731
        if cache is not None:
            from ..evaluate.reference_cache import CachedReference

            infer = cached = CachedReference(cache[0], cache[1], infer, output_names, progress=say)
            chunk = batch * -(-cached.batch // batch)
    batches = _formatted(source.stream(chunk, workers=workers, stats=stats, start=start, stop=stop), input_format,
                         source.pp)
    if isinstance(reference, dict):
        batches = replay.feed(batches)
    total = stop - start
    with contextlib.ExitStack() as stack:
        streamed = _open_runners(cells, threads, stack)
        live = [st for st in streamed if st.error is None]
        say(f"Evaluation: streaming {total} inputs through PyTorch and {len(live)} target(s) ({workers} decoding "
            f"threads)")
        batches = _counted(batches, stepper(say, "evaluation: PyTorch and every target"), total)
        try:
            result = evaluate_stream(batches, infer, None if cached else batch, live, output_names, classify, stats,
                                     say, total=total, check_reference=check)
        except BaseException:
            if cached is not None:
                cached.abort()
            raise
        if cached is not None:
            result.throughput["reference_cache"] = cached.finish()
    for st in streamed:
        st.infer = None  # the runner is closed, and its objects (an OpenVINO model) do not travel back from a node
    result.targets = streamed
    return {"result": result, "skipped": list(source.skipped), "warnings": list(source.warnings),
            "node": socket.gethostname()}


def _counted(batches, step, total: int):
    """``batches`` as they are, telling ``step(done, total)`` (a progress bar) as each one is consumed."""
    if step is None:
        yield from batches
        return
    done = 0
    step(0, total)
    for x, y in batches:
        yield x, y
        done += len(x)  # the consumer asked for the next batch: this one went through every runner
        step(done, total)


def _sweep(infer, head: np.ndarray, batches, latency, say) -> list[dict]:
    """Latency at each batch size of ``batches`` on the first images (``head``), resized to each."""
    from ..evaluate.validate import measure_latency

    rows = []
    for b in batches:
        say(f"latency at batch {b}")
        xb = np.ascontiguousarray(np.resize(head, (b, *head.shape[1:])))
        rows.append(measure_latency(infer, xb, latency).to_dict())
    return rows


OFFLINE_BATCHES = (1, 8)  # the batches a dynamic-batch artifact's offline search tries (a static one: its own)


def measure_cell(cell: CellRunner, x: np.ndarray, latency, threads: int, sweep=(), head=None,
                 profile: bool = False, progress=None, scenarios=None) -> dict:
    """Load one cell's artifact here and time it with only its runner loaded (the caller holds this
    node alone): load time, threads, device, latency, the batch sweep of a dynamic-batch artifact,
    memory; then, with ``profile``, the per-operator breakdown on a separately opened model (the
    runner closed by then, so its figure is untouched); then, with ``scenarios``
    (:class:`~xcit_export.evaluate.scenarios.ScenarioOptions`), the cell's scenarios on its own
    runner and request pool, with this node's energy and clocks (:func:`_scenarios`)."""
    from ..console import latency_runs
    from ..evaluate.profiling import profile_error
    from ..evaluate.validate import measure_latency, rss_mb
    from ..fingerprint import device_fingerprint
    from ..targets import get_target

    target = get_target(cell.target)
    say = progress or (lambda message: None)
    out: dict[str, Any] = {"node": socket.gethostname(), "pid": os.getpid(), "fingerprint": device_fingerprint()}
    with opened_artifact(cell.artifact) as artifact:
        rss_before = rss_mb()
        t0 = time.perf_counter()
        runner = target.load(artifact, threads=threads, **cell.options)
        out["load_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        try:
            out.update(threads=runner.threads, device=runner.device)
            for key in ("inference_precision", "shape_mode"):
                if getattr(runner, key, None):
                    out[key] = getattr(runner, key)
            if getattr(runner, "measures_latency", True):
                say(f"{cell.name}: measuring latency")
                timed = latency_runs(say, f"{cell.name}: latency runs", runner.infer, latency)
                out["latency"] = measure_latency(timed, np.array(x, order="C"), latency).to_dict()
                if sweep and artifact.metadata.get("batch", "dynamic") == "dynamic":
                    out["latency_sweep"] = _sweep(runner.infer, head, sweep, latency, lambda m: say(f"{cell.name}: {m}"))
            out["memory_mb"] = round(rss_mb() - rss_before, 1)
        finally:
            runner.close()
        if profile and target.profile is not None and "latency" in out:
            say(f"{cell.name}: per-operator profile")
            try:
                out["op_profile"] = target.profile(artifact, np.ascontiguousarray(x), threads=threads, **cell.options)
            except Exception as exc:  # a profiler failure costs the breakdown, never the cell's result
                out["op_profile_error"] = profile_error(exc)
        if scenarios is not None and "latency" in out:
            try:
                out["scenarios"] = _scenarios(scenarios, target, artifact, cell, x, threads, out["latency"], say)
            except Exception as exc:  # noqa: BLE001 - a scenario that cannot run costs its figures, never the cell
                from ..evaluate.scenarios import KEYS

                out["scenarios"] = {KEYS[s]: {"error": f"{type(exc).__name__}: {exc}"} for s in scenarios.scenarios}
    return out


def _scenarios(options, target, artifact, cell: CellRunner, x: np.ndarray, threads: int, latency: dict, say) -> dict:
    """``--scenario``: the cell's scenarios (:func:`xcit_export.evaluate.scenarios.run_target`) after
    its latency figure and profile: single-stream, the target's request pool for multi-stream and
    offline (a dynamic-batch artifact's offline search also tries :data:`OFFLINE_BATCHES`), energy
    from this node's meter where it has one (RAPL, tegrastats) and its clocks and temperatures
    around each sustained run."""
    from ..device import energy, sensors
    from ..evaluate.scenarios import run_target

    pool = ((lambda xb, n: target.pool(artifact, xb, streams=n, threads=threads, **cell.options))
            if target.pool else None)
    meter, no_energy = energy.source()
    return run_target(options, lambda: target.load(artifact, threads=threads, **cell.options), pool,
                      np.ascontiguousarray(x), () if cell.static else OFFLINE_BATCHES, threads, latency=latency,
                      meter=meter, snapshot=sensors.snapshot, progress=say, label=cell.name, energy_note=no_energy)


def measure_reference(model, x: np.ndarray, latency, threads: int, sweep=(), head=None, batch1: bool = False,
                      progress=None) -> dict:
    """PyTorch eager's latency on ``x`` (and the batch sweep on ``head``; with ``batch1``, also at
    batch 1, what ``--target auto``'s batch-1 variants are compared with)."""
    from ..console import latency_runs
    from ..evaluate.validate import measure_latency, torch_infer

    say = progress or (lambda message: None)
    infer = torch_infer(model, threads)
    say("Latency: PyTorch eager")
    stats = measure_latency(latency_runs(say, "PyTorch eager latency runs", infer, latency), np.array(x, order="C"),
                            latency)
    out: dict[str, Any] = {"latency": stats.to_dict(), "threads": threads}
    if sweep:
        out["latency_sweep"] = _sweep(infer, head, sweep, latency, lambda m: say(f"PyTorch eager: {m}"))
    if batch1:
        out["batch1_median_ms"] = stats.median_ms if stats.batch == 1 else \
            measure_latency(infer, np.ascontiguousarray(x[:1]), latency).median_ms
    return out
