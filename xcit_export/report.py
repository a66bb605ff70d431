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
            f"{_fmt(lat.get('p90_ms'), '.2f')} | {_fmt(t.get('speedup_vs_pytorch'), '.2f')}x |")
    failures = [t for t in report["targets"] if t.get("error") or t.get("note")]
    if failures:
        lines += ["", "## Notes", ""]
        for t in failures:
            lines.append(f"- **{t['target']}**: {t.get('error') or t.get('note')}")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    return (write_json_atomic(out_dir / "report.json", report),
            write_text_atomic(out_dir / "report.md", markdown_table(report)))
