"""The report's plots, drawn by matplotlib as inline SVG (the HTML page stays one self-contained file).

Each function takes plain rows from the report and returns an ``<svg>`` string. Text stays text
(``svg.fonttype = none``: searchable, small), ids are salted per plot so several SVGs can share
one page, axes use round tick values with units, and point labels are placed by
:func:`spread_labels` in a column beside the axes, joined to their point by a leader line, so
they never overlap however close the points are.
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


def spread_labels(positions: Sequence[float], gap: float, lo: float, hi: float,
                  tiebreak: Sequence[float] | None = None) -> list[float]:
    """Label positions as close as possible to ``positions`` with neighbours at least ``gap`` apart.

    A one-dimensional dodge: labels keep the order of their points, are pushed apart where they
    collide, and kept within ``[lo, hi]`` when they fit (when they do not, the column is centred
    on the span and runs past it). Points at the same position are ordered by ``tiebreak``
    (e.g. their x, so leader lines from a row of equal points do not cross). Returns positions in
    the order given.
    """
    ties = tiebreak if tiebreak is not None else [0.0] * len(positions)
    order = sorted(range(len(positions)), key=lambda i: (positions[i], ties[i]))
    want = [min(max(positions[i], lo), hi) for i in order]
    n = len(want)
    if not n:
        return []
    if (n - 1) * gap >= hi - lo:
        start = (lo + hi) / 2 - (n - 1) * gap / 2
        placed = [start + k * gap for k in range(n)]
    else:
        placed = list(want)
        for k in range(1, n):  # push up
            placed[k] = max(placed[k], placed[k - 1] + gap)
        if placed[-1] > hi:  # then pull down from the top, keeping gaps
            placed[-1] = hi
            for k in range(n - 2, -1, -1):
                placed[k] = min(placed[k], placed[k + 1] - gap)
    out = [0.0] * n
    for k, i in enumerate(order):
        out[i] = placed[k]
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


def accuracy_vs_latency(points: Sequence[dict], metric_label: str, percent: bool,
                        budget: float | None = None, budget_label: str = "") -> str:
    """Scatter of accuracy against median latency, labels beside the axes with leader lines.

    ``points``: ``{"label", "median_ms", "value", "kind"}`` with kind ``chosen`` (star), ``ok``
    or ``out`` (grey cross: outside the budget). ``budget`` draws the accuracy floor.
    """
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    n = len(points)
    height = max(260.0, 40 + (LABEL_PT + 5) * n * 1.1)
    fig = _figure(620, height)
    ax = fig.add_axes((0.11, 0.16, 0.52, 0.78))
    ys = [p["value"] for p in points] + ([budget] if budget is not None else [])
    lo, hi = min(ys), max(ys)
    pad = max((hi - lo) * 0.12, 0.002 if percent else 1e-5)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlim(0, max(p["median_ms"] for p in points) * 1.12)
    _style(ax, "median latency (ms)", metric_label)
    locator = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10])
    ax.yaxis.set_major_locator(locator)
    ticks = locator.tick_values(*ax.get_ylim())
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    # As few decimals as the tick step needs: 97%, 98%... or 99.5%, 99.6%..., never 0.90438.
    decimals = max(0, math.ceil(-math.log10(step * (100 if percent else 1)) - 1e-9))
    ax.yaxis.set_major_formatter(FuncFormatter(
        (lambda v, _: f"{100 * v:.{decimals}f}%") if percent else (lambda v, _: f"{v:.{decimals}f}")))
    if budget is not None:
        ax.axhline(budget, color="#D55E00", linestyle="--", linewidth=1)
        ax.annotate(budget_label, xy=(0.005, budget), xycoords=("axes fraction", "data"), xytext=(0, 3),
                    textcoords="offset points", fontsize=LABEL_PT - 0.5, color="#D55E00")
    y0, y1 = ax.get_ylim()
    frac = [(p["value"] - y0) / (y1 - y0) for p in points]
    axes_h_pt = height * 0.78
    label_y = spread_labels(frac, gap=(LABEL_PT + 3.5) / axes_h_pt, lo=0.0, hi=1.0,
                            tiebreak=[p["median_ms"] for p in points])
    for i, (p, ly) in enumerate(zip(points, label_y)):
        color = {"chosen": "#009E73", "out": "#999999"}.get(p.get("kind"), PALETTE[i % len(PALETTE)])
        marker = {"chosen": "*", "out": "x"}.get(p.get("kind"), "o")
        ax.plot([p["median_ms"]], [p["value"]], marker=marker, color=color,
                markersize=13 if marker == "*" else 7, linestyle="none")
        ax.annotate(p["label"], xy=(p["median_ms"], p["value"]), xytext=(1.04, ly), textcoords="axes fraction",
                    fontsize=LABEL_PT, va="center", color="#222222" if p.get("kind") != "out" else "#777777",
                    fontweight="bold" if p.get("kind") == "chosen" else "normal",
                    arrowprops={"arrowstyle": "-", "color": color, "linewidth": 0.6, "shrinkA": 1, "shrinkB": 4},
                    annotation_clip=False)
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
