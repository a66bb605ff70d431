"""Stage: the report, as ``report.json`` (versioned schema) and a Markdown table.

Schema (``schema_version`` 1): ``tool``, ``created``, ``model`` (name, num_classes, input size,
preprocessing, weights), ``export`` (ONNX metadata), ``evaluation`` (what inputs were compared),
``device`` (fingerprint), ``reference`` (PyTorch eager latency, labelled accuracy),
``targets`` (one entry per target: status, artifact, accuracy, latency, speed-up, error, and
``op_profile``: per-op-type time from the runtime's profiler), and with ``--target auto`` a
``recommendation`` (``evaluate/auto.py``). The HTML page is ``report/html.py``.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from ..version import __version__
from ..io import write_json_atomic, write_text_atomic
from ..evaluate.profiling import coverage_line

SCHEMA_VERSION = 1


def report_header(kind: str | None = None) -> dict:
    """What every report starts with: the schema version, the tool, when (and, for other documents
    than a run's report, its ``kind``: ``matrix``)."""
    return {"schema_version": SCHEMA_VERSION, **({"kind": kind} if kind else {}),
            "tool": {"name": "xcit-export", "version": __version__},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def model_sections(options, spec, onnx_meta: dict) -> dict:
    """A report's ``model``, ``export`` and ``latency_method`` sections (a single run's report, and
    each model of a matrix)."""
    return {
        "model": {"name": spec.name, "arch": spec.arch, "num_classes": spec.num_classes,
                  "input_size": list(spec.preprocessing.input_size), "preprocessing": spec.preprocessing.to_dict(),
                  "weights": options.weights, "seed": options.seed},
        "export": {"batch": options.batch or "dynamic", "opset": options.opset, **onnx_meta},
        "latency_method": {"warmup": options.latency.warmup, "iterations": options.latency.iterations,
                           "min_seconds": options.latency.min_seconds, "max_seconds": options.latency.cap(),
                           "threads": options.resolved_threads()},
    }


def build_report(*, config, spec, onnx_meta, reference, targets, evaluation, fingerprint) -> dict:
    """A single run's report.json (``config``: its :class:`~xcit_export.options.RunOptions`)."""
    sections = model_sections(config, spec, onnx_meta)
    return {**report_header(), "model": sections["model"], "export": sections["export"], "evaluation": evaluation,
            "latency_method": sections["latency_method"], "device": fingerprint, "reference": reference,
            "targets": targets}


def _fmt(value, spec: str, default: str = "-") -> str:
    """``value`` formatted, or ``default`` when it was not measured."""
    return default if value is None else format(value, spec)


def _calibration_line(calib: dict | None) -> list[str]:
    """The calibration set as one line (none when nothing was calibrated); a default says so."""
    if not calib:
        return []
    line = f"- calibration: {calib['source']} ({calib['count']} images)"
    return [line + (f": {calib['note']}" if calib.get("note") else "")]


def device_check_markdown(report: dict) -> str:
    """A device-check report (bundle.device_check: checks, no PyTorch reference) as text."""
    lines = [f"# device-check: {report['model']['name']} / {report['target']} on {report.get('runner')}",
             f"- {'PASSED' if report.get('passed') else 'FAILED'}; engine: {(report.get('engine') or {}).get('status')}"]
    lines += [f"- {c['metric']}: {c['value']} (limit {c['limit']}) {'skip' if str(c['why']).startswith('skipped') else 'ok' if c['ok'] else 'FAIL'}"
              for c in report.get("checks", [])]
    return "\n".join(lines) + "\n"


def recommendation_markdown(report: dict) -> list[str]:
    """The ``--target auto`` verdict lines (``auto.recommendation_lines``), for the top of report.md."""
    rec = report.get("recommendation")
    if not rec:
        return []
    head, *rest = rec["lines"]
    out = [f"**{head}**", ""]
    if rec.get("artifact"):
        out += [f"Artifact: `{rec['artifact']}`", ""]
    return out + [f"- {line}" for line in rest] + [""]


def profile_markdown(report: dict) -> list[str]:
    """Per-op-type shares from each runtime's profiler (``op_profile``), one line per target."""
    rows = [t for t in report["targets"] if t.get("op_profile") or t.get("op_profile_error")]
    if not rows:
        return []
    out = ["", "## Where the time goes (runtime profilers, separate pass)", ""]
    for t in rows:
        p = t.get("op_profile")
        if p is None:
            out.append(f"- {t['target']}: the profiler failed ({t['op_profile_error']})")
            continue
        ops = ", ".join(f"{o['op_type']} {o['share']:.0%}" for o in p["ops"][:6])
        out.append(f"- {t['target']}: {ops} ({coverage_line(t)})")
    return out


def warning_lines(report: dict) -> list[str]:
    """The report's warnings (e.g. a PyTorch reference constant over the evaluation set, noisy
    latency figures), bold, first."""
    from .noise import noise_line

    warnings = list(report.get("warnings", [])) + [line for line in [noise_line(report)] if line]
    return [f"**Warning: {w}**" for w in warnings] + ([""] if warnings else [])


def markdown_table(report: dict) -> str:
    m = report["model"]
    lines = [
        f"# xcit-export report: {m['name']}",
        "",
        *warning_lines(report),
        *recommendation_markdown(report),
        f"- weights: {m['weights']}; classes: {m['num_classes']}; input: {m['input_size'][0]}x{m['input_size'][1]}; "
        f"export batch: {report['export']['batch']}",
        f"- evaluation: {report['evaluation']['description']} ({report['evaluation']['count']} inputs)",
        *_calibration_line(report["evaluation"].get("calibration")),
        f"- device: {report['device']['cpu']} ({report['device']['cpu_count']} cores, flags: "
        f"{', '.join(report['device']['cpu_flags']) or 'none'}); {report['latency_method']['threads']} threads",
        f"- PyTorch eager median latency: {report['reference']['latency']['median_ms']:.2f} ms "
        f"(batch {report['reference']['latency']['batch']})",
        "",
        "| target | status | size (MB) | top-1 | top-1 agreement | cosine (min) | max abs err | median (ms) | p90 (ms) | speed-up vs PyTorch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in report["targets"]:
        acc = t.get("accuracy", {})
        lat = t.get("latency", {})
        size = t.get("artifact", {}).get("size_bytes")
        lines.append(
            f"| {t['target']} | {t['status']} | {_fmt(size and size / 1e6, '.2f')} | {_fmt(acc.get('top1'), '.2%')} | "
            f"{_fmt(acc.get('top1_agreement'), '.2%')} | {_fmt(acc.get('cosine_min'), '.6f')} | "
            f"{_fmt(acc.get('max_abs_error'), '.2e')} | {_fmt(lat.get('median_ms'), '.2f')} | "
            f"{_fmt(lat.get('p90_ms'), '.2f')} | {_fmt(t.get('speedup_vs_pytorch'), '.2f') + 'x' if t.get('speedup_vs_pytorch') else '-'} |")
    lines += _sizes_markdown(report)  # the answer first: results at each size right after the table
    failures = [t for t in report["targets"] if t.get("error") or t.get("note")]
    if failures:
        lines += ["", "## Notes", ""]
        for t in failures:
            lines.append(f"- **{t['target']}**: {t.get('error') or t.get('note')}")
    lines += profile_markdown(report)
    checked = [t for t in report["targets"] if t.get("checks")]
    if checked:
        lines += ["", "## Thresholds", ""]
        for t in checked:
            for c in t["checks"]:
                mark = "skip" if c["why"].startswith("skipped") else "pass" if c["ok"] else "FAIL"
                lines.append(f"- {mark} {t['target']}: {c['metric']} = {c['value']} (limit {c['limit']})")
    from .int8 import int8_markdown  # format choice, what INT8 buys, sensitivity, budget search

    lines += int8_markdown(report)
    from .divergence import markdown as divergence_markdown  # --explain, --fix, the FP16 pre-flight

    lines += divergence_markdown(report)
    from .scenarios import markdown_lines  # --scenario: a table per scenario

    lines += markdown_lines(report)
    return "\n".join(lines) + "\n"


def _sizes_markdown(report: dict) -> list[str]:
    """--eval-sizes: accuracy and median latency per size, and the fitted slopes (evaluate/sizes.py)."""
    if not report.get("sizes"):
        return []
    from ..evaluate.sizes import size_rows

    head, rows, _ = size_rows(report)
    slopes = ", ".join(f"{k} {v:.2f}" for k, v in (report["sizes"].get("slopes") or {}).items() if v is not None)
    return (["", "## Sizes", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(r) + " |" for r in rows]
            + ([f"", f"Fitted log-log slope of median latency against tokens: {slopes}"] if slopes else []))


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path, Path]:
    """``report.json``, ``report.md`` and ``report.html`` in ``out_dir``; first the report gets its
    ``latency_noise`` section (report/noise.py), from every latency it holds by now."""
    from .noise import latency_noise

    out_dir = Path(out_dir)
    if report.get("kind") != "device-check":
        report["latency_noise"] = latency_noise(report)
    return (write_json_atomic(out_dir / "report.json", report),
            write_text_atomic(out_dir / "report.md", markdown_table(report)),
            write_html(report, out_dir / "report.html"))


def html_page(report: dict) -> str:
    """The report as one self-contained HTML page (``report/html.py``)."""
    from .html import html_page as page

    return page(report)


def write_html(report: dict, path: Path) -> Path:
    return write_text_atomic(Path(path), html_page(report))


# --------------------------------------------------------------------------------------------
# Reading any report: a run's, a device-check's, a matrix's (gate and merge)
# --------------------------------------------------------------------------------------------

def report_kind(report: dict) -> str:
    """``run`` (report.json), ``device-check``, ``matrix`` (matrix.json) or ``merged``."""
    return str(report.get("kind") or "run")


def report_entries(report: dict) -> tuple[list[dict], dict[str, list[str]]]:
    """The report's target entries, as the verdict reads them, and each one's reference output names.

    A matrix's cells become entries named ``<model>/<target>@<kind>``; a device-check's entry gets the
    bundle's precision. A merged comparison, or a JSON without targets, is refused in one line.
    """
    from ..errors import ReportError

    kind = report_kind(report)
    if kind == "merged":
        raise ReportError("this is a merged comparison (xcit-export report merge): gate the report.json files it "
                          "was made from")
    if kind == "matrix":
        rows = report.get("cells")
        if not isinstance(rows, list):
            raise ReportError("this matrix report holds no 'cells' list; it is not a matrix.json xcit-export wrote")
        entries, outputs = [], {}
        for row in rows:
            name = f"{row.get('model')}/{row.get('target')}@{row.get('device_kind', 'any')}"
            entries.append({**row, "target": name})
            names = ((report.get("models") or {}).get(row.get("model")) or {}).get("export", {}).get("output_names")
            if names:
                outputs[name] = list(names)
        return entries, outputs
    targets = report.get("targets")
    if not isinstance(targets, list) or not all(isinstance(t, dict) and "target" in t for t in targets):
        raise ReportError(f"this {kind} report holds no list of target entries ('targets'); it is not a report.json "
                          f"or device-check report.json that xcit-export wrote")
    if kind == "device-check":
        entries = [{"precision": report.get("precision"), **t} for t in targets]
        names = report.get("output_names")
    else:
        entries = list(targets)
        names = (report.get("export") or {}).get("output_names")
    return entries, ({e["target"]: list(names) for e in entries} if names else {})


def evaluated_on(report: dict) -> tuple:
    """``(kind, count)`` of the inputs a report's figures were measured on: a run's evaluation set
    (``run``), a bundle's golden inputs (``golden``), or a matrix's sets. Figures are compared with a
    baseline's only when these are equal."""
    kind = report_kind(report)
    if kind == "device-check":
        return "golden", report.get("golden_count")
    if kind == "matrix":
        return "matrix", tuple(sorted(((m.get("evaluation") or {}).get("count") or 0)
                                      for m in (report.get("models") or {}).values() if isinstance(m, dict)))
    return "run", (report.get("evaluation") or {}).get("count")


def evaluation_line(report: dict) -> str:
    """What a report's accuracy figures were measured on, in words (merged comparisons)."""
    if report_kind(report) == "device-check":
        ev = report.get("evaluation") or {}
        return ev.get("description") or f"{report.get('golden_count')} golden inputs of the bundle"
    ev = report.get("evaluation") or {}
    return f"{ev.get('description', '?')}"


def _model_line(model: dict) -> str:
    size = "x".join(str(v) for v in model.get("input_size") or [])
    classes = model.get("num_classes")
    return f"{model.get('name')} ({'?' if classes is None else classes} classes, input {size or '?'})"


def merge_reports(reports: list[dict], labels: list[str] | None = None, sources: list[str] | None = None) -> dict:
    """Reports of one model from several devices, side by side (``xcit-export report merge``).

    Takes run reports (report.json) and device-check reports; a matrix.json (its cells are already
    side by side: matrix.md, matrix.html) or a merged comparison is refused in one line naming it.
    Models must agree in name and input size, and in classes where both reports know them (a
    device-check of a non-logits output does not)."""
    from ..errors import ReportError

    if not reports:
        raise ReportError("give at least one report to merge")
    for i, r in enumerate(reports):
        name = f"'{sources[i]}'" if sources else f"report {i + 1}"
        kind = report_kind(r)
        if kind == "matrix":
            raise ReportError(f"{name} is a matrix report (matrix.json): merge takes report.json files of one model "
                              f"from several devices; a matrix already compares its cells (matrix.md, matrix.html)")
        if kind == "merged":
            raise ReportError(f"{name} is already a merged comparison; merge the report.json files it was made from")
        if not isinstance(r.get("model"), dict) or not isinstance(r.get("targets"), list):
            raise ReportError(f"{name} is not a report.json or device-check report.json (no model or targets)")
    first = reports[0]["model"]
    for r in reports[1:]:
        m = r["model"]
        same = (m.get("name"), list(m.get("input_size") or [])) == (first.get("name"), list(first.get("input_size") or []))
        classes = (m.get("num_classes"), first.get("num_classes"))
        if not same or (None not in classes and classes[0] != classes[1]):
            raise ReportError(f"cannot merge reports of different models: {_model_line(first)} and {_model_line(m)}")
    from ..verdict import judge

    merged = []
    for i, r in enumerate(reports):
        device = r.get("device") or {}
        label = labels[i] if labels else f"{device.get('cpu', '?')}" + (f" / {device['gpus'][0]}" if device.get("gpus") else "")
        # every entry as the one verdict sees it today (a report written before a rule is judged by it too)
        entries, outputs = report_entries(r)
        targets = [judge(e, outputs=outputs.get(e["target"])).apply(dict(t)) for e, t in zip(entries, r["targets"])]
        merged.append({**r, "targets": targets, "device_label": label})
    return {"schema_version": SCHEMA_VERSION, "kind": "merged", "model": first, "reports": merged}


def _of(value, count, spec: str = ".2%") -> str:
    """A figure with the number of inputs it was measured on (``85.20% of 1000``)."""
    return "-" if value is None else f"{format(value, spec)} of {count if count is not None else '?'}"


def merged_markdown(merged: dict) -> str:
    """Every device's targets, each accuracy figure with its input count; the top-1 drop is each
    report's own (against PyTorch on the same inputs), so a device checked on 16 golden inputs is
    not read against the host's 1,000 images."""
    lines = [f"# xcit-export comparison: {merged['model']['name']}", ""]
    lines += [f"- {r['device_label']}: {r['recommendation']['lines'][0]}" for r in merged["reports"]
              if r.get("recommendation")]
    lines += [f"- {r['device_label']}: evaluated on {evaluation_line(r)}" for r in merged["reports"]]
    lines += ["", "Accuracy figures are against PyTorch on each report's own inputs (the count follows each "
                  "figure); compare drops, not top-1 across different input sets.", "",
              "| device | target | status | top-1 | top-1 drop vs PyTorch (pt, same inputs) | top-1 agreement | "
              "median (ms) | speed-up vs PyTorch |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in merged["reports"]:
        for t in r["targets"]:
            acc, lat = t.get("accuracy") or {}, t.get("latency") or {}
            labelled = acc.get("labelled_count", acc.get("count"))
            drop = None if acc.get("top1") is None or acc.get("reference_top1") is None else \
                100 * (acc["reference_top1"] - acc["top1"])
            status = t.get("status", "?") + (", FAIL" if t.get("passed") is False and t.get("status") != "failed" else "")
            lines.append(f"| {r['device_label']} | {t['target']} | {status} | "
                         f"{_of(acc.get('top1'), labelled)} | {_of(drop, labelled, '+.1f')} | "
                         f"{_of(acc.get('top1_agreement'), acc.get('count'))} | {_fmt(lat.get('median_ms'), '.2f')} | "
                         f"{_fmt(t.get('speedup_vs_pytorch'), '.2f') + 'x' if t.get('speedup_vs_pytorch') else '-'} |")
    return "\n".join(lines) + "\n"
