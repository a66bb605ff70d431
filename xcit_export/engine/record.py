"""Stage: a cell's report entry from what its tasks gave, and the verdict on it.

The same functions make a single run's ``targets`` entries and a matrix's cells: accuracy from the
added counts (every output; the worst one in ``accuracy``), the measurement, the status the runner
earned (``ok``: it ran the deployed artifact; ``built``: only a stand-in ran here), then the verdict
(:func:`judge_cell`, the engine's one call of :func:`xcit_export.verdict.judge`) at the export size
and at every ``--eval-sizes`` size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..evaluate.counts import AccuracyCounts
from ..verdict import Verdict, built_note, judge, limits_for, record_outputs

# What a measurement task gives that the entry keeps as it is.
MEASURED = ("load_ms", "threads", "device", "inference_precision", "latency", "latency_sweep", "memory_mb",
            "op_profile", "op_profile_error", "scenarios")


def sized_entry(base: dict, counts: dict[str, AccuracyCounts], error: dict | None, measured: dict | None,
                torch_ms: float | None, output_names: list[str], dynamic_size: bool) -> dict:
    """A cell's entry at one size, not yet judged: ``base`` (target, build) plus accuracy from
    ``counts`` (every output the artifact gave; :func:`judge_cell` fails one that is missing), the
    measurement and the status it earned; ``error`` (``{"error", "traceback"}``) when a task failed."""
    entry = dict(base)
    if entry.get("status") == "failed":  # did not build
        return entry
    if error is not None:
        entry.update(status="failed", **{k: v for k, v in error.items() if v is not None})
        return entry
    record_outputs(entry, {name: counts[name].to_dict() for name in output_names if name in counts})
    for key in MEASURED:
        if measured and key in measured:
            entry[key] = measured[key]
    if measured and dynamic_size and measured.get("shape_mode"):  # which OpenVINO form was timed
        entry["shape_mode"] = measured["shape_mode"]
    if measured and "latency" in measured and torch_ms:
        entry["speedup_vs_pytorch"] = round(torch_ms / measured["latency"]["median_ms"], 3)
    # ok: the deployed artifact ran here; built: only a stand-in did (a TensorRT engine on a host,
    # timed by nothing): the accuracy is the stand-in's, and the device check is what to run next
    stand_in = bool(measured) and "latency" not in measured
    entry["status"] = "built" if stand_in else "ok"
    note = (base.get("artifact") or {}).get("note")
    if stand_in and not note and "device" in measured:
        note = f"no latency measured: the runner on {measured.get('node', 'this machine')} is {measured['device']}"
    if stand_in:
        note = built_note(note, str(Path((base.get("artifact") or {}).get("path", ".")).parent))
    if note:
        entry["note"] = note
    return entry


def judge_entry(entry: dict, precision: str | None, given: Mapping[str, Any] | None,
                output_names: Sequence[str] | None, latency: bool = True) -> Verdict:
    """The verdict on one entry, written into it (``status``, ``error``, ``checks``, ``passed``,
    ``limits``): :func:`xcit_export.verdict.judge` with the target's limits, its recipe's
    ``thresholds`` (and ``latency_budget``, unless ``latency`` is False: a size other than the
    export size) over the default limits of its precision class, for the precision its runtime
    really computed in; ``output_names``: the reference's outputs, every one must be compared."""
    given = given or {}
    limits = limits_for(precision, given.get("thresholds"), given.get("latency_budget") if latency else None,
                        entry.get("inference_precision"))
    verdict = judge(entry, limits, outputs=list(output_names) if output_names else None)
    verdict.apply(entry)
    return verdict


def judge_cell(entry: dict, precision: str | None, given: Mapping[str, Any] | None,
               output_names: Sequence[str] | None, sized: Sequence[tuple[tuple[int, int], dict]] = (),
               patch: int | None = None) -> dict:
    """THE engine's pass/fail: the verdict on a cell's entry at the export size, then on its result
    at each ``--eval-sizes`` size (``sized``: (size, that size's entry, the export size's included),
    judged on the same limits less the latency budget) recorded in ``entry["sizes"]``: a size that
    fails, or misses a limit, fails the cell. A single run's targets, the matrix's cells and a
    matrix cell reused from an earlier run (judged again against the recipe as it is now:
    :func:`recheck`) all come through here."""
    from ..evaluate import sizes as sizes_mod

    results = [(size, {k: v for k, v in result.items() if k not in VERDICT_KEYS}) for size, result in sized]
    for key in (*VERDICT_KEYS, "sizes"):
        entry.pop(key, None)
    judge_entry(entry, precision, given, output_names)
    for size, result in results:
        verdict = judge_entry(result, precision, given, output_names, latency=False)
        sizes_mod.add_size_record(entry, size, patch, result, verdict.checks)
    if entry.get("status") != "ok":  # a cell that fails its verdict lends no scenario figure to a table or a ranking
        entry.pop("scenarios", None)
    return entry


def recheck(row: dict, precision: str | None, given: Mapping[str, Any] | None, output_names: Sequence[str] | None,
            patch: int | None) -> dict:
    """A matrix cell finished by an earlier run (its row as written, with a record per size), or
    one that never ran, judged (:func:`judge_cell`) against the recipe as it is now."""
    sized = [((r["height"], r["width"]), {**r, "target": row.get("target"),
                                          "inference_precision": row.get("inference_precision")})
             for r in row.get("sizes", [])]
    return judge_cell(row, precision, given, output_names, sized, patch)


# What the verdict writes into an entry (judge_cell writes it afresh).
VERDICT_KEYS = ("checks", "passed", "limits")


def reference_entry(measured: dict | None, accuracy: dict | None) -> dict:
    """The report's ``reference``: PyTorch eager's latency (and sweep) and labelled accuracy."""
    out: dict[str, Any] = {k: v for k, v in (measured or {}).items() if k in ("latency", "threads", "latency_sweep")}
    if accuracy is not None:
        out["accuracy"] = accuracy
    return out
