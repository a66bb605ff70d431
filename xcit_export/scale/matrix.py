"""A recipe's matrix (models x targets x device kinds), run on an executor, merged into one report.

Order of work (docs/ray.md has the picture):

1. **Plan.** One cell per (model, target, device kind). A cell whose kind no node advertises is
   reported failed with the reason, before any work; if no cell can run at all, nothing starts.
2. **Build, here.** Per model: weights, the checked ONNX, then each target's artifact, once per
   build key (:func:`xcit_export.pipeline.build_artifact`; unchanged keys reuse what is on disk).
   This process needs PyTorch; the nodes that only run artifacts do not.
3. **Reference, sharded.** PyTorch outputs for each shard of the evaluation set, as shared tasks on
   nodes advertising ``pytorch`` (the model travels through the executor's object store).
4. **Cells.** Per cell, one shared accuracy task per shard (decodes its images, runs the artifact,
   returns counts against the reference) and one exclusive latency task, both on a node of the
   cell's kind. Artifacts travel as bytes (:func:`xcit_export.scale.sharding.pack_artifact`).
   A cell is written to ``OUT/<model>/cells/<target>@<kind>.json`` (atomically) the moment its
   last task is in, with where each task ran (node id, kinds, hostname) and the key of what made it
   (:func:`cell_key`); a rerun reuses every finished cell with the same key (:func:`read_finished_cell`)
   and runs only the others, so a driver killed mid-matrix loses only the cells in flight.
5. **Report.** Counts are added (identical to an unsharded run), thresholds checked, and one row
   per (model, target, device kind) written to ``matrix.json`` / ``matrix.md`` / ``matrix.html``,
   with, for ``[targets] auto = true``, the recommendation per (model, device kind).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import RecipeError, XcitExportError
from ..keys import max_top1_drop
from .executor import PYTORCH_KIND, Outcome, Task
from .sharding import AccuracyCounts, accuracy_shard, latency_probe, pack_artifact, reference_shard, shard_ranges

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Cell:
    model: str
    target: str
    kind: str | None  # None: any node

    @property
    def label(self) -> str:
        return f"{self.model} x {self.target} x {self.kind or 'any'}"


def target_plans(recipe) -> list:
    """The recipe's targets; ``[targets] auto = true`` without target tables: every target that runs
    on this machine (:func:`xcit_export.evaluate.auto.plan`), on any node."""
    if recipe.targets or not recipe.auto:
        return recipe.targets
    from ..evaluate.auto import plan
    from ..recipe import TargetPlan

    return [TargetPlan(name) for name in plan(None, "calib" in recipe.section("data"))[0]]


def plan_cells(recipe) -> list[Cell]:
    return [Cell(m, t.name, kind) for m in recipe.models() for t in target_plans(recipe) for kind in t.devices]


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

    Like a single run, the matrix holds its output folder's lock throughout (outdir.py).
    """
    from ..outdir import locked_output_dir

    out_dir = Path(out_dir or Path("out") / recipe.path.stem)
    asked = sorted(k for k in ("scenarios", "sustain", "mlperf_tail", "streams", "scenario_seconds")
                   if k in recipe.section("latency"))
    if asked or "objective" in recipe.section("auto"):  # issue 32's scenarios run in the single run only, for now
        from ..errors import RecipeError

        raise RecipeError(f"{recipe.path}: [latency] {', '.join(asked) or '[auto] objective'}: the scenarios run in a "
                          f"single run (xcit-export --recipe {recipe.path} without --executor), not yet in a matrix")
    with locked_output_dir(out_dir, wait=wait, progress=progress):
        return _run_matrix_locked(recipe, executor, out_dir, rebuild, shards, progress)


def _run_matrix_locked(recipe, executor, out_dir: Path, rebuild: bool, shards: int | None,
                       progress: Progress) -> dict:
    from ..report import document as report_mod
    from ..report.matrix_html import write_matrix_html
    from ..io import write_json_atomic, write_text_atomic

    cells = plan_cells(recipe)
    unplaceable = check_placement(recipe, cells, executor)
    runnable = [c for c in cells if c not in unplaceable]
    no_reference = executor.placement_error(PYTORCH_KIND)
    if no_reference:
        raise XcitExportError(f"the PyTorch reference needs a node with PyTorch: {no_reference}")
    if shards is None:
        shards = max(1, sum(n.cpus for n in executor.nodes())) if executor.name == "ray" else 1
    nodes_at_start = executor.nodes()

    models: dict[str, dict] = {}
    for name in dict.fromkeys(c.model for c in runnable):
        progress(f"{name}: building")
        try:
            models[name] = _build_model(recipe, name, [c.target for c in runnable if c.model == name],
                                        out_dir / name, rebuild, shards, executor, progress)
        except RecipeError:
            raise
        except XcitExportError as exc:  # this model's cells fail; the other models still run
            models[name] = {"error": str(exc), "exception": exc}
    built = {name: m for name, m in models.items() if "error" not in m}
    if not built:  # bad input shared by every model (a missing data folder...): one clear error
        raise next(iter(models.values()))["exception"]

    # Cells finished by an earlier run with the same inputs are reused, not run again.
    measurable = [c for c in runnable if c.model in built and c.target not in built[c.model]["failed"]]
    keys = {c: cell_key(c, built[c.model], executor) for c in measurable}
    reused: dict[Cell, dict] = {}
    if not rebuild:
        for cell in measurable:
            row = read_finished_cell(out_dir, cell, keys[cell])
            if row is not None:
                reused[cell] = row
    to_run = [c for c in measurable if c not in reused]
    if reused:
        progress(f"resuming: reused {len(reused)} of {len(measurable)} cell(s) finished by an earlier run "
                 f"(same artifact build key, evaluation set hash and device kind); running {len(to_run)}")

    need_ref = {c.model for c in to_run}
    progress(f"reference: PyTorch on {len(need_ref)} model(s), {shards} shard(s) each")
    ref_tasks, ref_index = [], []
    for name in need_ref:
        m = built[name]
        for lo, hi in m["ranges"]:
            ref_tasks.append(Task(reference_shard, (m["model_ref"], m["source_ref"], lo, hi, m["batch"], 1,
                                                    m["input_format"]), f"{name} reference {lo}:{hi}", kind=PYTORCH_KIND))
            ref_index.append(name)
    for name, outcome in zip(ref_index, executor.run(ref_tasks)):
        built[name].setdefault("reference", []).append(outcome)
    for name in need_ref:
        m = built[name]
        m["reference_refs"] = [executor.put(o.value) if o.ok else None for o in m["reference"]]
        m["info"]["reference_placement"] = [{"shard": o.label.rsplit(" ", 1)[-1], **_where(o)} for o in m["reference"]]

    tasks, index = [], []
    for cell in to_run:
        m = built[cell.model]
        if not all(o.ok for o in m["reference"]):
            continue
        pack, options = m["packs"][cell.target], m["options"][cell.target]
        for (lo, hi), ref in zip(m["ranges"], m["reference_refs"]):
            tasks.append(Task(accuracy_shard, (pack, cell.target, options, m["source_ref"], lo, hi, m["batch"], 1,
                                               m["input_format"], ref, m["output_names"], m["classify"]),
                              f"{cell.label} accuracy {lo}:{hi}", kind=cell.kind))
            index.append((cell, "accuracy"))
        tasks.append(Task(latency_probe, (pack, cell.target, options, m["x_lat"], m["latency"],
                                          keys[cell]["latency"]["threads"]),
                          f"{cell.label} latency", kind=cell.kind, exclusive=True))
        index.append((cell, "latency"))
    progress(f"cells: {len(to_run)} on the {executor.name} executor ({len(tasks)} tasks)")
    left = {c: sum(1 for cc, _ in index if cc == c) for c in to_run}
    results: dict[Cell, dict[str, list]] = {c: {"accuracy": [], "latency": []} for c in to_run}
    measured: dict[Cell, dict] = dict(reused)
    done = len(reused)
    for i, outcome in executor.run_iter(tasks):  # each cell written as soon as its last task is in
        cell, what = index[i]
        results[cell][what].append((i, outcome))
        left[cell] -= 1
        if left[cell] == 0:
            outs = {k: [o for _, o in sorted(v, key=lambda t: t[0])] for k, v in results[cell].items()}
            measured[cell] = _measured_row(cell, built[cell.model], outs)
            write_finished_cell(out_dir, cell, keys[cell], measured[cell])
            done += 1
            progress(f"cell {cell.label}: {measured[cell]['status']} ({done} of {len(measurable)})")

    rows = [_row(cell, recipe, models.get(cell.model), unplaceable.get(cell), measured.get(cell)) for cell in cells]
    live = {n.node_id for n in executor.nodes()}
    report = {
        "schema_version": report_mod.SCHEMA_VERSION, "kind": "matrix",
        "tool": {"name": "xcit-export", "version": _version()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "recipe": str(recipe.path), "executor": executor.name, "shards": shards,
        "nodes": [{"node_id": n.node_id, "name": n.name, "cpus": n.cpus, "kinds": n.kinds,
                   **({"lost": True} if n.node_id is not None and n.node_id not in live else {})}
                  for n in nodes_at_start],
        "models": {name: m.get("info", {"error": m.get("error")}) for name, m in models.items()},
        "cells": rows,
    }
    if recipe.auto:
        report["recommendations"] = recommendations(recipe, rows, models)
    write_json_atomic(out_dir / "matrix.json", report)
    write_text_atomic(out_dir / "matrix.md", matrix_markdown(report))
    write_matrix_html(report, out_dir / "matrix.html")
    return report


# --------------------------------------------------------------------------------------------
# Finished cells on disk: the per-cell reports, and what a rerun resumes from
# --------------------------------------------------------------------------------------------

from ..report.matrix_html import CELLS_DIR  # noqa: E402 - OUT/<model>/cells/<target>@<kind>.json; matrix.html links there


def cell_path(out_dir: Path, cell: Cell) -> Path:
    return Path(out_dir) / cell.model / CELLS_DIR / f"{cell.target}@{cell.kind or 'any'}.json"


def cell_key(cell: Cell, m: dict, executor) -> dict:
    """What made a cell's figures: the artifact (its build key), the evaluation set (its content
    hash), the device kind and the executor that placed it, and how it was measured. A finished
    cell with the same key is reused by a rerun."""
    config = m["config"]
    threads = config.threads or executor.threads(Task(latency_probe, (), "", cell.kind, exclusive=True))
    return {"build_key": m["build_keys"].get(cell.target), "evaluation": m["eval_hash"],
            "device_kind": cell.kind or "any", "executor": executor.name,
            "target_options": m["options"][cell.target], "evaluation_batch": m["batch"],
            "input_format": m["input_format"],
            "latency": {"warmup": m["latency"].warmup, "iterations": m["latency"].iterations,
                        "min_seconds": m["latency"].min_seconds, "batch": int(len(m["x_lat"])),
                        "threads": threads}}


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


def _where(outcome: Outcome) -> dict:
    """Where a task ran: Ray node id, the node's kinds, hostname (empty when it never ran)."""
    return dict(outcome.details.get("placement") or {})


def _version() -> str:
    from ..version import __version__

    return __version__


def _build_model(recipe, name: str, target_names: list[str], out_dir: Path, rebuild: bool, shards: int,
                 executor, progress: Progress) -> dict:
    """Everything made once per model on this machine: ONNX, artifacts, the evaluation plan."""
    import numpy as np

    from ..data import sets as data
    from .. import export as export_mod
    from ..models.deploy import DeployModel, to_input_format
    from ..pipeline import build_artifact, prepare_onnx
    from ..recipe import to_run_config
    from ..targets import get_target
    from ..targets.base import no_evaluation_error
    from ..models.weights import default_num_classes, load_model
    from ..models.zoo import get_spec

    config = to_run_config(recipe, out_dir=out_dir, rebuild=rebuild, model_name=name)
    num_classes = config.num_classes
    if num_classes is None:
        num_classes = default_num_classes(config.weights, config.model)
    spec = get_spec(config.model).with_overrides(num_classes, config.input_size)
    pp = spec.preprocessing
    say = lambda msg: progress(f"{name}: {msg}")  # noqa: E731

    calib = None
    calib_set = None
    if config.calib is not None:
        calib_set = data.calibration_set(config.calib, pp, config.calib_size, config.seed, config.on_bad_image,
                                         config.class_index)
    if config.eval is not None:
        source = data.evaluation_set(config.eval, pp, config.eval_size, config.seed, config.on_bad_image,
                                     config.class_index,
                                     spec.num_classes if config.output == "logits" and spec.num_classes else None)
        if calib_set is not None:
            data.check_disjoint(calib_set, source)
        eval_desc = {"source": config.eval, "count": len(source), "labelled": True, "selection_seed": config.seed}
    else:
        h, w = pp.input_size
        x = export_mod.seeded_inputs((3, h, w), config.eval_count, seed=config.seed + 2)
        source = data.ImageSet(source="seeded", pp=pp, option="--eval", array=x)
        eval_desc = {"source": f"{config.eval_count} seeded random inputs (seed {config.seed + 2})",
                     "count": config.eval_count, "labelled": False}
    if calib_set is not None:
        say(f"preprocessing {len(calib_set)} calibration images")
        config.calib_data, config.calib_labels = calib_set.load()
        config.calib_id = calib_set.content_hash()
        calib = to_input_format(config.calib_data, config.input_format, pp)

    model = DeployModel(load_model(spec, config.weights, config.seed), pp, config.output, config.input_format,
                        seed=config.seed)
    onnx_path, onnx_meta = prepare_onnx(config, model, spec, say)
    batch = config.batch or 16
    threads = config.resolved_threads()
    packs, options, failed, artifacts, build_keys = {}, {}, {}, {}, {}
    for tname in dict.fromkeys(target_names):
        target = get_target(tname)
        options[tname] = dict(config.target_options.get(tname, {}))
        try:
            missing = target.missing_requirements()
            if missing:
                raise XcitExportError(f"target {tname} needs {', '.join(missing)}, which is not installed on the "
                                      f"building machine; install the project's extras (see README)")
            evaluation, build_config = None, config
            budget = max_top1_drop(config, tname)
            reason = target.needs_evaluation(options[tname], budget)
            if reason:  # sensitivity / budget search / accuracy control read the whole set here
                if config.eval is None:
                    raise no_evaluation_error(reason)
                x_all, y_all = source.load()
                evaluation = (to_input_format(x_all, config.input_format, pp), y_all)
                # the build key holds the set's content (keys.py), as in a single run
                build_config = dataclasses.replace(config, eval_id=source.content_hash())
            artifact, reused = build_artifact(target, build_config, spec, onnx_path, onnx_meta["build_key"],
                                              model.input_shape, calib, evaluation, threads, say)
            packs[tname] = executor.put(pack_artifact(artifact))
            build_keys[tname] = artifact.metadata.get("build_key")
            artifacts[tname] = {"path": str(artifact.path), "size_bytes": artifact.size_bytes, "reused": reused,
                                **{k: v for k, v in artifact.metadata.items() if k != "build_key"}}
        except XcitExportError as exc:
            failed[tname] = str(exc)
        except Exception as exc:  # noqa: BLE001 - a backend crash fails this target's cells, not the run
            failed[tname] = f"{type(exc).__name__}: {exc}"

    lat_batch = config.batch or 1
    first = next(source.iter_batches(lat_batch))[0]  # the first readable batch
    x_lat = first if len(first) >= lat_batch else np.repeat(first[:1], lat_batch, 0)
    x_lat = to_input_format(x_lat, config.input_format, pp)
    info = {"model": {"name": spec.name, "num_classes": spec.num_classes, "input_size": list(pp.input_size),
                      "weights": config.weights, "seed": config.seed},
            "export": {"batch": config.batch or "dynamic", "opset": config.opset,
                       **{k: v for k, v in onnx_meta.items() if k != "build_key"}},
            "evaluation": {**eval_desc, "batch": batch},
            "calibration": None if calib_set is None else {"source": config.calib, "count": len(calib_set),
                                                            "content_hash": config.calib_id}}
    say("hashing the evaluation set (what a finished cell is keyed by)")
    eval_hash = source.content_hash()
    return {"config": config, "info": info, "packs": packs, "options": options, "failed": failed,
            "artifacts": artifacts, "build_keys": build_keys, "eval_hash": eval_hash, "batch": batch, "input_format": config.input_format,
            "ranges": shard_ranges(len(source), shards, batch), "source_ref": executor.put(source),
            "model_ref": executor.put(model), "x_lat": x_lat, "latency": config.latency,
            "output_names": model.output_names,
            "classify": config.output == "logits" and spec.num_classes > 0}


def _row(cell: Cell, recipe, m: dict | None, unplaceable: str | None, measured: dict | None) -> dict:
    """The report row of a cell: what was measured (or why nothing was), then the recipe's checks."""
    from ..report.gate import checks_to_dicts, threshold_checks
    from ..targets import get_target

    target = get_target(cell.target)
    row: dict[str, Any] = {"model": cell.model, "target": cell.target, "backend": target.backend,
                           "precision": target.precision, "device_kind": cell.kind or "any"}
    if unplaceable:
        row.update(status="failed", error=f"cell {cell.label}: {unplaceable}")
    elif m is None or "error" in m:
        row.update(status="failed", error=f"cell {cell.label}: the model was not built: "
                                          f"{(m or {}).get('error', 'no detail')}")
    elif cell.target in m["failed"]:
        row.update(status="failed", error=m["failed"][cell.target])
    elif measured is not None:
        row = {k: v for k, v in measured.items() if k not in ("checks", "passed")}
    else:
        bad = next((o for o in m.get("reference", []) if not o.ok), None)
        row.update(status="failed", error=f"PyTorch reference ({bad.label}) {bad.error}" if bad else
                   f"cell {cell.label}: not run")
    plan = next((t for t in recipe.targets if t.name == cell.target), None)
    if plan is not None and (plan.thresholds or plan.latency_budget):
        checks = threshold_checks(row, plan.thresholds, plan.latency_budget)
        row["checks"] = checks_to_dicts(checks)
        row["passed"] = all(c.ok for c in checks)
    return row


def _measured_row(cell: Cell, m: dict, outcomes: dict) -> dict:
    """A cell's figures from its tasks: accuracy from the shards' counts, latency from the exclusive
    task, where each ran; the first failure wins."""
    from ..targets import get_target

    target = get_target(cell.target)
    row: dict[str, Any] = {"model": cell.model, "target": cell.target, "backend": target.backend,
                           "precision": target.precision, "device_kind": cell.kind or "any"}
    if m["reference"] and not all(o.ok for o in m["reference"]):
        bad = next(o for o in m["reference"] if not o.ok)
        row.update(status="failed", error=f"PyTorch reference ({bad.label}) {bad.error}")
        return row
    row["artifact"] = dict(m["artifacts"][cell.target])
    row["reused"] = row["artifact"].pop("reused")
    _fill(row, cell, outcomes)
    row["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return row


def _fill(row: dict, cell: Cell, outcomes: dict) -> None:
    """Accuracy from the shards' counts, latency from the exclusive task; the first failure wins."""
    lat_out = outcomes["latency"][0] if outcomes["latency"] else None
    lat = lat_out.value if lat_out is not None and lat_out.ok else None
    placement: dict[str, Any] = {"latency": _where(lat_out) if lat_out is not None else {},
                                 "accuracy": [{"shard": o.label.rsplit(" ", 1)[-1], **_where(o)}
                                              for o in outcomes["accuracy"]]}
    main = next((p for p in [placement["latency"], *placement["accuracy"]] if p.get("node")), None)
    if main:  # the node that timed the cell (or, without a timing, the first that evaluated it)
        row.update(node=main.get("node"), node_id=main.get("node_id"), node_kinds=main.get("kinds", []))
    lost = {n["node_id"]: n for p in [placement["latency"], *placement["accuracy"]] for n in p.get("lost_nodes", [])}
    if lost:  # tasks abandoned because the only nodes of the cell's kind were lost
        row["lost_nodes"] = list(lost.values())
    row["placement"] = placement
    if lat:
        row["node_device"] = {k: lat["fingerprint"][k] for k in ("cpu", "cpu_count", "cpu_flags", "gpus")}
    errors = [o for o in outcomes["accuracy"] + outcomes["latency"] if not o.ok]
    if errors:
        row.update(status="failed", error=f"cell {cell.label}: {errors[0].label}: {errors[0].error}")
        return
    shards = [o.value for o in outcomes["accuracy"]]
    if lat is None or any(s is None for s in shards) or "note" in lat:
        row.update(status="built", note=(lat or {}).get("note", f"node cannot run {cell.target}"))
        return
    totals: dict[str, AccuracyCounts] = {}
    for shard in shards:
        for name, counts in shard["counts"].items():
            totals[name] = totals[name] + counts if name in totals else counts
    per_output = {name: c.to_dict() for name, c in totals.items()}
    row["accuracy"] = next(iter(per_output.values()))
    if len(per_output) > 1:
        row["outputs"] = per_output
    from ..evaluate.validate import output_problems

    broken = [p for acc in per_output.values() for p in output_problems(acc)]
    row["accuracy_nodes"] = sorted({s["node"] for s in shards})
    for key in ("threads", "device", "load_ms", "memory_mb", "latency"):
        if key in lat:
            row[key] = lat[key]
    if "latency" not in lat:  # a stand-in runner (a TensorRT ONNX on onnxruntime): accuracy only
        row["note"] = f"no latency measured: the runner on {lat['node']} is {lat.get('device')}"
    row["status"] = "ok"
    if broken:  # the one rule (validate.output_problems): a broken output never passes
        row.update(status="failed", error="; ".join(broken))


def recommendations(recipe, rows: list[dict], models: dict) -> list[dict]:
    """``[targets] auto = true``: per (model, device kind), the fastest cell within the ``[auto]``
    accuracy budget (:func:`xcit_export.evaluate.auto.recommend`), and why each other one lost."""
    from ..evaluate.auto import Budget, recommend

    settings = recipe.auto_settings()
    budget = Budget(**{k: float(v) for k, v in settings.items() if k != "require_winner"}).check()
    out = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row.get("passed") is False:  # a cell that misses the recipe's own thresholds is no candidate
            missed = "; ".join(f"{c['metric']} {c['value']:.6g} vs {c['limit']}" for c in row.get("checks", [])
                               if not c["ok"])
            row = {**row, "status": "failed", "error": f"missed the recipe's thresholds ({missed})"}
        groups.setdefault((row["model"], row["device_kind"]), []).append(row)
    for (model, kind), entries in groups.items():
        m = models.get(model) or {}
        info = m.get("info") or {}
        rec = recommend(entries, budget, labelled=bool((info.get("evaluation") or {}).get("labelled")),
                        classifies=bool(m.get("classify", True)))
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
    notes = [r for r in report["cells"] if r.get("error") or r.get("note")]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{r['model']} x {r['target']} x {r['device_kind']}**: {r.get('error') or r.get('note')}"
                  for r in notes]
    return "\n".join(lines) + "\n"
