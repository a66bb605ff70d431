"""A recipe's matrix (models x targets x device kinds), run on an executor, merged into one report.

The matrix is the engine (:mod:`xcit_export.engine`) run per model with each target on each device
kind as a cell; what a single run does, it does (``--eval-sizes``, ``--on-bad-image``, parallel
decoding, the output rule, ``--target auto``'s batch-1 variants). Order of work (docs/ray.md has the
picture):

1. **Plan.** Each model's run is planned (:func:`xcit_export.plan.plan_run`: every check that needs
   no work); one cell per (model, target, device kind). A cell whose kind no node advertises is
   reported failed with the reason, before any work; if no cell can run at all, nothing starts.
2. **Build, here.** Per model: the image sets, weights, the checked ONNX, then each target's
   artifact, once per build key (unchanged keys reuse what is on disk). This process needs PyTorch;
   the nodes that only run artifacts do not.
3. **Cells.** Per model and size, the evaluation set in shards through the reference and every
   cell (on Ray: the reference's outputs first, on nodes advertising ``pytorch``; then each kind's
   cells on a node of that kind), and one exclusive latency task per cell. A cell is written to
   ``OUT/<model>/cells/<target>@<kind>.json`` (atomically) the moment its last task is in, with where
   each task ran (node id, kinds, hostname) and the key of what made it (:func:`cell_key`); a rerun
   reuses every finished cell with the same key (:func:`read_finished_cell`) and runs only the
   others, so a driver killed mid-matrix loses only the cells in flight.
4. **Report.** One row per (model, target, device kind), the recipe's thresholds checked, written
   to ``matrix.json`` / ``matrix.md`` / ``matrix.html``, with, for ``[targets] auto = true``, the
   recommendation per (model, device kind).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import RecipeError, XcitExportError
from .executor import PYTORCH_KIND

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Cell:
    model: str
    target: str  # the entry's name: a target, or --target auto's "<target>@batch1"
    kind: str | None  # None: any node

    @property
    def label(self) -> str:
        return f"{self.model} x {self.target} x {self.kind or 'any'}"


def plan_models(recipe, out_dir: Path, rebuild: bool, wait: bool) -> dict[str, Any]:
    """Each model's checked plan (:func:`xcit_export.plan.plan_run`), or the error that stops it."""
    from ..plan import plan_run
    from ..recipe import to_run_options

    plans: dict[str, Any] = {}
    for name in recipe.models():
        try:
            plans[name] = plan_run(to_run_options(recipe, out=out_dir / name, rebuild=rebuild, wait=wait,
                                                  model_name=name), here=False)
        except RecipeError:
            raise
        except XcitExportError as exc:  # this model's cells fail; the other models still run
            plans[name] = exc
    if all(isinstance(p, XcitExportError) for p in plans.values()):
        raise next(iter(plans.values()))  # bad input shared by every model: one clear error
    if recipe.section("diagnose").get("fix"):
        raise RecipeError(f"{recipe.path}: [diagnose] fix: --fix rebuilds on this machine, in a single run; a matrix "
                          f"explains its cells ([diagnose] explain = true) but does not rebuild them: run one model's "
                          f"recipe without --executor to apply the remedies")
    return plans


def plan_cells(recipe, plans: dict[str, Any]) -> list[Cell]:
    """One cell per (model, target, device kind): the recipe's kinds for its targets (any node for
    ``auto``'s candidates and their batch-1 variants)."""
    from ..evaluate.auto import variant_name

    devices = {t.name: t.devices for t in recipe.targets}
    cells = []
    for model, plan in plans.items():
        names = [t.name for t in recipe.targets] if isinstance(plan, XcitExportError) else plan.targets
        for name in names:
            cells += [Cell(model, name, kind) for kind in devices.get(name, [None])]
        if not isinstance(plan, XcitExportError) and plan.auto and plan.options.batch != 1:
            cells += [Cell(model, variant_name(name, True), None) for name in names]
    return cells


def check_placement(recipe, cells: list[Cell], executor) -> dict[Cell, str]:
    """Cells no node of ``executor`` can run, with the reason. Raises when that is every cell."""
    unplaceable = {c: why for c in cells if (why := executor.placement_error(c.kind))}
    if unplaceable and len(unplaceable) == len(cells):
        first = next(iter(unplaceable))
        raise RecipeError(f"{recipe.path}: [targets.{first.target}] device: no cell of the matrix can run: "
                          f"cell {first.label}: {unplaceable[first]}")
    return unplaceable


def run_matrix(recipe, executor, out_dir: Path | None = None, rebuild: bool = False, shards: int | None = None,
               progress: Progress = lambda msg: None, wait: bool = True) -> dict:
    """Run every cell of ``recipe`` on ``executor``; write and return the merged matrix report.

    Like a single run, the matrix is planned before anything is written and holds its output
    folder's lock throughout (outdir.py).
    """
    from ..outdir import locked_output_dir

    out_dir = Path(out_dir or Path("out") / recipe.path.stem)
    plans = plan_models(recipe, out_dir, rebuild, wait)
    cells = plan_cells(recipe, plans)
    unplaceable = check_placement(recipe, cells, executor)
    no_reference = executor.placement_error(PYTORCH_KIND)
    if no_reference:
        raise XcitExportError(f"the PyTorch reference needs a node with PyTorch: {no_reference}")
    if shards is None:
        shards = max(1, sum(n.cpus for n in executor.nodes())) if executor.name == "ray" else 1
    with locked_output_dir(out_dir, wait=wait, progress=progress):
        return _run_locked(recipe, plans, cells, unplaceable, executor, out_dir, shards, progress)


def _run_locked(recipe, plans: dict, cells: list[Cell], unplaceable: dict, executor, out_dir: Path, shards: int,
                progress: Progress) -> dict:
    from ..io import write_json_atomic, write_text_atomic
    from ..report.matrix_html import write_matrix_html

    nodes_at_start = executor.nodes()
    rows: dict[Cell, dict] = {}
    models: dict[str, dict] = {}
    runnable = [c for c in cells if c not in unplaceable]
    counter = {"done": 0, "of": len(runnable)}
    for name, plan in plans.items():
        mine = [c for c in runnable if c.model == name]
        models[name] = _run_model(name, plan, mine, executor, out_dir, shards, rows, counter, progress)
    failures = [m["exception"] for m in models.values() if "exception" in m]
    if failures and len(failures) == len(models):
        raise failures[0]  # every model stopped before its cells (shared bad input): one clear error
    report = _report(recipe, executor, shards, nodes_at_start, models, [
        _final_row(cell, recipe, models.get(cell.model, {}), unplaceable.get(cell), rows.get(cell)) for cell in cells])
    write_json_atomic(out_dir / "matrix.json", report)
    write_text_atomic(out_dir / "matrix.md", matrix_markdown(report))
    write_matrix_html(report, out_dir / "matrix.html")
    return report


def _run_model(name: str, plan, cells: list[Cell], executor, out_dir: Path, shards: int, rows: dict, counter: dict,
               progress: Progress) -> dict:
    """One model's cells through the engine; rows of the cells it finished (or reused) go into ``rows``.
    Returns the model's section of the report (or ``error``: its cells fail with it)."""
    from ..engine import Placed, build_all, evaluate_model, evaluation_summary, open_image_sets, prepare_model
    from ..engine.record import VERDICT_KEYS
    from ..options import Inputs

    if isinstance(plan, XcitExportError):
        return {"error": str(plan), "exception": plan}
    say = lambda msg: progress(f"{name}: {msg}")  # noqa: E731
    progress(f"{name}: building")
    try:
        inputs = Inputs()
        prepared = prepare_model(plan, inputs, open_image_sets(plan, inputs, say), say)
        built = {b.name: b for b in build_all(prepared, say)}
    except XcitExportError as exc:
        return {"error": str(exc), "exception": exc}
    say("hashing the evaluation set (what a finished cell is keyed by)")
    eval_hash = prepared.sources[0].images.content_hash()
    keys = {c: cell_key(c, plan, built[c.target], eval_hash, executor) for c in cells if built[c.target].artifact}
    reused = {} if plan.options.rebuild else {c: row for c in keys
                                              if (row := read_finished_cell(out_dir, c, keys[c])) is not None}
    rows.update(reused)
    to_run = [c for c in cells if c not in reused]
    counter["done"] += len(reused)
    if reused:
        progress(f"resuming: reused {len(reused)} of {len(cells)} cell(s) finished by an earlier run "
                 f"(same artifact build key, evaluation set hash and device kind); running {len(to_run)}")
    placed = [Placed(built[c.target], c.kind) for c in to_run]
    cell_of = {id(p): c for p, c in zip(placed, to_run)}

    def finished(cell: Placed, entry: dict, where: dict) -> None:
        c = cell_of[id(cell)]
        rows[c] = _cell_row(c, entry, where)
        if c in keys:  # built and measured: kept for a rerun
            rows[c]["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            # what was measured, without the verdict: a rerun judges it against the recipe as it is then
            write_finished_cell(out_dir, c, keys[c], {k: v for k, v in rows[c].items() if k not in VERDICT_KEYS})
        counter["done"] += 1
        progress(f"cell {c.label}: {rows[c]['status']} ({counter['done']} of {counter['of']})")

    progress(f"cells: {len(to_run)} of {name} on the {executor.name} executor")
    quiet = progress if executor.name == "local" else (lambda msg: None)
    result, reference = evaluate_model(prepared, placed, executor, shards, quiet, finished)
    summary = evaluation_summary(prepared, result)
    reference_placement = [{"shard": o.label.rsplit(" ", 1)[-1], **(o.details.get("placement") or {})}
                           for run in result.sizes[:1] for o in run.reference_outcomes]
    return {"info": _model_info(plan, prepared, reference, summary, reference_placement),
            "classify": prepared.classify, "labelled": summary["evaluation"]["labelled"],
            "output_names": prepared.output_names, "patch_size": prepared.spec.patch_size}


def _model_info(plan, prepared, reference: dict, summary: dict, reference_placement: list) -> dict:
    """The report's ``models.<name>``: the same model, export and evaluation sections a single run's
    report has (:func:`xcit_export.report.document.model_sections`), and where the reference ran."""
    from ..report.document import model_sections

    info = model_sections(plan.options, plan.spec, prepared.onnx_meta)
    info.update(evaluation={**summary["evaluation"], "batch": prepared.batch}, reference=reference,
                reference_placement=reference_placement)
    for key in ("warnings", "sizes", "fp16_preflight"):
        if summary.get(key):
            info[key] = summary[key]
    return info


def _cell_row(cell: Cell, entry: dict, where: dict | None = None) -> dict:
    """A cell's report row: the engine's entry, under the cell's model and device kind, with where
    its tasks ran (the node that timed it, or, without a timing, the first that evaluated it)."""
    row: dict[str, Any] = {"model": cell.model, **entry, "device_kind": cell.kind or "any"}
    placement = dict((where or {}).get("placement") or {})
    if not placement:
        return row
    placement.setdefault("latency", {})
    placement.setdefault("accuracy", [])
    main = next((p for p in [placement["latency"], *placement["accuracy"]] if p.get("node")), None)
    if main:
        row.update(node=main.get("node"), node_id=main.get("node_id"), node_kinds=main.get("kinds", []))
    lost = {n["node_id"]: n for p in [placement["latency"], *placement["accuracy"]] for n in p.get("lost_nodes", [])}
    if lost:  # tasks abandoned because the only nodes of the cell's kind were lost
        row["lost_nodes"] = list(lost.values())
    row["placement"] = placement
    fingerprint = (where or {}).get("fingerprint")
    if fingerprint:
        row["node_device"] = {k: fingerprint[k] for k in ("cpu", "cpu_count", "cpu_flags", "gpus")}
    if row.get("accuracy"):
        row["accuracy_nodes"] = sorted({p["node"] for p in placement["accuracy"] if p.get("node")})
    return row


def _final_row(cell: Cell, recipe, model: dict, unplaceable: str | None, row: dict | None) -> dict:
    """The report row of a cell: what was measured (or why nothing was), then the recipe's checks."""
    from ..engine.record import recheck
    from ..targets import get_target

    target = get_target(cell.target.split("@")[0])
    if row is None:
        row = {"model": cell.model, "target": cell.target, "backend": target.backend, "precision": target.precision,
               "device_kind": cell.kind or "any", "status": "failed"}
        if unplaceable:
            row["error"] = f"cell {cell.label}: {unplaceable}"
        elif "error" in model:
            row["error"] = f"cell {cell.label}: the model was not built: {model['error']}"
        else:
            row["error"] = f"cell {cell.label}: not run"
    if "checks" not in row:  # reused from an earlier run, or never run: judged against the recipe as it is now
        plan = next((t for t in recipe.targets if t.name == target.name), None)
        given = {"thresholds": plan.thresholds, "latency_budget": plan.latency_budget} if plan else None
        row = recheck(row, target.precision, given, model.get("output_names"), model.get("patch_size"))
    return row


def _report(recipe, executor, shards: int, nodes_at_start: list, models: dict, rows: list[dict]) -> dict:
    """matrix.json: the header every report has, the nodes, each model's section, one row per cell."""
    from ..report.document import report_header

    live = {n.node_id for n in executor.nodes()}
    report = {
        **report_header("matrix"), "recipe": str(recipe.path), "executor": executor.name, "shards": shards,
        "nodes": [{"node_id": n.node_id, "name": n.name, "cpus": n.cpus, "kinds": n.kinds,
                   **({"lost": True} if n.node_id is not None and n.node_id not in live else {})}
                  for n in nodes_at_start],
        "models": {name: m.get("info", {"error": m.get("error")}) for name, m in models.items()},
        "cells": rows,
    }
    if recipe.auto:
        report["recommendations"] = recommendations(recipe, rows, models)
    return report


# --------------------------------------------------------------------------------------------
# Finished cells on disk: the per-cell reports, and what a rerun resumes from
# --------------------------------------------------------------------------------------------

from ..report.matrix_html import CELLS_DIR  # noqa: E402 - OUT/<model>/cells/<target>@<kind>.json; matrix.html links there


def cell_path(out_dir: Path, cell: Cell) -> Path:
    return Path(out_dir) / cell.model / CELLS_DIR / f"{cell.target}@{cell.kind or 'any'}.json"


def cell_key(cell: Cell, plan, built, eval_hash: str, executor) -> dict:
    """What made a cell's figures: the artifact (its build key), the evaluation set (its content
    hash) and the sizes, the device kind and the executor that placed it, how it was measured
    (every latency setting, the scenarios) and whether it is explained. A finished cell with the same
    key is reused by a rerun."""
    from ..evaluate.validate import evaluation_batch
    from ..scale.executor import Task
    from ..scale.sharding import measure_cell

    o = plan.options
    threads = o.threads or executor.threads(Task(measure_cell, (), "", cell.kind, exclusive=True))
    return {"build_key": built.artifact.metadata.get("build_key"), "evaluation": eval_hash,
            "eval_sizes": [list(s) for s in o.eval_sizes], "device_kind": cell.kind or "any",
            "executor": executor.name, "target_options": built.options, "evaluation_batch": evaluation_batch(o.batch),
            "input_format": o.input_format, "on_bad_image": o.on_bad_image,
            "explain": o.explains,  # a cell finished without its divergence is run again when it is asked for
            "latency": {"warmup": o.warmup, "iterations": o.iterations, "min_seconds": o.min_seconds,
                        "max_seconds": o.latency.cap(), "batch": 1 if built.batch1 else (o.batch or 1),
                        "batch_sweep": list(o.latency_batches), "profile": o.profile, "threads": threads},
            "scenarios": plan.scenarios.to_dict() if plan.scenarios is not None else None}


def write_finished_cell(out_dir: Path, cell: Cell, key: dict, row: dict) -> Path:
    """The cell's report (``OUT/<model>/cells/<target>@<kind>.json``), written atomically."""
    from ..io import write_json_atomic

    return write_json_atomic(cell_path(out_dir, cell), {"kind": "matrix-cell", "key": key, "cell": row})


def read_finished_cell(out_dir: Path, cell: Cell, key: dict) -> dict | None:
    """The measured row of a cell finished earlier with the same ``key``, or None (absent, another
    key, not finished ``ok``, or unreadable: then the cell runs again)."""
    import json

    path = cell_path(out_dir, cell)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != json.loads(json.dumps(key, default=str)):
        return None
    row = data.get("cell")
    if not isinstance(row, dict) or row.get("status") != "ok" or not row.get("accuracy"):
        return None
    return row


def recommendations(recipe, rows: list[dict], models: dict) -> list[dict]:
    """``[targets] auto = true``: per (model, device kind), the fastest cell within the ``[auto]``
    accuracy budget (:func:`xcit_export.evaluate.auto.recommend`), and why each other one lost."""
    from ..evaluate.auto import Budget, recommend

    settings = recipe.auto_settings()
    budget = Budget(**{k: float(v) for k, v in settings.items()
                       if k not in ("require_winner", "allow_no_winner", "objective")}).check()
    out = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:  # a cell that misses its own limits is no candidate (recommend() applies the verdict)
        groups.setdefault((row["model"], row["device_kind"]), []).append(row)
    for (model, kind), entries in groups.items():
        m = models.get(model) or {}
        info = m.get("info") or {}
        rec = recommend(entries, budget, labelled=bool((info.get("evaluation") or {}).get("labelled")),
                        classifies=bool(m.get("classify", True)),
                        allow_no_winner=bool(settings.get("allow_no_winner", False)),
                        objective=settings.get("objective", "latency"))
        if settings.get("require_winner"):
            from ..evaluate.auto import require_winner

            require_winner(rec, settings["require_winner"])
        out.append({"model": model, "device_kind": kind, **rec})
    return out


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def short_id(node_id: str | None) -> str:
    """A Ray node id's first 8 hex digits (``ray list nodes`` shows whole ids; these prefixes are unique in practice)."""
    return node_id[:8] if node_id else "-"


def matrix_markdown(report: dict) -> str:
    def node_line(n: dict) -> str:
        ident = f"{n['name']}" + (f" [{short_id(n.get('node_id'))}]" if n.get("node_id") else "")
        lost = ", LOST during the run" if n.get("lost") else ""
        return f"{ident} ({n['cpus']} CPUs: {', '.join(n['kinds']) or 'no kinds'}{lost})"

    lines = [f"# xcit-export matrix: {report['recipe']}", "",
             f"- executor: {report['executor']}; shards per evaluation set: {report['shards']}",
             "- nodes: " + "; ".join(node_line(n) for n in report["nodes"]), "",
             "| model | target | device kind | node [id] | status | top-1 | top-1 agreement | cosine (min) | median (ms) | p90 (ms) |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in report["cells"]:
        acc, lat = r.get("accuracy", {}), r.get("latency", {})
        status = r["status"] + (" (thresholds FAIL)" if r["status"] == "ok" and r.get("passed") is False else "")
        node = r.get("node", "-") + (f" [{short_id(r['node_id'])}]" if r.get("node_id") else "")
        lines.append(f"| {r['model']} | {r['target']} | {r['device_kind']} | {node} | {status} | "
                     f"{_fmt(acc.get('top1'), '.2%')} | {_fmt(acc.get('top1_agreement'), '.2%')} | "
                     f"{_fmt(acc.get('cosine_min'), '.6f')} | {_fmt(lat.get('median_ms'), '.2f')} | "
                     f"{_fmt(lat.get('p90_ms'), '.2f')} |")
    if report.get("recommendations"):
        lines += ["", "## Recommendations (per model and device kind)", ""]
        lines += [f"- **{r['model']} on {r['device_kind']}**: {r['lines'][0]}" for r in report["recommendations"]]
    from ..report.scenarios import markdown_lines, matrix_view

    lines += markdown_lines(matrix_view(report))  # --scenario: a table per scenario, a row per cell
    notes = [r for r in report["cells"] if r.get("error") or r.get("note")]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{r['model']} x {r['target']} x {r['device_kind']}**: {r.get('error') or r.get('note')}"
                  for r in notes]
    return "\n".join(lines) + "\n"
