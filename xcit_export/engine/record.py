"""Stage: a cell's report entry from what its tasks gave, and the verdict on it.

The same functions make a single run's ``targets`` entries and a matrix's cells: accuracy from the
added counts (every output), the measurement, the status (:func:`decide`, the one place a cell
passes or fails), the recipe's thresholds, and one record per ``--eval-sizes`` size.
"""

from __future__ import annotations

from typing import Any

from ..evaluate.counts import AccuracyCounts

# What a measurement task gives that the entry keeps as it is.
MEASURED = ("load_ms", "threads", "device", "inference_precision", "latency", "latency_sweep", "memory_mb",
            "op_profile", "op_profile_error", "scenarios")


def decide(entry: dict, per_output: dict[str, dict | None]) -> dict:
    """The cell's status from its figures: ``ok``, or ``failed`` with the reason.

    Every output of a multi-output model is held to the one output rule
    (:func:`xcit_export.evaluate.validate.output_problems`: a non-finite or constant output never
    passes), and an output the artifact did not give (None) fails. This is the engine's one
    pass/fail decision (issue 29's verdict function takes its place here).
    """
    from ..evaluate.validate import output_problems

    missing = [f"output '{name}' is missing: the artifact gave {len(per_output) - sum(a is None for a in per_output.values())}"
               f" of the reference's {len(per_output)} outputs" for name, acc in per_output.items() if acc is None]
    broken = missing + [f"{name}: {p}" if len(per_output) > 1 else p
                        for name, acc in per_output.items() if acc is not None for p in output_problems(acc)]
    entry["status"] = "ok"
    if broken:
        entry["status"] = "failed"
        entry["error"] = "; ".join(broken)
    return entry


def sized_entry(base: dict, counts: dict[str, AccuracyCounts], error: dict | None, measured: dict | None,
                torch_ms: float | None, output_names: list[str], dynamic_size: bool) -> dict:
    """A cell's entry at one size: ``base`` (target, build) plus accuracy from ``counts``, the
    measurement, and the verdict; ``error`` (``{"error", "traceback"}``) when a task failed."""
    entry = dict(base)
    if entry.get("status") == "failed":  # did not build
        return entry
    if error is not None:
        entry.update(status="failed", **{k: v for k, v in error.items() if v is not None})
        return entry
    per_output = {name: counts[name].to_dict() if name in counts else None for name in output_names}
    given = {name: acc for name, acc in per_output.items() if acc is not None}
    if given:
        entry["accuracy"] = given.get(output_names[0], next(iter(given.values())))
        if len(given) > 1:
            entry["outputs"] = given
    for key in MEASURED:
        if measured and key in measured:
            entry[key] = measured[key]
    if measured and dynamic_size and measured.get("shape_mode"):  # which OpenVINO form was timed
        entry["shape_mode"] = measured["shape_mode"]
    if measured and "latency" in measured and torch_ms:
        entry["speedup_vs_pytorch"] = round(torch_ms / measured["latency"]["median_ms"], 3)
    decide(entry, per_output)
    if entry.get("status") != "ok":  # a target that fails its verdict gets no scenario figures to rank or read
        entry.pop("scenarios", None)
    artifact_note = (base.get("artifact") or {}).get("note")
    if artifact_note:
        entry["note"] = artifact_note
    elif measured and "latency" not in measured and "device" in measured:
        entry["note"] = f"no latency measured: the runner on {measured.get('node', 'this machine')} is {measured['device']}"
    return entry


def apply_thresholds(entry: dict, limits: dict | None) -> dict:
    """The recipe's thresholds and latency budget for this target, checked (``checks``, ``passed``)."""
    from ..report.gate import checks_to_dicts, threshold_checks

    if not limits or not (limits.get("thresholds") or limits.get("latency_budget")):
        return entry
    checks = threshold_checks(entry, limits.get("thresholds") or {}, limits.get("latency_budget") or {})
    entry["checks"] = checks_to_dicts(checks)
    entry["passed"] = all(c.ok for c in checks)
    return entry


def recheck(row: dict, limits: dict | None) -> dict:
    """A cell finished by an earlier run, checked against the recipe as it is now: the export size's
    thresholds and budget, then each size's thresholds (as :func:`add_sizes` checks them)."""
    from dataclasses import asdict

    from ..report.gate import threshold_checks

    row = apply_thresholds({k: v for k, v in row.items() if k not in ("checks", "passed")}, limits)
    thresholds = (limits or {}).get("thresholds")
    for record in row.get("sizes", []) if thresholds else []:
        checks = threshold_checks({**record, "target": row["target"]}, thresholds, {})
        for c in checks:
            c.metric = f"{c.metric} @ {record['size']}"
        record["passed"] = all(c.ok for c in checks)
        row.setdefault("checks", []).extend(asdict(c) for c in checks)
        row["passed"] = bool(row.get("passed", True)) and record["passed"]
    return row


def add_sizes(entry: dict, sizes: list[tuple[int, int]], by_size: dict[tuple[int, int], dict], patch: int,
              limits: dict | None) -> None:
    """One record per ``--eval-sizes`` size in ``entry["sizes"]`` (the export size's from the entry
    itself: each size measured once); a size that fails, or misses the thresholds, fails the cell."""
    from ..evaluate import sizes as sizes_mod
    from ..report.gate import threshold_checks

    thresholds = (limits or {}).get("thresholds")
    for size in sizes:
        sized = by_size.get(size)
        if sized is None:
            continue
        checks = threshold_checks(sized, thresholds, {}) if thresholds else None
        sizes_mod.add_size_record(entry, size, patch, sized, checks)


def reference_entry(measured: dict | None, accuracy: dict | None) -> dict:
    """The report's ``reference``: PyTorch eager's latency (and sweep) and labelled accuracy."""
    out: dict[str, Any] = {k: v for k, v in (measured or {}).items() if k in ("latency", "threads", "latency_sweep")}
    if accuracy is not None:
        out["accuracy"] = accuracy
    return out
