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
5. **Report.** Counts are added (identical to an unsharded run), thresholds checked, and one row
   per (model, target, device kind) written to ``matrix.json`` / ``matrix.md``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import RecipeError, XcitExportError
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


def plan_cells(recipe) -> list[Cell]:
    return [Cell(m, t.name, kind) for m in recipe.models() for t in recipe.targets for kind in t.devices]


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
    with locked_output_dir(out_dir, wait=wait, progress=progress):
        return _run_matrix_locked(recipe, executor, out_dir, rebuild, shards, progress)


def _run_matrix_locked(recipe, executor, out_dir: Path, rebuild: bool, shards: int | None,
                       progress: Progress) -> dict:
    from ..report import document as report_mod
    from ..io import write_json_atomic, write_text_atomic

    cells = plan_cells(recipe)
    unplaceable = check_placement(recipe, cells, executor)
    runnable = [c for c in cells if c not in unplaceable]
    no_reference = executor.placement_error(PYTORCH_KIND)
    if no_reference:
        raise XcitExportError(f"the PyTorch reference needs a node with PyTorch: {no_reference}")
    if shards is None:
        shards = max(1, sum(n.cpus for n in executor.nodes())) if executor.name == "ray" else 1

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

    progress(f"reference: PyTorch on {len(built)} model(s), {shards} shard(s) each")
    ref_tasks = [Task(reference_shard, (m["model_ref"], m["source_ref"], lo, hi, m["batch"], 1, m["input_format"]),
                      f"{name} reference {lo}:{hi}", kind=PYTORCH_KIND)
                 for name, m in built.items() for lo, hi in m["ranges"]]
    ref_out = iter(executor.run(ref_tasks))
    for name, m in built.items():
        m["reference"] = [next(ref_out) for _ in m["ranges"]]
        m["reference_refs"] = [executor.put(o.value) if o.ok else None for o in m["reference"]]

    progress(f"cells: {len(runnable)} on the {executor.name} executor")
    tasks, index = [], []
    for cell in runnable:
        m = models[cell.model]
        if "error" in m or cell.target in m["failed"] or not all(o.ok for o in m["reference"]):
            continue
        pack, options = m["packs"][cell.target], m["options"][cell.target]
        for (lo, hi), ref in zip(m["ranges"], m["reference_refs"]):
            shared = Task(accuracy_shard, (pack, cell.target, options, m["source_ref"], lo, hi, m["batch"], 1,
                                           m["input_format"], ref, m["output_names"], m["classify"]),
                          f"{cell.label} accuracy {lo}:{hi}", kind=cell.kind)
            tasks.append(shared)
            index.append((cell, "accuracy"))
        threads = m["config"].threads or executor.threads(Task(latency_probe, (), "", cell.kind, exclusive=True))
        tasks.append(Task(latency_probe, (pack, cell.target, options, m["x_lat"], m["latency"], threads),
                          f"{cell.label} latency", kind=cell.kind, exclusive=True))
        index.append((cell, "latency"))
    results: dict[Cell, dict[str, list[Outcome]]] = {}
    for (cell, what), outcome in zip(index, executor.run(tasks)):
        results.setdefault(cell, {"accuracy": [], "latency": []})[what].append(outcome)

    rows = [_row(cell, recipe, models.get(cell.model), unplaceable.get(cell), results.get(cell)) for cell in cells]
    report = {
        "schema_version": report_mod.SCHEMA_VERSION, "kind": "matrix",
        "tool": {"name": "xcit-export", "version": _version()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "recipe": str(recipe.path), "executor": executor.name, "shards": shards,
        "nodes": [{"name": n.name, "cpus": n.cpus, "kinds": n.kinds} for n in executor.nodes()],
        "models": {name: m.get("info", {"error": m.get("error")}) for name, m in models.items()},
        "cells": rows,
    }
    write_json_atomic(out_dir / "matrix.json", report)
    write_text_atomic(out_dir / "matrix.md", matrix_markdown(report))
    return report


def _version() -> str:
    from .. import __version__

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
        config.calib_data, _ = calib_set.load()
        config.calib_id = calib_set.content_hash()
        calib = to_input_format(config.calib_data, config.input_format, pp)

    model = DeployModel(load_model(spec, config.weights, config.seed), pp, config.output, config.input_format,
                        seed=config.seed)
    onnx_path, onnx_meta = prepare_onnx(config, model, spec, say)
    batch = config.batch or 16
    threads = config.resolved_threads()
    packs, options, failed, artifacts = {}, {}, {}, {}
    for tname in dict.fromkeys(target_names):
        target = get_target(tname)
        options[tname] = dict(config.target_options.get(tname, {}))
        try:
            missing = target.missing_requirements()
            if missing:
                raise XcitExportError(f"target {tname} needs {', '.join(missing)}, which is not installed on the "
                                      f"building machine; install the project's extras (see README)")
            evaluation = None
            budget = (config.thresholds.get(tname) or {}).get("thresholds", {}).get("max_top1_drop")
            reason = target.needs_evaluation(options[tname], budget)
            if reason:  # sensitivity / budget search / accuracy control read the whole set here
                if config.eval is None:
                    raise no_evaluation_error(reason)
                x_all, y_all = source.load()
                evaluation = (to_input_format(x_all, config.input_format, pp), y_all)
            artifact, reused = build_artifact(target, config, spec, onnx_path, onnx_meta["build_key"],
                                              model.input_shape, calib, evaluation, threads, say)
            packs[tname] = executor.put(pack_artifact(artifact))
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
    return {"config": config, "info": info, "packs": packs, "options": options, "failed": failed,
            "artifacts": artifacts, "batch": batch, "input_format": config.input_format,
            "ranges": shard_ranges(len(source), shards, batch), "source_ref": executor.put(source),
            "model_ref": executor.put(model), "x_lat": x_lat, "latency": config.latency,
            "output_names": model.output_names,
            "classify": config.output == "logits" and spec.num_classes > 0}


def _row(cell: Cell, recipe, m: dict | None, unplaceable: str | None, outcomes: dict | None) -> dict:
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
    elif not all(o.ok for o in m["reference"]):
        bad = next(o for o in m["reference"] if not o.ok)
        row.update(status="failed", error=f"PyTorch reference ({bad.label}) {bad.error}")
    else:
        row["artifact"] = dict(m["artifacts"][cell.target])
        row["reused"] = row["artifact"].pop("reused")
        _fill(row, cell, outcomes or {"accuracy": [], "latency": []})
    plan = next(t for t in recipe.targets if t.name == cell.target)
    if plan.thresholds or plan.latency_budget:
        checks = threshold_checks(row, plan.thresholds, plan.latency_budget)
        row["checks"] = checks_to_dicts(checks)
        row["passed"] = all(c.ok for c in checks)
    return row


def _fill(row: dict, cell: Cell, outcomes: dict) -> None:
    """Accuracy from the shards' counts, latency from the exclusive task; the first failure wins."""
    errors = [o for o in outcomes["accuracy"] + outcomes["latency"] if not o.ok]
    lat = outcomes["latency"][0].value if outcomes["latency"] and outcomes["latency"][0].ok else None
    if lat:
        row["node"] = lat["node"]
        row["node_device"] = {k: lat["fingerprint"][k] for k in ("cpu", "cpu_count", "cpu_flags", "gpus")}
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


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def matrix_markdown(report: dict) -> str:
    lines = [f"# xcit-export matrix: {report['recipe']}", "",
             f"- executor: {report['executor']}; shards per evaluation set: {report['shards']}",
             "- nodes: " + "; ".join(f"{n['name']} ({n['cpus']} CPUs: {', '.join(n['kinds']) or 'no kinds'})"
                                     for n in report["nodes"]), "",
             "| model | target | device kind | node | status | top-1 | top-1 agreement | cosine (min) | median (ms) | p90 (ms) |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in report["cells"]:
        acc, lat = r.get("accuracy", {}), r.get("latency", {})
        status = r["status"] + (" (thresholds FAIL)" if r["status"] == "ok" and r.get("passed") is False else "")
        lines.append(f"| {r['model']} | {r['target']} | {r['device_kind']} | {r.get('node', '-')} | {status} | "
                     f"{_fmt(acc.get('top1'), '.2%')} | {_fmt(acc.get('top1_agreement'), '.2%')} | "
                     f"{_fmt(acc.get('cosine_min'), '.6f')} | {_fmt(lat.get('median_ms'), '.2f')} | "
                     f"{_fmt(lat.get('p90_ms'), '.2f')} |")
    notes = [r for r in report["cells"] if r.get("error") or r.get("note")]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{r['model']} x {r['target']} x {r['device_kind']}**: {r.get('error') or r.get('note')}"
                  for r in notes]
    return "\n".join(lines) + "\n"
