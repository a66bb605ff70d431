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
    lines += [f"- {c['check']}: {c['value']} (threshold {c['threshold']}) {'ok' if c['passed'] else 'FAIL'}"
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


def merge_reports(reports: list[dict], labels: list[str] | None = None) -> dict:
    """Reports of one model from several devices, side by side (``xcit-export report merge``)."""
    from ..errors import ReportError

    if not reports:
        raise ReportError("give at least one report to merge")
    first = reports[0]["model"]
    for r in reports[1:]:
        if (r["model"]["name"], r["model"]["num_classes"], r["model"]["input_size"]) != \
                (first["name"], first["num_classes"], first["input_size"]):
            raise ReportError(f"cannot merge reports of different models: {first['name']} and {r['model']['name']}")
    merged = []
    for i, r in enumerate(reports):
        label = labels[i] if labels else f"{r['device']['cpu']}" + (f" / {r['device']['gpus'][0]}" if r["device"].get("gpus") else "")
        merged.append({**r, "device_label": label})
    return {"schema_version": SCHEMA_VERSION, "kind": "merged", "model": first, "reports": merged}


def merged_markdown(merged: dict) -> str:
    lines = [f"# xcit-export comparison: {merged['model']['name']}", "",
             *[f"- {r['device_label']}: {r['recommendation']['lines'][0]}" for r in merged["reports"]
               if r.get("recommendation")], "",
             "| device | target | status | top-1 | top-1 agreement | median (ms) | speed-up vs PyTorch |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in merged["reports"]:
        for t in r["targets"]:
            acc, lat = t.get("accuracy", {}), t.get("latency", {})
            lines.append(f"| {r['device_label']} | {t['target']} | {t['status']} | {_fmt(acc.get('top1'), '.2%')} | "
                         f"{_fmt(acc.get('top1_agreement'), '.2%')} | {_fmt(lat.get('median_ms'), '.2f')} | "
                         f"{_fmt(t.get('speedup_vs_pytorch'), '.2f') + 'x' if t.get('speedup_vs_pytorch') else '-'} |")
    return "\n".join(lines) + "\n"
