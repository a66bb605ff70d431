"""Stage: one streaming pass over the evaluation set through PyTorch and every loaded target.

A run (:mod:`xcit_export.engine`) never holds the evaluation set or anyone's outputs
whole. Each batch, as it comes out of the decoding threads
(:meth:`xcit_export.data.sets.ImageSet.stream`), goes through the PyTorch reference and then through
every target's runner; each target's outputs are reduced against the reference's at once to
:class:`~xcit_export.evaluate.counts.AccuracyCounts`, the same addable counts the sharded matrix
adds up across shards, and the batch is dropped. What stays is a few integers and exact sums per
target and output, so memory does not grow with the set.

Why one pass with every runner open, rather than one pass per target: the statistics compare each
target's output with the reference's *for the same input*; a pass per target would have to keep
the reference's outputs (a cosine needs the whole output: 4 KB an image for logits, 150 KB for
nano's tokens) or decode the set again per target, or cache the decoded set on disk (0.6 MB an
image: 31 GB for ImageNet val). Runners of one model sit in memory together for the pass (a few
hundred MB at most for XCiT); latency is measured afterwards, per target, with only that runner
loaded (:mod:`xcit_export.pipeline`), so timings stay undisturbed.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from ..errors import XcitExportError
from .counts import AccuracyCounts
from ..verdict import returned_outputs_problem
from .validate import run_in_batches


@dataclass
class StreamTarget:
    """One runner in the pass: its name in the report, ``infer`` and the batch it is fed in."""

    name: str
    infer: Callable[[np.ndarray], list[np.ndarray]]
    batch: int
    counts: dict[str, AccuracyCounts] = field(default_factory=dict)  # by output name
    seconds: float = 0.0  # inside infer
    error: str | None = None  # set when the runner failed during the pass (it leaves the pass)
    traceback: str | None = None

    def accuracy(self, output_names: list[str]) -> dict[str, dict]:
        """The report's accuracy entry per output (the keys of ``compare_outputs``)."""
        return {name: self.counts[name].to_dict() for name in output_names if name in self.counts}


@dataclass
class StreamResult:
    count: int  # inputs compared
    reference_accuracy: dict | None  # top1/top5/labelled_count of PyTorch against the labels
    targets: list[StreamTarget]
    throughput: dict  # images/s of each stage, for the report
    reference_constant: list[str] = field(default_factory=list)  # outputs the same for every input
    # the addable counts behind reference_accuracy and reference_constant (shards add them up)
    reference_counts: AccuracyCounts = field(default_factory=AccuracyCounts)
    reference_self: dict[str, AccuracyCounts] = field(default_factory=dict)


def _rate(images: int, seconds: float) -> dict:
    return {"images": images, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 1) if seconds > 0 else None}


def evaluate_stream(batches: Iterable[tuple[np.ndarray, np.ndarray | None]],
                    reference: Callable[[np.ndarray], list[np.ndarray]], batch: int | None, targets: list[StreamTarget],
                    output_names: list[str], classify: bool, decode_stats=None,
                    progress: Callable[[str], None] = lambda msg: None, total: int | None = None,
                    check_reference: Callable[[list[np.ndarray]], object] | None = None) -> StreamResult:
    """Run every batch of ``batches`` (inputs in the deployed format, labels or None) through
    ``reference`` and each target, and add up the comparison counts.

    ``batch`` is the reference's batch (None: ``reference`` takes each batch whole and batches itself,
    as :class:`~xcit_export.evaluate.reference_cache.CachedReference` does); each target runs at its own (``StreamTarget.batch``; a
    shorter last batch is padded as :func:`~xcit_export.evaluate.validate.run_in_batches` does), so
    every input meets the same company as in a pass over the whole array. A target whose runner
    raises leaves the pass with the error recorded; the reference raising ends the run.
    ``decode_stats`` (a :class:`~xcit_export.data.sets.DecodeStats` the batches' decoder fills)
    goes into the throughput figures. ``check_reference(outputs)`` sees each batch of reference
    outputs first (validate.check_reference: a non-finite reference stops the run); the result's
    ``reference_constant`` names the outputs that are the same for every input of the set.
    """
    active = list(targets)
    ref_counts = AccuracyCounts()
    ref_self: dict[str, AccuracyCounts] = {}  # the reference against itself: is it constant over the set?
    ref_seconds = 0.0
    count = 0
    # A display that takes counts gets them per batch (pipeline._counted); a plain callable gets a
    # stage line every tenth of the set. Stage lines to a counting display would end its phase.
    notes = not hasattr(progress, "step")
    step = max(1, (total or 0) // 10)
    next_note = step
    t_start = time.perf_counter()
    for x, y in batches:
        t0 = time.perf_counter()
        ref = run_in_batches(reference, x, batch) if batch else reference(x)
        ref_seconds += time.perf_counter() - t0
        if len(ref) != len(output_names):
            raise XcitExportError(f"the PyTorch reference gave {len(ref)} outputs, expected {len(output_names)} "
                                  f"({', '.join(output_names)})")
        if check_reference is not None:
            check_reference(ref)
        for name, r in zip(output_names, ref):
            ref_self[name] = ref_self.get(name, AccuracyCounts()) + AccuracyCounts.of(r, r, classify=False)
        if y is not None and classify:
            ref_counts = ref_counts + AccuracyCounts.of(ref[0], ref[0], y, classify=True)
        for t in list(active):
            try:
                t0 = time.perf_counter()
                outs = run_in_batches(t.infer, x, t.batch)
                t.seconds += time.perf_counter() - t0
                wrong = returned_outputs_problem(len(outs), output_names)
                if wrong:  # zip() below would compare the first outputs and drop the rest unseen
                    raise XcitExportError(wrong)
                for i, (name, o, r) in enumerate(zip(output_names, outs, ref)):
                    part = AccuracyCounts.of(o, r, y if i == 0 else None, classify=classify)
                    t.counts[name] = t.counts.get(name, AccuracyCounts()) + part
            except XcitExportError as exc:
                t.error = str(exc)
                active.remove(t)
            except Exception as exc:  # a backend crash: this target fails, the others go on
                t.error = f"{type(exc).__name__}: {exc}"
                t.traceback = traceback.format_exc(limit=8)
                active.remove(t)
        count += len(x)
        if notes and total and count >= next_note and count < total:
            progress(f"Evaluation: {count}/{total} inputs")
            next_note += step
    wall = time.perf_counter() - t_start
    throughput = {"pass": _rate(count, wall), "reference": _rate(count, ref_seconds),
                  "targets": {t.name: _rate(count if t.error is None else 0, t.seconds) for t in targets}}
    if decode_stats is not None:
        throughput["decode"] = decode_stats.to_dict()
    return StreamResult(count=count, reference_accuracy=reference_accuracy(ref_counts), targets=targets,
                        throughput=throughput, reference_constant=constant_outputs_of(ref_self),
                        reference_counts=ref_counts, reference_self=ref_self)


def reference_accuracy(counts: AccuracyCounts) -> dict | None:
    """PyTorch's top-1/top-5 against the labels (None without labels)."""
    if not counts.labelled:
        return None
    acc = counts.to_dict()
    return {"top1": acc["top1"], "top5": acc["top5"], "labelled_count": acc["labelled_count"]}


def constant_outputs_of(reference_self: dict[str, AccuracyCounts]) -> list[str]:
    """The reference outputs that are the same for every input (from its counts against itself)."""
    return [name for name, c in reference_self.items() if c.to_dict()["reference_constant"]]
