"""Stage: evaluate and time every cell of one model, at every size, on an executor.

A *cell* is a built target placed on a device kind (:class:`Placed`; a single run's cells have
none: this machine). For each evaluation size (the export size, then every other ``--eval-sizes``
size; each measured once):

1. **Evaluate.** The set is split into shards (one for a single run) on batch boundaries, and each
   shard streams once through the reference and every cell's runner
   (:func:`xcit_export.scale.sharding.evaluate_shard`), decoded in parallel, ``--on-bad-image``
   honoured. On the local executor the PyTorch model runs in that same pass; on Ray the reference's
   outputs are computed first on a node with PyTorch (:func:`~xcit_export.scale.sharding.reference_shard`)
   and the cells of each device kind evaluate against them on a node of that kind.
2. **Measure.** PyTorch's latency, then each cell's, each on a node held alone
   (:func:`~xcit_export.scale.sharding.measure_cell`; the per-operator profile and the batch sweep at
   the export size).

Counts from the shards are added (identical to one pass), and a cell is finished, recorded
(:mod:`.record`) and handed to ``on_finished`` the moment its last task is in, so a matrix can
write it to disk before the others are done.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..diagnose.run import Diagnosis
from ..evaluate.counts import AccuracyCounts
from ..scale.executor import PYTORCH_KIND, Outcome, Task
from ..scale.sharding import (CellRunner, evaluate_shard, measure_cell, measure_reference, pack_artifact,
                              reference_shard, shard_ranges)
from .build import Built
from .prepare import PreparedModel, SizeSource
from .record import judge_cell, reference_entry, sized_entry

Progress = Callable[[str], None]


@dataclass
class Placed:
    """A built target on a device kind (None: any node, or this machine)."""

    built: Built
    kind: str | None = None

    @property
    def name(self) -> str:
        return self.built.name


@dataclass
class _SizeRun:
    """What the tasks of one size gave: per cell, counts or an error and the measurement; the
    reference's counts, latency and the images skipped."""

    source: SizeSource
    counts: dict[int, dict[str, AccuracyCounts]] = field(default_factory=dict)
    errors: dict[int, dict] = field(default_factory=dict)
    measured: dict[int, dict] = field(default_factory=dict)
    placement: dict[int, dict] = field(default_factory=dict)
    reference: dict | None = None
    reference_counts: AccuracyCounts = field(default_factory=AccuracyCounts)
    reference_self: dict[str, AccuracyCounts] = field(default_factory=dict)
    count: int = 0
    throughput: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    reference_outcomes: list = field(default_factory=list)  # where the reference ran (Ray: its own tasks)
    failure: Outcome | None = None  # a task that stopped the evaluation (reference, data)


@dataclass
class ModelResult:
    """Every cell's entry, in cell order, and what the report says about the model's evaluation."""

    entries: list[dict]
    sizes: list[_SizeRun]
    failure: Outcome | None = None


class CellRun:
    """The tasks of one model's cells on ``executor`` (see the module docstring)."""

    def __init__(self, prepared: PreparedModel, cells: list[Placed], executor: Any, shards: int,
                 progress: Progress, on_finished: Callable[[Placed, dict, dict], None] | None = None):
        self.p, self.cells, self.executor, self.shards = prepared, cells, executor, shards
        self.progress, self.on_finished = progress, on_finished or (lambda cell, entry, where: None)
        self.local = executor.name == "local"
        o = prepared.plan.options
        self.threads = o.threads or (prepared.plan.threads if self.local else 1)  # shared tasks on Ray: 1 CPU
        self.tasks: list[Task] = []
        self.index: list[tuple[str, int, tuple[int, ...], bool]] = []  # (what, size, cells, primary)
        self.sizes = [_SizeRun(source) for source in prepared.sources]
        self.live = [i for i, c in enumerate(cells) if c.built.artifact is not None]
        self.runners = {i: self._runner(cells[i]) for i in self.live}
        self.model_ref = executor.put(prepared.model)
        self.diagnosis = Diagnosis(prepared, progress)  # --explain, and every cell that misses its limits

    def _runner(self, cell: Placed) -> CellRunner:
        artifact = cell.built.artifact
        ref = artifact.path.parent if self.local else self.executor.put(pack_artifact(artifact))
        return CellRunner(cell.name, cell.built.target.name, ref, cell.built.options, cell.built.runner_batch,
                          static=cell.built.plan.options.batch is not None)

    def _say(self, size: int) -> Progress | None:
        if not self.local:
            return None
        if size == 0:
            return self.progress
        from ..console import renamed

        return renamed(self.progress, "", f"[{self.sizes[size].source.label}] ")

    def _add(self, task: Task, what: str, size: int, cells: tuple[int, ...], primary: bool = False) -> None:
        self.tasks.append(task)
        self.index.append((what, size, cells, primary))

    # -- tasks -----------------------------------------------------------------------------------
    def schedule(self) -> None:
        """Every evaluation and measurement task, size by size (the reference's outputs first, on Ray)."""
        for s, run in enumerate(self.sizes):
            images = run.source.images
            source_ref = self.executor.put(images)
            ranges = shard_ranges(len(images), self.shards, self.p.batch)
            references = self._references(s, source_ref, ranges)
            groups = [(None, tuple(self.live))] if self.local else self._by_kind()
            for kind, members in groups:
                for r, (lo, hi) in enumerate(ranges):
                    reference = self.model_ref if references is None else references[r]
                    if reference is None:
                        continue  # that reference shard failed: the cells say so
                    args = (reference, source_ref, lo, hi, self.p.batch, [self.runners[i] for i in members],
                            self.p.output_names, self.p.classify, self.threads, self.p.plan.options.input_format,
                            run.source.description, self._say(s),
                            self._reference_cache(run.source) if references is None and len(ranges) == 1 else None)
                    self._add(Task(evaluate_shard, args, f"{run.source.label} evaluation {lo}:{hi}", kind=kind),
                              "evaluate", s, members, primary=kind == groups[0][0])
            self._measurements(s, run)

    def _reference_cache(self, source) -> tuple[Path, str]:
        """Where the PyTorch reference's outputs on ``source`` are cached, and under which key
        (:mod:`xcit_export.evaluate.reference_cache`): what they depend on, never the targets. A
        pass over the whole set on this machine reads them back or records them; Ray's reference
        shards are computed as they are."""
        from ..evaluate.reference_cache import cache_root, reference_key
        from ..models.weights import weights_fingerprint

        o, spec = self.p.plan.options, self.p.spec
        key = reference_key(model=spec.name, weights_id=weights_fingerprint(o.weights, o.seed, spec), seed=o.seed,
                            num_classes=spec.num_classes, preprocessing=source.images.pp.to_dict(), output=o.output,
                            input_format=o.input_format, dynamic_size=o.dynamic_size,
                            images=source.images.content_hash())
        return cache_root(self.p.plan.out_dir), key

    def _by_kind(self) -> list[tuple[str | None, tuple[int, ...]]]:
        kinds: dict[str | None, list[int]] = {}
        for i in self.live:
            kinds.setdefault(self.cells[i].kind, []).append(i)
        return [(k, tuple(v)) for k, v in kinds.items()]

    def _references(self, s: int, source_ref: Any, ranges: list) -> list | None:
        """Ray: the reference's outputs per shard, computed now on nodes with PyTorch (None: the
        evaluation tasks run the model themselves)."""
        if self.local or not self.live:
            return None
        o = self.p.plan.options
        desc = self.sizes[s].source.description
        tasks = [Task(reference_shard, (self.model_ref, source_ref, lo, hi, self.p.batch, self.threads, o.input_format,
                                        desc), f"{self.sizes[s].source.label} reference {lo}:{hi}", kind=PYTORCH_KIND)
                 for lo, hi in ranges]
        outcomes = self.executor.run(tasks)
        self.sizes[s].reference_outcomes = list(outcomes)
        for outcome in outcomes:
            if not outcome.ok and self.sizes[s].failure is None:
                self.sizes[s].failure = outcome
        return [self.executor.put(o.value) if o.ok else None for o in outcomes]

    def _measurements(self, s: int, run: _SizeRun) -> None:
        """PyTorch's latency at this size, then each cell's (sweep and profile at the export size)."""
        o = self.p.plan.options
        head = run.source.images.head(max(self.p.latency_batch, *o.latency_batches, 1))
        head = self.p.fmt(head)
        x = head[:self.p.latency_batch] if len(head) >= self.p.latency_batch else \
            head[:1].repeat(self.p.latency_batch, axis=0)
        first = s == 0
        sweep = tuple(o.latency_batches) if first and not o.batch else ()
        batch1 = first and any(self.cells[i].built.batch1 for i in self.live)
        self._add(Task(measure_reference, (self.model_ref, x, o.latency, self.threads_for(PYTORCH_KIND), sweep, head, batch1,
                                           self._say(s)), f"{run.source.label} PyTorch latency", kind=PYTORCH_KIND,
                       exclusive=True), "reference", s, tuple(self.live))
        for i in self.live:
            cell = self.cells[i]
            xi = head[:1] if cell.built.batch1 else x
            args = (self.runners[i], xi, o.latency, self.threads_for(cell.kind), () if cell.built.batch1 else sweep,
                    head, first and o.profile, self._say(s), self.p.plan.scenarios if first else None)
            self._add(Task(measure_cell, args, f"{cell.name} latency at {run.source.label}", kind=cell.kind,
                           exclusive=True), "measure", s, (i,))

    def threads_for(self, kind: str | None) -> int:
        """Threads of a measurement (it holds the node): ``--threads``, else the node's CPUs."""
        o = self.p.plan.options
        return o.threads or self.executor.threads(Task(measure_cell, (), "", kind, exclusive=True))

    # -- outcomes --------------------------------------------------------------------------------
    def run(self) -> ModelResult:
        self.schedule()
        left = {i: sum(1 for _, _, cells, _ in self.index if i in cells) for i in range(len(self.cells))}
        entries: dict[int, dict] = {}
        for i in range(len(self.cells)):
            if left[i] == 0:  # not built, or nothing to run: recorded as it is
                entries[i] = self.finish(i)
        for t, outcome in self.executor.run_iter(self.tasks):
            what, s, cells, primary = self.index[t]
            getattr(self, f"_took_{what}")(self.sizes[s], cells, outcome, primary)
            for i in cells:
                left[i] -= 1
                if left[i] == 0:
                    entries[i] = self.finish(i)
        failure = next((r.failure for r in self.sizes if r.failure is not None), None)
        return ModelResult([entries[i] for i in range(len(self.cells))], self.sizes, failure)

    def _took_evaluate(self, run: _SizeRun, cells: tuple[int, ...], outcome: Outcome, primary: bool) -> None:
        if not outcome.ok:
            run.failure = run.failure or outcome
            for i in cells:
                run.errors.setdefault(i, {"error": f"{outcome.label}: {outcome.error}"})
            return
        result = outcome.value["result"]
        by_name = {st.name: st for st in result.targets}
        for i in cells:
            st = by_name[self.cells[i].name]
            run.placement.setdefault(i, {}).setdefault("accuracy", []).append(
                {"shard": outcome.label.rsplit(" ", 1)[-1], **(outcome.details.get("placement") or {})})
            if st.error is not None:
                run.errors.setdefault(i, {"error": st.error, "traceback": st.traceback})
                continue
            mine = run.counts.setdefault(i, {})
            for name, c in st.counts.items():
                mine[name] = mine[name] + c if name in mine else c
        if primary:  # the reference's own figures once per shard
            if self.local:
                run.reference_outcomes.append(outcome)  # the reference ran in this task
            run.reference_counts = run.reference_counts + result.reference_counts
            for name, c in result.reference_self.items():
                run.reference_self[name] = run.reference_self[name] + c if name in run.reference_self else c
            run.count += result.count
            run.skipped += outcome.value["skipped"]
            run.warnings += [w for w in outcome.value["warnings"] if w not in run.warnings]
            _add_throughput(run.throughput, result.throughput)

    def _took_reference(self, run: _SizeRun, cells, outcome: Outcome, primary: bool) -> None:
        run.reference = outcome.value if outcome.ok else {"error": outcome.error}
        if not outcome.ok:
            run.failure = run.failure or outcome

    def _took_measure(self, run: _SizeRun, cells, outcome: Outcome, primary: bool) -> None:
        (i,) = cells
        run.placement.setdefault(i, {})["latency"] = dict(outcome.details.get("placement") or {})
        if outcome.ok:
            run.measured[i] = outcome.value
        else:
            run.errors.setdefault(i, {"error": f"{outcome.label}: {outcome.error}"})

    def finish(self, i: int) -> dict:
        """Cell ``i``'s entry from every size's results (the export size's at the top level)."""
        cell, o = self.cells[i], self.p.plan.options
        by_size = {}
        for run in self.sizes:
            ref = run.reference or {}
            torch_ms = ref.get("batch1_median_ms") if cell.built.batch1 else (ref.get("latency") or {}).get("median_ms")
            error = run.errors.get(i) or (_failure_error(run.failure) if run.failure and i not in run.counts else None)
            by_size[run.source.size] = sized_entry(cell.built.entry, run.counts.get(i, {}), error, run.measured.get(i),
                                                   torch_ms, self.p.output_names, o.dynamic_size)
        entry = by_size[self.sizes[0].source.size]
        # then each size (a batch-1 variant is timed at the export size only): its checks join the export size's
        sized = [(size, by_size[size]) for size in o.eval_sizes if size in by_size] if not cell.built.batch1 else []
        judge_cell(entry, cell.built.target.precision, o.thresholds.get(cell.built.target.name), self.p.output_names,
                   sized, self.p.spec.patch_size)
        self.diagnosis.attach(cell.built, entry)  # judged: where its accuracy went, on the driver (docs/explain.md)
        first = self.sizes[0]
        where = {"placement": first.placement.get(i, {}),
                 "fingerprint": (first.measured.get(i) or {}).get("fingerprint")}
        self.on_finished(cell, entry, where)
        return entry

    # -- what the report says about the reference ---------------------------------------------------
    def reference(self) -> dict:
        from ..evaluate.stream import reference_accuracy

        first = self.sizes[0]
        return reference_entry(first.reference, reference_accuracy(first.reference_counts))


def _failure_error(outcome: Outcome) -> dict:
    return {"error": f"{outcome.label}: {outcome.error}"}


_SUMMED = ("images", "seconds", "busy_seconds", "wait_seconds")


def _add_throughput(total: dict, part: dict) -> None:
    """Throughput figures of shards added: images and seconds per stage, the rates recomputed."""
    if not total:
        total.update(copy.deepcopy(part))
        return
    for key, value in part.items():
        if isinstance(value, dict):
            _add_throughput(total.setdefault(key, {}), value)
        elif key in _SUMMED and isinstance(value, (int, float)):
            total[key] = round(total.get(key, 0) + value, 3) if isinstance(value, float) else total.get(key, 0) + value
    if total.get("seconds"):
        total["images_per_s"] = round(total["images"] / total["seconds"], 1)
    if total.get("busy_seconds"):
        total["images_per_s_per_worker"] = round(total["images"] / total["busy_seconds"], 1)
