"""The scenarios in the reports: a table per scenario (terminal, report.md, report.html) and a
throughput-vs-latency plot per target (report.html). The figures are ``targets[*].scenarios``
(:mod:`xcit_export.evaluate.scenarios`); this module only lays them out: :func:`tables` and
:func:`notes` (which the terminal fits to its width: ``console.scenarios_layout``), report.md's
lines and report.html's section.
"""

from __future__ import annotations

import html
from typing import Any, Optional

TITLES = {"single_stream": "Single-stream (one query at a time)",
          "multi_stream": "Multi-stream (a query = one frame per stream, issued together)",
          "offline": "Offline (all images up front; best batch and requests in flight)"}


def _f(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _stability(rec: dict) -> str:
    s = rec.get("stability")
    if not s:
        return "-"
    return s["verdict"] + (f" ({100 * s['drift']:+.0f}%)" if s.get("drift") is not None else "")


def _energy(rec: dict) -> str:
    e = rec.get("energy") or {}
    return _f(e.get("mj_per_image"), ".1f") if e.get("available") else "-"


def _tail(rec: dict) -> str:
    es = rec.get("early_stopping")
    if not es:
        return "-"
    return _f(es.get("estimate_ms"), ".2f") + ("" if es.get("min_duration_met") else " *")


def tables(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` per scenario that any target has, rows as plain text cells."""
    targets = [t for t in report.get("targets", []) if t.get("scenarios")]
    out = []
    columns = {
        "single_stream": (["target", "batch", "p50 ms", "p90 ms", "p99 ms", "images/s", "MLPerf p90 ms", "mJ/image",
                           "stability"],
                          lambda r: [_f(r.get("batch"), "d"), _f(r.get("p50_ms"), ".2f"), _f(r.get("p90_ms"), ".2f"),
                                     _f(r.get("p99_ms"), ".2f"), _f(r.get("images_per_s"), ",.1f"), _tail(r), _energy(r),
                                     _stability(r)]),
        "multi_stream": (["target", "streams", "batch", "p50 ms", "p99 ms", "images/s", "MLPerf p99 ms", "mJ/image",
                          "stability"],
                         lambda r: [_f(r.get("streams"), "d"), _f(r.get("batch"), "d"), _f(r.get("p50_ms"), ".2f"),
                                    _f(r.get("p99_ms"), ".2f"), _f(r.get("images_per_s"), ",.1f"), _tail(r), _energy(r),
                                    _stability(r)]),
        "offline": (["target", "images/s", "batch", "in flight", "request p50 ms", "mJ/image", "stability"],
                    lambda r: [_f(r.get("images_per_s"), ",.1f"), _f(r.get("batch"), "d"), _f(r.get("streams"), "d"),
                               _f(r.get("p50_ms"), ".2f"), _energy(r), _stability(r)]),
    }
    for key, (header, cells) in columns.items():
        rows = []
        for t in targets:
            rec = t["scenarios"].get(key)
            if rec is None:
                continue
            if rec.get("error"):
                rows.append([t["target"], "error: " + rec["error"][:120]] + [""] * (len(header) - 2))
            else:
                rows.append([t["target"], *cells(rec)])
        if rows:
            keep = [i for i in range(len(header)) if i < 2 or any(r[i] not in ("-", "") for r in rows)]
            out.append((TITLES[key], [header[i] for i in keep], [[r[i] for i in keep] for r in rows]))
    return out


QUIET_WORDS = ("stable", "drifting", "noisy", "not available", "MLPerf", "early-stopping")  # what the terminal keeps


def notes(report: dict) -> list[str]:
    """The lines below the tables: each stability verdict's reason, how each pool ran, energy
    (the terminal shows only those with one of :data:`QUIET_WORDS` unless verbose)."""
    lines = []
    for t in report.get("targets", []):
        sc = t.get("scenarios") or {}
        for key in ("single_stream", "multi_stream", "offline"):
            rec = sc.get(key) or {}
            if rec.get("stability"):
                lines.append(f"{t['target']} {key.replace('_', '-')}: {rec['stability']['verdict']}: "
                             f"{rec['stability']['reason']}")
            es = rec.get("early_stopping")
            if es and not es.get("min_duration_met"):
                lines.append(f"{t['target']} {key.replace('_', '-')}: * ran {_f(rec.get('seconds'), 'g')} s, under MLPerf's "
                             f"{es.get('min_duration_s'):g} s minimum")
            if es and es.get("estimate_ms") is None and es.get("why"):
                lines.append(f"{t['target']} {key.replace('_', '-')}: no early-stopping estimate: {es['why']}")
        mech = (sc.get("offline") or {}).get("mechanism") or (sc.get("multi_stream") or {}).get("mechanism")
        if mech:
            lines.append(f"{t['target']}: {mech}")
    reasons = {(t.get("scenarios") or {}).get("energy", {}).get("reason") for t in report.get("targets", [])
               if t.get("scenarios")}
    lines += [r[0].upper() + r[1:] for r in sorted(r for r in reasons if r)]  # one line, not one per target
    return list(dict.fromkeys(lines))


def matrix_view(report: dict) -> dict:
    """A matrix report's cells that ran scenarios, as a report whose targets are the cells
    (``model target @kind``), for the same tables and plots."""
    return {"targets": [{**row, "target": f"{row['model']} {row['target']} @{row['device_kind']}"}
                        for row in report.get("cells", []) if row.get("scenarios")]}


# ---- report.md ------------------------------------------------------------------------------

def markdown_lines(report: dict) -> list[str]:
    out: list[str] = []
    for title, header, rows in tables(report):
        out += ["", f"## {title}", "", "| " + " | ".join(header) + " |",
                "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in rows]
    if out:
        out += [""] + [f"- {line}" for line in notes(report)]
    return out


# ---- report.html ----------------------------------------------------------------------------

def _e(text) -> str:
    return html.escape(str(text), quote=True)


def plot_points(entry: dict) -> list[dict]:
    """The target's (latency, images/s) points: single-stream, multi-stream, every offline search point."""
    sc = entry.get("scenarios") or {}
    points = []
    ss = sc.get("single_stream") or {}
    if ss.get("p50_ms") and ss.get("images_per_s"):
        points.append({"label": "single-stream", "ms": ss["p50_ms"], "ips": ss["images_per_s"], "kind": "single"})
    ms = sc.get("multi_stream") or {}
    if ms.get("p99_ms") and ms.get("images_per_s"):
        points.append({"label": f"{ms['streams']} streams (query p99)", "ms": ms["p99_ms"], "ips": ms["images_per_s"],
                       "kind": "multi"})
    off = sc.get("offline") or {}
    for p in off.get("search") or []:
        if p.get("p50_ms") and p.get("images_per_s"):
            points.append({"label": f"b{p['batch']} x {p['streams']}", "ms": p["p50_ms"], "ips": p["images_per_s"],
                           "kind": "offline"})
    if off.get("p50_ms") and off.get("images_per_s"):  # the chosen configuration, measured again for its figure
        points.append({"label": f"offline: b{off['batch']} x {off['streams']} in flight", "ms": off["p50_ms"],
                       "ips": off["images_per_s"], "kind": "offline-best"})
    return points


def throughput_vs_latency(label: str, points: list[dict]) -> str:
    """One target's images/s against latency (ms per request or query), log x: how much throughput
    each step of concurrency buys and what it costs a request."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    from .plots import LABEL_PT, PALETTE, _figure, _svg

    fig = _figure(420, 250)
    ax = fig.add_axes((0.16, 0.2, 0.8, 0.68))
    ax.set_xscale("log")
    style = {"single": ("o", PALETTE[0]), "multi": ("s", PALETTE[1]), "offline": ("^", "#999999"),
             "offline-best": ("*", PALETTE[2])}
    for p in points:
        marker, color = style[p["kind"]]
        ax.plot([p["ms"]], [p["ips"]], marker=marker, color=color, markersize=12 if marker == "*" else 7,
                linestyle="none")
        ax.annotate(p["label"], xy=(p["ms"], p["ips"]), xytext=(5, 4), textcoords="offset points",
                    fontsize=LABEL_PT - 1, color="#333333")
    xs, ys = [p["ms"] for p in points], [p["ips"] for p in points]
    ax.set_xlim(min(xs) / 1.6, max(xs) * 2.6)
    ax.set_ylim(0, max(ys) * 1.25)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("images/s")
    ax.set_title(label, fontsize=LABEL_PT + 1, loc="left")
    ax.grid(color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _svg(fig, f"scenarios-{label}")


def html_section(rep: dict) -> Optional[tuple[str, str]]:
    """``("Scenarios", html)``: the tables, one plot per target, the notes; None without scenarios."""
    found = tables(rep)
    if not found:
        return None
    parts = ["<p class='sub'>Each target on its own runner and request pool (docs/latency.md): single-stream is one "
             "query at a time; multi-stream issues one frame per stream together and waits for the last; offline keeps "
             "requests in flight and reports the best images/s of a small search over batch and requests in flight. "
             "A sustained run (--sustain) compares its first and last thirds.</p>"]
    left = ' class="l"'
    for title, header, rows in found:
        head = "".join(f"<th{left if i == 0 else ''}>{_e(h)}</th>" for i, h in enumerate(header))
        body = "".join("<tr>" + "".join(f"<td{left if i == 0 else ''}>{_e(c)}</td>" for i, c in enumerate(r))
                       + "</tr>" for r in rows)
        parts.append(f"<h3>{_e(title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    plots = [throughput_vs_latency(t["target"], pts) for t in rep.get("targets", [])
             if len(pts := plot_points(t)) >= 1]
    if plots:
        parts.append("<h3>Throughput against latency</h3><div class='columns'>"
                     + "".join(f"<div>{svg}</div>" for svg in plots) + "</div>"
                     "<p class='sub'>Latency: single-stream p50 (circle), multi-stream query p99 (square), offline "
                     "request p50 (grey triangles: the offline search's points, b = batch, x = requests in flight; "
                     "star: the configuration chosen, measured again).</p>")
    lines = notes(rep)
    if lines:
        parts.append("".join(f"<p class='sub'>{_e(line)}</p>" for line in lines))
    return "Scenarios", "".join(parts)
