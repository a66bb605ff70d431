"""What INT8 buys on the measured device, and the INT8 targets' format, sensitivity and budget search,
as report lines (Markdown, also printed by the CLI) and an HTML section."""

from __future__ import annotations

import re

from ..quantize.sensitivity import sensitivity_chart_svg, sensitivity_markdown

# INT8 target -> the floating-point sibling it must beat to be worth deploying.
FP32_SIBLING = {"onnxruntime-int8": "onnxruntime-fp32", "openvino-int8": "openvino-fp32"}
# Below this latency ratio INT8 counts as faster; above it the gain is within run-to-run noise.
FASTER_RATIO = 0.95


def _no_gain_reason(device: dict, target: str) -> str:
    flags = set(device.get("cpu_flags") or [])
    if {"avx512_vnni", "avx_vnni", "amx_int8"} & flags:
        return (f"this CPU has VNNI ({', '.join(sorted({'avx512_vnni', 'avx_vnni', 'amx_int8'} & flags))}), so the "
                f"cause is the graph: the FP32 operations around the INT8 ones (LayerNorm, attention, GELU) dominate "
                f"at this size")
    if "avx2" in flags:
        return ("no VNNI on this CPU (AVX2 only): INT8 dot products go through 16-bit vpmaddubsw/vpmaddwd steps and "
                "gain little over FP32 FMA")
    if "asimd" in flags and "asimddp" not in flags:
        return "no dot-product instructions (asimddp) on this CPU: INT8 needs widening multiplies"
    return f"no INT8 dot-product instructions known on this CPU (flags: {', '.join(sorted(flags)) or 'none'})"


def int8_gain_lines(report: dict) -> list[str]:
    """One line per INT8 target that is no faster than its FP32 sibling here, with the reason."""
    by_name = {t["target"]: t for t in report.get("targets", [])}
    lines = []
    for int8, fp32 in FP32_SIBLING.items():
        a, b = by_name.get(int8, {}).get("latency"), by_name.get(fp32, {}).get("latency")
        if not a or not b or not b.get("median_ms"):
            continue
        ratio = a["median_ms"] / b["median_ms"]
        if ratio >= FASTER_RATIO:
            lines.append(f"- **{int8} buys no speed here**: {a['median_ms']:.2f} ms vs {fp32} {b['median_ms']:.2f} ms "
                         f"({ratio:.2f}x); {_no_gain_reason(report.get('device', {}), int8)}")
    return lines


def _search_meta(target: dict) -> dict:
    """Where a target keeps its sensitivity/budget metadata: the artifact (onnxruntime-int8) or its
    ``precision_conversion`` summary (the TensorRT targets, from ``precision.int8_search``)."""
    art = target.get("artifact", {})
    return art if ("sensitivity" in art or "budget_search" in art) else art.get("precision_conversion") or {}


def int8_markdown(report: dict) -> list[str]:
    """The INT8 section of report.md: format choices, what INT8 buys, sensitivity, budget searches."""
    lines: list[str] = []
    for t in report.get("targets", []):
        art = t.get("artifact", {})
        if art.get("format_reason"):
            lines.append(f"- {t['target']}: format **{art['format']}**: {art['format_reason']}")
    lines += int8_gain_lines(report)
    for t in report.get("targets", []):
        lines += sensitivity_markdown(t["target"], _search_meta(t))
    return (["", "## INT8", ""] + lines) if lines else []


def int8_section(report: dict):
    """report.html's INT8 section for one device's report (``report_html.EXTRA_SECTIONS``): what
    INT8 buys here, the format chosen, and sensitivity bar charts (worst group on top); None if empty."""
    import html

    def inline(line: str) -> str:  # the Markdown lines' **bold** as <b>
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(line.lstrip("- ")))

    parts = [f"<p>{inline(line)}</p>" for line in int8_gain_lines(report)]
    for t in report.get("targets", []):
        art = t.get("artifact", {})
        if art.get("format_reason"):
            parts.append(f"<p>{html.escape(t['target'])}: format <b>{html.escape(str(art['format']))}</b>: "
                         f"{html.escape(str(art['format_reason']))}</p>")
    for t in report.get("targets", []):
        sens = _search_meta(t).get("sensitivity")
        if sens and sens.get("rows"):
            parts.append(f"<h3>{html.escape(t['target'])}: INT8 damage by layer group</h3>"
                         f"{sensitivity_chart_svg(sens['rows'])}")
    return ("INT8 on this device", "".join(parts)) if parts else None
