"""Stage: the report, as ``report.json`` (versioned schema) and a Markdown table.

Schema (``schema_version`` 1): ``tool``, ``created``, ``model`` (name, num_classes, input size,
preprocessing, weights), ``export`` (ONNX metadata), ``evaluation`` (what inputs were compared),
``device`` (fingerprint), ``reference`` (PyTorch eager latency, labelled accuracy),
``targets`` (one entry per target: status, artifact, accuracy, latency, speed-up, error).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from . import __version__
from .io import write_json_atomic, write_text_atomic

SCHEMA_VERSION = 1


def build_report(*, config, spec, onnx_meta, reference, targets, evaluation, fingerprint) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "xcit-export", "version": __version__},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": spec.name, "arch": spec.arch, "num_classes": spec.num_classes,
                  "input_size": list(spec.preprocessing.input_size),
                  "preprocessing": spec.preprocessing.to_dict(),
                  "weights": config.weights, "seed": config.seed},
        "export": {"batch": config.batch or "dynamic", "opset": config.opset,
                   **{k: v for k, v in onnx_meta.items() if k != "build_key"}},
        "evaluation": evaluation,
        "latency_method": {"warmup": config.latency.warmup, "iterations": config.latency.iterations,
                           "min_seconds": config.latency.min_seconds, "threads": config.resolved_threads()},
        "device": fingerprint,
        "reference": reference,
        "targets": targets,
    }


def _fmt(value, spec: str, default: str = "-") -> str:
    """``value`` formatted, or ``default`` when it was not measured."""
    return default if value is None else format(value, spec)


def markdown_table(report: dict) -> str:
    m = report["model"]
    lines = [
        f"# xcit-export report: {m['name']}",
        "",
        f"- weights: {m['weights']}; classes: {m['num_classes']}; input: {m['input_size'][0]}x{m['input_size'][1]}; "
        f"export batch: {report['export']['batch']}",
        f"- evaluation: {report['evaluation']['description']} ({report['evaluation']['count']} inputs)",
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
    failures = [t for t in report["targets"] if t.get("error") or t.get("note")]
    if failures:
        lines += ["", "## Notes", ""]
        for t in failures:
            lines.append(f"- **{t['target']}**: {t.get('error') or t.get('note')}")
    checked = [t for t in report["targets"] if t.get("checks")]
    if checked:
        lines += ["", "## Thresholds", ""]
        for t in checked:
            for c in t["checks"]:
                mark = "skip" if c["why"].startswith("skipped") else "pass" if c["ok"] else "FAIL"
                lines.append(f"- {mark} {t['target']}: {c['metric']} = {c['value']} (limit {c['limit']})")
    from .int8_report import int8_markdown  # format choice, what INT8 buys, sensitivity, budget search

    lines += int8_markdown(report)
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path, Path]:
    out_dir = Path(out_dir)
    return (write_json_atomic(out_dir / "report.json", report),
            write_text_atomic(out_dir / "report.md", markdown_table(report)),
            write_html(report, out_dir / "report.html"))


# --------------------------------------------------------------------------------------------
# HTML: one self-contained page (inline CSS and SVG, no scripts, no external fetches)
# --------------------------------------------------------------------------------------------

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def _esc(text) -> str:
    import html

    return html.escape(str(text), quote=True)


def _rows(report: dict) -> list[dict]:
    """One row per (device, target) incl. the PyTorch reference; merged reports have many devices."""
    rows = []
    for dev_i, (dev_name, rep) in enumerate(_devices(report)):
        ref = rep["reference"]
        rows.append({"label": f"pytorch-eager @ {dev_name}", "latency": ref.get("latency"),
                     "accuracy": {"top1": ref.get("accuracy", {}).get("top1"), "top1_agreement": 1.0,
                                  "cosine_min": 1.0}, "device": dev_i})
        for t in rep["targets"]:
            rows.append({"label": f"{t['target']} @ {dev_name}", "latency": t.get("latency"),
                         "accuracy": t.get("accuracy", {}), "device": dev_i, "status": t["status"]})
    return rows


def _devices(report: dict) -> list[tuple[str, dict]]:
    if "reports" in report:  # merged
        return [(r["device_label"], r) for r in report["reports"]]
    return [(report["device"]["cpu"], report)]


def _latency_svg(rows: list[dict]) -> str:
    rows = [r for r in rows if r["latency"] and r["latency"].get("samples_ms")]
    if not rows:
        return "<p>No latency was measured on this device.</p>"
    hi = max(max(r["latency"]["samples_ms"]) for r in rows) * 1.05
    width, left, row_h = 760, 260, 28
    height = row_h * len(rows) + 40
    x = lambda v: left + (width - left - 20) * v / hi  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="latency distribution per target">']
    for i, r in enumerate(rows):
        s = sorted(r["latency"]["samples_ms"])
        q = lambda f: s[min(len(s) - 1, int(f * (len(s) - 1)))]  # noqa: E731
        y = 20 + i * row_h
        color = _PALETTE[i % len(_PALETTE)]
        parts.append(f'<text x="{left - 8}" y="{y + 5}" text-anchor="end" font-size="12">{_esc(r["label"])}</text>')
        parts.append(f'<line x1="{x(s[0]):.1f}" x2="{x(s[-1]):.1f}" y1="{y}" y2="{y}" stroke="{color}"/>')
        parts.append(f'<rect x="{x(q(0.25)):.1f}" y="{y - 8}" width="{max(1, x(q(0.75)) - x(q(0.25))):.1f}" '
                     f'height="16" fill="{color}" fill-opacity="0.35" stroke="{color}"/>')
        parts.append(f'<line x1="{x(q(0.5)):.1f}" x2="{x(q(0.5)):.1f}" y1="{y - 8}" y2="{y + 8}" stroke="{color}" '
                     f'stroke-width="2"/>')
        for v in s:
            parts.append(f'<circle cx="{x(v):.1f}" cy="{y}" r="1.5" fill="{color}" fill-opacity="0.5"/>')
    axis_y = height - 14
    parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{axis_y - 8}" y2="{axis_y - 8}" stroke="#555"/>')
    for k in range(6):
        v = hi * k / 5
        parts.append(f'<text x="{x(v):.1f}" y="{axis_y + 4}" text-anchor="middle" font-size="11">{v:.1f}</text>')
    parts.append(f'<text x="{width - 20}" y="{axis_y - 12}" text-anchor="end" font-size="11">ms per inference</text>')
    parts.append("</svg>")
    return "".join(parts)


def _scatter_svg(rows: list[dict]) -> str:
    metric = "top1" if any(r["accuracy"].get("top1") is not None for r in rows[1:]) else "top1_agreement"
    if not any(r["accuracy"].get(metric) is not None for r in rows):
        metric = "cosine_min"
    pts = [(r["latency"]["median_ms"], r["accuracy"].get(metric), r["label"]) for r in rows
           if r["latency"] and r["accuracy"].get(metric) is not None]
    if not pts:
        return "<p>No target has both accuracy and latency on this device.</p>"
    width, height, left, bottom = 760, 360, 70, 50
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x_hi = max(xs) * 1.15
    y_lo, y_hi = min(ys), max(ys)
    pad = max((y_hi - y_lo) * 0.15, 1e-4)
    y_lo, y_hi = y_lo - pad, y_hi + pad
    X = lambda v: left + (width - left - 20) * v / x_hi  # noqa: E731
    Y = lambda v: height - bottom - (height - bottom - 20) * (v - y_lo) / (y_hi - y_lo)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="accuracy versus latency">',
             f'<line x1="{left}" x2="{width - 20}" y1="{height - bottom}" y2="{height - bottom}" stroke="#555"/>',
             f'<line x1="{left}" x2="{left}" y1="20" y2="{height - bottom}" stroke="#555"/>']
    for k in range(6):
        xv, yv = x_hi * k / 5, y_lo + (y_hi - y_lo) * k / 5
        parts.append(f'<text x="{X(xv):.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11">{xv:.1f}</text>')
        parts.append(f'<text x="{left - 6}" y="{Y(yv) + 4:.1f}" text-anchor="end" font-size="11">{yv:.6g}</text>')
    parts.append(f'<text x="{(width + left) / 2}" y="{height - 10}" text-anchor="middle" font-size="12">median latency (ms)</text>')
    parts.append(f'<text x="14" y="{height / 2}" font-size="12" transform="rotate(-90 14 {height / 2})" '
                 f'text-anchor="middle">{_esc(metric)}</text>')
    for i, (xv, yv, label) in enumerate(pts):
        color = _PALETTE[i % len(_PALETTE)]
        parts.append(f'<circle cx="{X(xv):.1f}" cy="{Y(yv):.1f}" r="5" fill="{color}"><title>{_esc(label)}: '
                     f'{xv:.2f} ms, {metric} {yv:.4f}</title></circle>')
        right_half = X(xv) > (width + left) / 2  # label on the side with room, so it is never clipped
        parts.append(f'<text x="{X(xv) + (-8 if right_half else 8):.1f}" y="{Y(yv) - 6:.1f}" font-size="11" '
                     f'text-anchor="{"end" if right_half else "start"}">{_esc(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_page(report: dict) -> str:
    """The report as one HTML file that opens offline (nothing is fetched)."""
    rows = _rows(report)
    sections = []
    for _, rep in _devices(report):
        table = markdown_table(rep)
        sections.append("<pre>" + _esc(table) + "</pre>")
    title = f"xcit-export report: {report['model']['name']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}pre{{background:#f6f6f6;padding:1em;
overflow-x:auto}}h2{{margin-top:1.6em}}</style></head><body>
<h1>{_esc(title)}</h1>
<h2>Latency distribution per target</h2>{_latency_svg(rows)}
<h2>Accuracy vs latency</h2>{_scatter_svg(rows)}
<h2>Tables</h2>{''.join(sections)}
{_int8_html(report)}
</body></html>
"""


def _int8_html(report: dict) -> str:
    from .int8_report import int8_html

    return "".join(int8_html(rep) for _, rep in _devices(report))


def write_html(report: dict, path: Path) -> Path:
    return write_text_atomic(Path(path), html_page(report))


def merge_reports(reports: list[dict], labels: list[str] | None = None) -> dict:
    """Reports of one model from several devices, side by side (``xcit-export report merge``)."""
    from .errors import ReportError

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
             "| device | target | status | top-1 | top-1 agreement | median (ms) | speed-up vs PyTorch |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in merged["reports"]:
        for t in r["targets"]:
            acc, lat = t.get("accuracy", {}), t.get("latency", {})
            lines.append(f"| {r['device_label']} | {t['target']} | {t['status']} | {_fmt(acc.get('top1'), '.2%')} | "
                         f"{_fmt(acc.get('top1_agreement'), '.2%')} | {_fmt(lat.get('median_ms'), '.2f')} | "
                         f"{_fmt(t.get('speedup_vs_pytorch'), '.2f') + 'x' if t.get('speedup_vs_pytorch') else '-'} |")
    return "\n".join(lines) + "\n"
