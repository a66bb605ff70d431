"""Where the accuracy went (``--explain``), in the report: an error-by-depth plot per target, the worst
point and its remedy, ``--fix``'s before and after, and the FP16 pre-flight.

Reads only the report's ``targets[i].divergence``, ``targets[i].fix`` and ``fp16_preflight``
(docs/report-schema.md), so a report read back from disk renders the same. :func:`section` is one
of ``report/html.py``'s extra sections; :func:`markdown` gives report.md's lines.
"""

from __future__ import annotations

import html
from typing import Optional

from . import plots

# Points listed in each target's table: the ones that add the most.
TOP = 6
_TICK_KINDS = {"patch_embed": "patch", "head": "head"}


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _g(value, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def _explained(report: dict) -> list[dict]:
    return [t for t in report.get("targets", []) if t.get("divergence")]


def _ticks(rows: list[dict]) -> tuple[list[int], list[str]]:
    """Tick positions and labels: the stem, each block's first point (``b3``), the first
    class-attention block and the head."""
    pos, labels, seen = [], [], set()
    for i, row in enumerate(rows):
        module = row["module"]
        if module in _TICK_KINDS:
            pos.append(i)
            labels.append(_TICK_KINDS[module])
        elif module.startswith("blocks."):
            block = module.split(".")[1]
            if block not in seen:
                seen.add(block)
                pos.append(i)
                labels.append(f"b{block}")
        elif module == "cls_attn_blocks.0":  # the tail's points are one apart: one label for them
            pos.append(i)
            labels.append("cls-attn")
    return pos, labels


def depth_plot(name: str, divergence: dict) -> str:
    """Accumulated relative error (line) and the error each point adds (bars, the worst in red),
    by depth, log scale, as inline SVG."""
    rows = divergence["points"]
    fig = plots._figure(720, 250)
    ax = fig.add_subplot(1, 1, 1)
    floor = 1e-9
    xs = list(range(len(rows)))
    worst = (divergence.get("worst") or {}).get("module")
    added = [max(r.get("added") or 0.0, floor) for r in rows]
    colours = ["#D55E00" if r["module"] == worst else "#9ecae1" for r in rows]
    ax.bar(xs, added, color=colours, width=0.8, label=f"added by the point ({divergence.get('added_method', 'isolated')})")
    ax.plot(xs, [max(r.get("rel_error") or floor, floor) for r in rows], color=plots.PALETTE[0], marker="o",
            markersize=2.5, linewidth=1.4, label="accumulated relative error")
    bad = [i for i, r in enumerate(rows) if r.get("nonfinite_count")]
    if bad:
        ax.axvspan(bad[0] - 0.5, len(rows) - 0.5, color="#fadbd8", zorder=0, label="non-finite")
    ax.set_yscale("log")
    pos, labels = _ticks(rows)
    ax.set_xticks(pos, labels, fontsize=7.5)
    ax.set_xlim(-0.7, len(rows) - 0.3)
    ax.set_ylabel("relative error vs PyTorch", fontsize=8.5)
    ax.tick_params(axis="y", labelsize=7.5)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if worst in [r["module"] for r in rows]:
        i = [r["module"] for r in rows].index(worst)
        ax.annotate(worst, (i, added[i]), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=8,
                    color="#7f1d1d")
    ax.legend(fontsize=7.5, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.04), ncol=3, borderaxespad=0)
    return plots._svg(fig, f"divergence-{name}")


def _points_table(rows: list[dict]) -> str:
    top = sorted((r for r in rows if isinstance(r.get("added"), (int, float))), key=lambda r: -r["added"])[:TOP]
    head = "".join(f"<th{' class=l' if i == 0 else ''}>{h}</th>" for i, h in enumerate(
        ["module", "adds", "relative error", "cosine (min)", "max abs error", "non-finite", "tensor"]))
    body = "".join(
        f"<tr><td class=l>{_e(r['module'])}</td><td>{_g(r.get('added'))}</td><td>{_g(r.get('rel_error'))}</td>"
        f"<td>{_g(r.get('cosine_min'), '.6f')}</td><td>{_g(r.get('max_abs_error'))}</td>"
        f"<td>{r.get('nonfinite_count', 0)}</td><td class=l><code>{_e(r.get('tensor', ''))}</code></td></tr>"
        for r in top)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fix_table(fix: dict) -> str:
    cols = [("status", "status", None), ("top-1 agreement", "top1_agreement", ".2%"),
            ("cosine (min)", "cosine_min", ".6f"), ("median (ms)", "median_ms", ".2f"), ("size (MB)", "size_bytes", None)]
    head = "<tr><th class=l></th>" + "".join(f"<th>{c}</th>" for c, _, _ in cols) + "</tr>"

    def cell(row, key, spec):
        value = row.get(key)
        if key == "size_bytes" and value is not None:
            return f"{value / 1e6:.2f}"
        if key == "status":
            return _e(f"{value}{'' if row.get('passed') is None else (', passed' if row['passed'] else ', failed limits')}")
        return _g(value, spec) if spec else _e(value if value is not None else "-")

    body = "".join(f"<tr><td class=l>{label}</td>" + "".join(f"<td>{cell(fix[key], k, s)}</td>" for _, k, s in cols)
                   + "</tr>" for label, key in (("before", "before"), ("after --fix", "after")))
    blamed = "; ".join(f"{b['module']} adds {_g(b.get('added_before'))} → {_g(b.get('added_after'))}"
                       for b in fix.get("blamed", []))
    return f"<table>{head}{body}</table><p class='sub'>{_e(blamed)}</p>"


def _target_html(entry: dict) -> str:
    d = entry["divergence"]
    name = entry["target"]
    if d.get("error"):
        return f"<h3>{_e(name)}</h3><p>Not explained: {_e(d['error'])}</p>"
    worst = d.get("worst") or {}
    parts = [f"<h3>{_e(name)}: <code>{_e(worst.get('module', '-'))}</code> adds the most error</h3>",
             f"<p class='sub'>{_e(worst.get('reason', ''))}. {d['images']} images; run on {_e(d.get('ran_on', ''))}; "
             f"output relative error {_g(d.get('output_rel_error'))}; marking moved the output by "
             f"{_g(d.get('marking_effect'))}.</p>",
             depth_plot(name, d), _points_table(d["points"])]
    if d.get("missing"):
        parts.append(f"<p class='sub'>Not in this graph (fused away): {_e(', '.join(d['missing']))}</p>")
    rem = d.get("remedy") or {}
    if rem.get("command"):
        parts.append(f"<p>Remedy (keeps {_e(', '.join(rem['modules']))} in higher precision): "
                     f"<code style='word-break:break-all'>{_e(rem['command'])}</code>, or rerun with <code>--fix</code>.</p>")
    elif rem.get("note"):
        parts.append(f"<p class='sub'>{_e(rem['note'])}</p>")
    if entry.get("fix"):
        parts.append("<p><b>--fix</b>: rebuilt with the remedy and judged again:</p>" + _fix_table(entry["fix"]))
    return "".join(parts)


def _preflight_html(pre: dict) -> str:
    if pre.get("skipped"):
        return f"<h3>FP16 pre-flight</h3><p class='sub'>{_e(pre['skipped'])}</p>"
    flagged = pre.get("flagged") or []
    sizes = ", ".join(pre.get("sizes") or [])
    out = [f"<h3>FP16 pre-flight ({', '.join(f'{n} images at {s}' for s, n in (pre.get('images') or {}).items())})</h3>"]
    if not flagged:
        closest = (pre.get("closest") or [{}])[0]
        out.append(f"<p>Nothing leaves FP16's range (65,504) at {_e(sizes)}; the closest: "
                   f"{_e(closest.get('module', '-'))} {_e(closest.get('check', ''))} at {_g(closest.get('margin'))}x.</p>")
        return "".join(out)
    kept = pre.get("kept") or {}
    names = [n for n, rows in kept.items() if isinstance(rows, list)]
    head = ("<tr><th class=l>module</th><th class=l>check</th><th>size</th><th>FP32 value</th><th>margin</th>"
            + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>")
    body = []
    for f in flagged:
        cells = []
        for n in names:
            row = next((r for r in kept[n] if (r["module"], r["check"], r["size"]) == (f["module"], f["check"], f["size"])), {})
            safe = row.get("safe")
            cls = "pass" if safe else "fail" if safe is False else "skip"
            cells.append(f"<td class={cls}>{_e(row.get('precision') or 'not mapped')}</td>")
        body.append(f"<tr><td class=l>{_e(f['module'])}</td><td class=l>{_e(f['check'])}</td><td>{_e(f['size'])}</td>"
                    f"<td>{_g(f['value'])}</td><td>{_g(f['margin'])}x</td>{''.join(cells)}</tr>")
    out.append("<p class='sub'>Tensors and reductions whose FP32 values exceed FP16's 65,504 on the calibration "
               "images; per FP16 path, the precision its deployed graph computes them in (green: FP32's range).</p>")
    out.append(f"<table>{head}{''.join(body)}</table>")
    return "".join(out)


def section(report: dict) -> Optional[tuple[str, str]]:
    """The HTML section (``report/html.py``'s EXTRA_SECTIONS), or None when nothing was explained."""
    explained = _explained(report)
    pre = report.get("fp16_preflight")
    if not explained and not pre:
        return None
    body = ("<p class='sub'>Each point is a block boundary of the model, named by its PyTorch module path; "
            "bars: the error a point adds by itself (its segment fed PyTorch's value of the point before), "
            "line: the error accumulated up to it (docs/explain.md).</p>") if explained else ""
    body += "".join(_target_html(t) for t in explained)
    if pre:
        body += _preflight_html(pre)
    return "Where the accuracy went", body


def markdown(report: dict) -> list[str]:
    """report.md's lines: per explained target its worst point, remedy and fix; the pre-flight's flags."""
    explained = _explained(report)
    pre = report.get("fp16_preflight") or {}
    if not explained and not pre:
        return []
    lines = ["", "## Where the accuracy went", ""]
    for t in explained:
        d = t["divergence"]
        if d.get("error"):
            lines.append(f"- {t['target']}: not explained ({d['error']})")
            continue
        worst = d.get("worst") or {}
        lines.append(f"- {t['target']}: **{worst.get('module')}** {worst.get('reason', '')} ({d['images']} images)")
        rem = d.get("remedy") or {}
        if rem.get("command"):
            lines.append(f"  - remedy: `{rem['command']}` (or --fix)")
        fix = t.get("fix")
        if fix:
            b, a = fix["before"], fix["after"]
            lines.append(f"  - --fix: top-1 agreement {_g(b.get('top1_agreement'), '.2%')} -> "
                         f"{_g(a.get('top1_agreement'), '.2%')}, cosine (min) {_g(b.get('cosine_min'), '.6f')} -> "
                         f"{_g(a.get('cosine_min'), '.6f')}, median {_g(b.get('median_ms'), '.2f')} -> "
                         f"{_g(a.get('median_ms'), '.2f')} ms, status {b.get('status')} -> {a.get('status')}")
    if pre.get("skipped"):
        lines.append(f"- FP16 pre-flight: {pre['skipped']}")
    for f in pre.get("flagged") or []:
        kept = [f"{n}: {r.get('precision') or 'not mapped'}" for n, rows in (pre.get("kept") or {}).items()
                if isinstance(rows, list) for r in rows if (r["module"], r["check"], r["size"]) == (f["module"], f["check"], f["size"])]
        lines.append(f"- FP16 pre-flight: {f['module']} {f['check']} at {f['size']} reaches {f['value']:.4g} "
                     f"(margin {f['margin']:.3g}x){'; ' + ', '.join(kept) if kept else ''}")
    return lines


def console_lines(report: dict) -> list[str]:
    """The terminal's lines (after the results table): per explained target its worst point, and the
    remedy or --fix's before and after; the pre-flight's flags in one line."""
    lines = []
    for t in _explained(report):
        d = t["divergence"]
        if d.get("error"):
            lines.append(f"explain {t['target']}: not explained ({d['error']})")
            continue
        worst = d.get("worst") or {}
        lines.append(f"explain {t['target']}: {worst.get('module')} {worst.get('reason', '')}")
        fix, rem = t.get("fix"), d.get("remedy") or {}
        if fix:
            b, a = fix["before"], fix["after"]
            lines.append(f"  --fix ({', '.join(rem.get('modules') or [])} kept in higher precision): top-1 agreement "
                         f"{_g(b.get('top1_agreement'), '.2%')} -> {_g(a.get('top1_agreement'), '.2%')}, cosine min "
                         f"{_g(b.get('cosine_min'), '.4f')} -> {_g(a.get('cosine_min'), '.4f')}, status "
                         f"{b.get('status')} -> {a.get('status')}")
        elif rem.get("command"):
            lines.append(f"  remedy: {rem['command']} (or --fix)")
    flagged = (report.get("fp16_preflight") or {}).get("flagged") or []
    if flagged:
        lines.append(f"FP16 pre-flight: {len(flagged)} tensor(s) leave FP16's range, first "
                     f"{flagged[0]['module']} {flagged[0]['check']} ({flagged[0]['margin']:.3g}x); report.md lists them")
    return lines
