"""The report's plots, drawn by matplotlib as inline SVG (the HTML page stays one self-contained file).

Each function takes plain rows from the report and returns an ``<svg>`` string. Text stays text
(``svg.fonttype = none``: searchable, small), ids are salted per plot so several SVGs can share
one page, and axes use round tick values with units and span the data (a percentage axis never
runs past 100%). Points of the accuracy-vs-latency plot carry short direct labels (their number
in the key table beside the plot) placed by :func:`place_labels` so that no label covers another
label or a point, however many points share a value.
"""

from __future__ import annotations

import io
import math
import re
from typing import Sequence

# Colour-blind-safe (Okabe-Ito) for series, plus greys for "other" and out-of-budget points.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
OTHER = "#BBBBBB"
LABEL_PT = 8.5  # label font size (points)
DPI = 72.0  # SVG units are points; 1 pt = 1 px at 72 dpi, which keeps the geometry below simple


Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in points


def _overlap(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(anchors: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]], bounds: Box,
                 obstacles: Sequence[Box] = (), gap: float = 3.0, rings: int = 10) -> list[tuple[float, float]]:
    """Centres for label boxes near their anchors, no box overlapping another, an obstacle (the
    points' markers) or the edge of ``bounds``.

    Greedy, in the order given: each label tries eight directions around its anchor (right,
    upper right, up, ... first) at growing distances (``gap`` apart, ``rings`` rings) and takes
    the first free place; when none is free it takes the place that overlaps least. Points drawn
    on one spot get labels fanned out around it, in rings. Coordinates are points (1/72 inch), y up.
    """
    directions = [(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)]
    placed: list[Box] = []
    out = []
    for (ax, ay), (w, h) in zip(anchors, sizes):
        best, best_cost = None, None
        for ring in range(rings):
            r = gap * (1 + ring)
            for dx, dy in directions:
                cx = ax + dx * (r + w / 2) if dx else ax
                cy = ay + dy * (r + h / 2) if dy else ay
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                outside = max(0.0, bounds[0] - box[0]) + max(0.0, box[2] - bounds[2]) + \
                    max(0.0, bounds[1] - box[1]) + max(0.0, box[3] - bounds[3])
                cost = sum(_overlap(box, o) for o in placed) + sum(_overlap(box, o) for o in obstacles) \
                    + outside * (w + h) * 10
                if best_cost is None or cost < best_cost - 1e-9:
                    best, best_cost = box, cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        assert best is not None
        placed.append(best)
        out.append(((best[0] + best[2]) / 2, (best[1] + best[3]) / 2))
    return out


def _figure(width_pt: float, height_pt: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_pt / DPI, height_pt / DPI), dpi=DPI)


def _svg(fig, name: str) -> str:
    """The figure as an inline ``<svg>`` that scales down with the page (its ids salted by name)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.08)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    # Fixed width in pt -> as wide as drawn (1 pt = 4/3 CSS px) at most, narrower with the window; the viewBox keeps the ratio.
    svg = re.sub(r'<svg([^>]*?) width="([\d.]+)pt" height="[\d.]+pt"',
                 lambda m: f'<svg{m.group(1)} class="plot" data-plot="{name}" role="img" '
                           f'style="width:100%;max-width:{float(m.group(2)) * 4 / 3:.0f}px;height:auto"', svg, count=1)
    return svg


def _style(ax, xlabel: str, ylabel: str | None = None) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10], min_n_ticks=3))
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def latency_distribution(rows: Sequence[dict]) -> str:
    """Box plot of every timed inference per target. ``rows``: ``{"label", "samples_ms"}``."""
    rows = [r for r in rows if r.get("samples_ms")]
    fig = _figure(620, 40 + 22 * len(rows))
    ax = fig.add_subplot()
    data = [r["samples_ms"] for r in rows][::-1]  # first row at the top
    ax.boxplot(data, orientation="horizontal", widths=0.6, showfliers=True, patch_artist=True,
               boxprops={"facecolor": "#cfe3f3", "edgecolor": PALETTE[0]}, medianprops={"color": "#D55E00"},
               flierprops={"marker": ".", "markersize": 3, "markeredgecolor": "#999999"})
    ax.set_yticks(range(1, len(rows) + 1), [r["label"] for r in rows][::-1], fontsize=LABEL_PT)
    ax.set_xlim(left=0)
    _style(ax, "latency per inference (ms); box: quartiles, orange line: median")
    return _svg(fig, "latency")


KIND_STYLE = {  # marker, colour, size, legend text
    "chosen": ("*", "#009E73", 14, "recommended"),
    "ok": ("o", PALETTE[0], 7, "within the budget"),
    "out": ("X", "#888888", 7, "outside the budget"),
}


def accuracy_vs_latency(points: Sequence[dict], metric_label: str, percent: bool,
                        budget: float | None = None, budget_label: str = "") -> str:
    """Scatter of accuracy against median latency; each point labelled with its ``label`` (a
    short key such as ``3``: the table beside the plot names it), placed by :func:`place_labels`.

    ``points``: ``{"label", "median_ms", "value", "kind"}`` with kind ``chosen`` (star), ``ok``
    (circle) or ``out`` (grey cross: outside the budget): shape and colour both tell the kind.
    ``budget`` draws the accuracy floor. The y axis spans the values and the budget with a
    margin, at least half a point (percent) wide, and never runs past 100%.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator

    width, height = 460.0, 280.0
    fig = _figure(width, height)
    ax = fig.add_axes((0.15, 0.16, 0.82, 0.74))
    ys = [p["value"] for p in points] + ([budget] if budget is not None else [])
    lo, hi = min(ys), max(ys)
    pad = max((hi - lo) * 0.15, 0.004 if percent else 2e-5)
    top = hi + pad
    if percent and hi <= 1.0:
        top = min(top, 1.0)  # no 100.2% for a fraction; markers at 100% sit on the (hidden) top edge
    bottom = lo - pad if top > lo else lo - 2 * pad
    ax.set_ylim(bottom, top)
    ax.set_xlim(0, max(p["median_ms"] for p in points) * 1.15)
    _style(ax, "median latency (ms)", metric_label)
    locator = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10])
    ticks = [t for t in locator.tick_values(bottom, top) if bottom - 1e-12 <= t <= top + 1e-12]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    # As few decimals as the tick step needs: 97%, 98%... or 99.5%, 99.6%..., never 0.90438.
    decimals = max(0, math.ceil(-math.log10(step * (100 if percent else 1)) - 1e-9))
    ax.yaxis.set_major_formatter(FuncFormatter(
        (lambda v, _: f"{100 * v:.{decimals}f}%") if percent else (lambda v, _: f"{v:.{decimals}f}")))
    ax.grid(axis="y", color="#eeeeee", linewidth=0.8)
    if budget is not None:
        ax.axhline(budget, color="#D55E00", linestyle="--", linewidth=1)
        ax.annotate(budget_label, xy=(0.995, budget), xycoords=("axes fraction", "data"), xytext=(0, 3),
                    textcoords="offset points", fontsize=LABEL_PT - 0.5, color="#D55E00", ha="right")
    kinds = []
    for p in points:
        marker, color, size, _ = KIND_STYLE.get(p.get("kind"), KIND_STYLE["ok"])
        ax.plot([p["median_ms"]], [p["value"]], marker=marker, color=color, markersize=size, linestyle="none",
                markeredgecolor="white" if marker != "X" else color, markeredgewidth=0.6, clip_on=False, zorder=3)
        kinds.append(p.get("kind") or "ok")
    # Direct labels: display coordinates (points at 72 dpi) of every marker, then a free place each.
    anchors = [tuple(ax.transData.transform((p["median_ms"], p["value"]))) for p in points]
    x0, y0, x1, y1 = ax.bbox.extents
    bounds = (x0 + 1, y0 + 1, x1 + 8, y1 + 6)
    sizes = [(0.62 * LABEL_PT * len(str(p["label"])) + 3, LABEL_PT + 2) for p in points]
    obstacles = [(x - 5, y - 5, x + 5, y + 5) for x, y in anchors]
    if budget is not None:  # the budget line's own label, at the right end above the line
        by = ax.transData.transform((0, budget))[1]
        obstacles.append((x1 - 0.55 * LABEL_PT * len(budget_label) - 4, by, x1, by + LABEL_PT + 4))
    order = sorted(range(len(points)), key=lambda i: (anchors[i][0], anchors[i][1]))
    placed = place_labels([anchors[i] for i in order], [sizes[i] for i in order], bounds, obstacles)
    for i, (cx, cy) in zip(order, placed):
        ax_, ay_ = anchors[i]
        far = math.hypot(cx - ax_, cy - ay_) > 14
        ax.annotate(str(points[i]["label"]), xy=(points[i]["median_ms"], points[i]["value"]),
                    xytext=(cx - ax_, cy - ay_), textcoords="offset points", ha="center", va="center",
                    fontsize=LABEL_PT, color="#222222" if kinds[i] != "out" else "#666666",
                    fontweight="bold" if kinds[i] == "chosen" else "normal", annotation_clip=False, zorder=4,
                    arrowprops={"arrowstyle": "-", "color": "#999999", "linewidth": 0.5, "shrinkA": 0,
                                "shrinkB": 5} if far else None)
    if len(set(kinds)) > 1:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker=KIND_STYLE[k][0], color=KIND_STYLE[k][1], linestyle="none",
                          markersize=KIND_STYLE[k][2] * 0.8, label=KIND_STYLE[k][3])
                   for k in ("chosen", "ok", "out") if k in kinds]
        ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=len(handles),
                  fontsize=LABEL_PT - 0.5, frameon=False, borderaxespad=0.0, handletextpad=0.3, columnspacing=1.2)
    return _svg(fig, "accuracy")


def op_breakdown(rows: Sequence[dict], top: int = 8) -> str:
    """Stacked horizontal bars: profiled milliseconds per op type, one bar per target.

    ``rows``: ``{"label", "ops": [{"op_type", "ms"}], "median_ms"}``; the ``top`` op types by total
    time get a colour each (same colour in every bar), the rest are grey. A black tick marks the
    target's measured median latency.
    """
    totals: dict[str, float] = {}
    for r in rows:
        for op in r["ops"]:
            if not op["op_type"].startswith("other"):
                totals[op["op_type"]] = totals.get(op["op_type"], 0.0) + op["ms"]
    named = [k for k, _ in sorted(totals.items(), key=lambda kv: -kv[1])[:top]]
    colors = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(named)}
    legend_rows = -(-(len(named) + 1) // 5)
    top_pt, bars_pt, bottom_pt = 8.0, 24.0 * len(rows), 46.0 + 14.0 * legend_rows
    height = top_pt + bars_pt + bottom_pt  # fixed points for ticks, axis label and legend: nothing overlaps
    fig = _figure(620, height)
    ax = fig.add_axes((0.3, bottom_pt / height, 0.68, bars_pt / height))
    labels = [r["label"] for r in rows]
    for y, r in enumerate(reversed(rows)):
        left = 0.0
        ops = sorted(r["ops"], key=lambda o: (o["op_type"] not in colors, named.index(o["op_type"])
                                              if o["op_type"] in colors else 0))
        for op in ops:
            ax.barh(y, op["ms"], left=left, height=0.62, color=colors.get(op["op_type"], OTHER),
                    edgecolor="white", linewidth=0.4)
            left += op["ms"]
        if r.get("median_ms"):
            ax.plot([r["median_ms"]] * 2, [y - 0.42, y + 0.42], color="black", linewidth=1.6)
    ax.set_yticks(range(len(rows)), list(reversed(labels)), fontsize=LABEL_PT)
    ax.set_xlim(left=0)
    _style(ax, "ms per inference, by op type (runtime profiler); black tick: measured median")
    from matplotlib.patches import Patch

    handles = [Patch(color=colors[k], label=k) for k in named] + [Patch(color=OTHER, label="other")]
    fig.legend(handles=handles, loc="lower center", ncol=min(5, len(handles)), fontsize=LABEL_PT - 0.5,
               frameon=False, bbox_to_anchor=(0.64, 0.0))
    return _svg(fig, "ops")


def latency_vs_tokens(series: Sequence[dict]) -> str:
    """Median latency against patch tokens on log-log axes, one line per series, its fitted slope in
    the legend (near 1: linear in the tokens, as XCiT's attention; toward 2: quadratic, as ViT's).

    ``series``: ``{"label", "points": [(tokens, median_ms), ...], "slope": float | None}``.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator

    series = [s for s in series if len(s.get("points") or ()) >= 1]
    fig = _figure(620, 340)
    ax = fig.add_axes((0.11, 0.14, 0.58, 0.8))
    ax.set_xscale("log")
    ax.set_yscale("log")
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    for i, s in enumerate(series):
        pts = sorted(s["points"])
        color = PALETTE[i % len(PALETTE)]
        slope = s.get("slope")
        label = f"{s['label']}: slope {slope:.2f}" if slope is not None else s["label"]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=5, color=color,
                linestyle="--" if s.get("dashed") else "-", linewidth=1.2, label=label)
    ax.set_xlabel("patch tokens (log)")
    ax.set_ylabel("median latency, ms (log)")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(fmt)
        axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.grid(which="major", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=LABEL_PT, frameon=False)
    return _svg(fig, "tokens")
