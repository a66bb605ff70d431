"""``report.html``: the page people open from CI, read at a glance at 1,280 px (and 800).

Order: the answer first, the method last. Warnings (a constant reference, noisy latency
figures), the verdict (the ``--target auto`` recommendation with every candidate, or a pass/fail
summary), the results table, the results at each size (``--eval-sizes``), the thresholds, the
plots (``plots.py``, inline SVG; PyTorch is never in a latency plot: its figure is in the
table), where the time goes (per-op-type profiles), extra sections (INT8), and last the device and
the latency method. A merged multi-device report shows each device the same way, after one
overview row per device. One self-contained file: inline CSS and SVG, no scripts, a
Content-Security-Policy that forbids fetching anything. Nothing is wider than the page: tables
wrap their headers and text cells, plots shrink with the window.

Extra sections (e.g. a per-layer sensitivity chart) are functions appended to
:data:`EXTRA_SECTIONS`: each takes one device's report and returns ``(title, html)`` or None.
"""

from __future__ import annotations

import html
from typing import Callable, Optional

from . import plots
from .formats import fmt_cosine, fmt_ms, fmt_percent, fmt_speedup

# Functions (report -> (title, html) or None) whose sections follow the built-in ones per device.
EXTRA_SECTIONS: list[Callable[[dict], Optional[tuple[str, str]]]] = []


def _int8(rep: dict) -> Optional[tuple[str, str]]:
    from .int8 import int8_section

    return int8_section(rep)


EXTRA_SECTIONS.append(_int8)


def sizes_section(rep: dict) -> str:
    """--eval-sizes: accuracy and latency per size, and the latency-vs-tokens curve of the targets
    (log-log, fitted slopes; PyTorch's slope is in the text, not in the plot)."""
    sec = rep.get("sizes")
    if not sec:
        return ""
    from ..evaluate.sizes import size_rows as series_of
    from .formats import size_rows

    rows, columns = size_rows(rep)
    names = {"top-1": "top-1", "agree": "top-1 agreement", "cos min": "cosine (min)", "med ms": "median (ms)",
             "speed-up": "speed-up vs PyTorch", "timed as": ("timed as",)}
    body = []
    for r in rows:
        status, klass = ("reference", "skip") if r["reference"] else _status_cell(r["entry"])
        body.append([_name(r["size"]), str(r["tokens"]), _name(r["target"]), (_e(status), klass),
                     *[(_e(r["cells"].get(c, "-")), "l") if c == "timed as" else _e(r["cells"].get(c, "-"))
                       for c in columns]])
    table = _table(["size", "tokens", "target", "status", *[names[c] for c in columns]], body, left=3)
    targets = [s for s in series_of(rep)[2] if s["label"] != "pytorch-eager"]
    plot = plots.latency_vs_tokens(targets) if any(len(s["points"]) > 1 for s in targets) else ""
    ref_slope = (sec.get("slopes") or {}).get("pytorch")
    ref = f" PyTorch eager's slope: {ref_slope:.2f}." if ref_slope is not None else ""
    return ("<h2>Sizes</h2><p class='sub'>One --dynamic-size artifact at each size (patch "
            f"{_e(sec.get('patch_size'))}); accuracy against PyTorch at the same size. Slope: fitted log-log slope "
            f"of median latency against tokens (1 = linear, 2 = quadratic).{ref}</p>" + table + plot)


def _divergence(rep: dict) -> Optional[tuple[str, str]]:
    from .divergence import section  # --explain: error by depth per target, remedies, --fix, FP16 pre-flight

    return section(rep)


EXTRA_SECTIONS.append(_divergence)

def _scenarios(rep: dict) -> Optional[tuple[str, str]]:
    """--scenario: a table per scenario and a throughput-vs-latency plot per target (report/scenarios.py)."""
    from .scenarios import html_section

    return html_section(rep)


EXTRA_SECTIONS.append(_scenarios)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:16px 20px;max-width:1180px;
color:#1d1d1d;line-height:1.35;font-size:14px}
h1{font-size:21px;margin:0 0 2px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
h3{font-size:15px;margin:16px 0 6px}.sub{color:#555;margin:0 0 10px;font-size:13px}
.verdict{border-radius:6px;padding:10px 14px;margin:8px 0 10px;border:2px solid}
.verdict.ok{background:#e8f6ec;border-color:#2e8b57}.verdict.bad{background:#fdecea;border-color:#c0392b}
.verdict.warn{background:#fff6e0;border-color:#d4a017}
.verdict .head{font-size:18px;font-weight:650;margin-bottom:4px}.verdict p{margin:3px 0;overflow-wrap:anywhere}
table{border-collapse:collapse;margin:6px 0 10px;font-size:12.5px;max-width:100%}
th,td{border:1px solid #d9d9d9;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f3f4f6;font-weight:600;white-space:normal;vertical-align:bottom}
td.l,th.l{text-align:left}td.l{white-space:normal;overflow-wrap:anywhere}
td.why{text-align:left;white-space:normal;min-width:220px;overflow-wrap:anywhere}
.pass{background:#dff3e4;color:#14532d;font-weight:600}.fail{background:#fadbd8;color:#7f1d1d;font-weight:600}
.skip{background:#f1f1f1;color:#555}.chosen{background:#dff3e4;font-weight:650}
.badge{display:inline-block;border-radius:3px;padding:0 6px;font-size:12px;font-weight:600}
.nm,td.k{white-space:nowrap}td.k{text-align:left;color:#333}
.columns{display:flex;flex-wrap:wrap;gap:8px 24px;align-items:flex-start}
.columns>div{flex:1 1 420px;min-width:0}.columns>table{flex:0 1 auto}
svg.plot{display:block;margin:4px 0 12px}
code{background:#f3f4f6;padding:0 3px;border-radius:3px;font-size:12.5px;overflow-wrap:anywhere}
@media (max-width:900px){body{padding:10px 8px;font-size:13px}table{font-size:11.5px}th,td{padding:2px 4px}
td.why{min-width:160px}}
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _name(text) -> str:
    """A target name, never broken across lines (``onnxruntime-int8@batch1`` stays whole)."""
    return f'<span class="nm">{_e(text)}</span>'


def _num(value, spec: str, default: str = "-") -> str:
    return default if value is None else format(value, spec)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 target``, ``2 targets``."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def _table(header: list | None, rows: list[list], left: int = 1, cls: str = "") -> str:
    """A real ``<table>``; cells are pre-escaped HTML or ``(html, css class)``, the first ``left``
    columns align left (and a header given as ``(text,)`` too); ``header`` None: no header row."""
    if header is None:
        body = "".join("<tr>" + "".join((f'<td class="{"k" if i == 0 else "l"}">{c}</td>' if not isinstance(c, tuple)
                                         else f'<td class="{c[1]} l">{c[0]}</td>') for i, c in enumerate(row))
                       + "</tr>" for row in rows)
        return f'<table class="{cls}"><tbody>{body}</tbody></table>'
    head = "".join(f'<th class="l">{h[0] if isinstance(h, tuple) else h}</th>' if i < left or isinstance(h, tuple)
                   else f"<th>{h}</th>" for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            attrs = ' class="l"' if i < left else ""
            if isinstance(cell, tuple):  # (html, css class)
                cell, klass = cell
                attrs = f' class="{klass}{" l" if i < left else ""}"'
            cells.append(f"<td{attrs}>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _status_cell(entry: dict) -> tuple[str, str]:
    status = entry.get("status", "?")
    if status == "ok" and entry.get("passed") is not False:
        return "ok", "pass"
    if status == "built":
        return "built (not run here)", "skip"
    return (status if status != "ok" else "ok, missed a threshold"), "fail"


# --------------------------------------------------------------------------------------------
# Sections of one device's report
# --------------------------------------------------------------------------------------------

def verdict(rep: dict) -> str:
    """The verdict box: the recommendation (``--target auto``) or a pass/fail summary."""
    rec = rep.get("recommendation")
    targets = rep["targets"]
    failed = [t for t in targets if t.get("status") == "failed" or t.get("passed") is False]
    if rec is not None:
        lines = rec.get("lines", [])
        req = rec.get("require_winner")
        klass = "ok" if rec.get("target") and (not req or req["ok"]) else "bad"
        head = lines[0] if lines else "No recommendation"
        body = [f'<div class="head">{_e(head)}</div>']
        if rec.get("artifact"):
            body.append(f"<p>Artifact: <code>{_e(rec['artifact'])}</code></p>")
        body += [f"<p>{_e(line)}</p>" for line in lines[1:2]]
        if rec.get("latency_basis"):
            body.append(f"<p>Ranked by {_e(rec['latency_basis'])}</p>")
        if req:
            body.append(f"<p><b>{_e(lines[-1])}</b></p>")
        box = f'<div class="verdict {klass}" id="verdict">{"".join(body)}</div>'
        rows = []
        order = {"chosen": 0, "slower": 1, "out": 2, "not run": 3}
        for c in sorted(rec["candidates"], key=lambda c: (order[c["verdict"]], c.get("median_ms") or 0)):
            mark = {"chosen": ("chosen", "pass"), "slower": ("within budget, slower", "skip"),
                    "out": ("outside budget", "fail"), "not run": ("not run here", "skip")}[c["verdict"]]
            rows.append([(_name(c["target"]), "chosen" if c["verdict"] == "chosen" else ""),
                         (_name(mark[0]), mark[1]), fmt_ms(c.get("median_ms")), (_e(c["why"]), "why")])
        return box + _table(["candidate", "verdict", "median (ms)", ("why",)], rows, left=2)
    ran = [t for t in targets if t.get("status") == "ok"]
    built = [t for t in targets if t.get("status") == "built"]
    if failed:
        head, klass = f"FAIL: {len(failed)} of {plural(len(targets), 'target')} failed or missed a threshold", "bad"
    elif ran and not built:
        head, klass = (f"PASS: {plural(len(ran), 'target')} ran here and "
                       f"{'holds its' if len(ran) == 1 else 'hold their'} thresholds"), "ok"
    elif ran:  # never a green banner over an artifact nothing ran: built targets are run on the device
        head, klass = (f"{plural(len(ran), 'target')} ran here and {'holds its' if len(ran) == 1 else 'hold their'} "
                       f"thresholds; {len(built)} built but not run here ({', '.join(t['target'] for t in built)}): "
                       f"run {'it' if len(built) == 1 else 'them'} on the device"), "warn"
    else:
        head, klass = "Nothing ran on this device (built only)", "warn"
    # The first line of each reason, whole: the fix is usually named at its end.
    detail = "".join(f"<p><b>{_e(t['target'])}</b>: {_e((t.get('error') or 'missed a threshold').splitlines()[0])}</p>"
                     for t in failed)
    return f'<div class="verdict {klass}" id="verdict"><div class="head">{_e(head)}</div>{detail}</div>'


def thresholds_table(rep: dict) -> str:
    rows = []
    for t in rep["targets"]:
        for c in t.get("checks", []):
            state = "skip" if str(c["why"]).startswith("skipped") else "pass" if c["ok"] else "fail"
            value = c["value"]
            rows.append([_name(t["target"]), _e(c["metric"]), _e(f"{value:.6g}" if isinstance(value, float) else value),
                         _e(c["limit"]), (state.upper(), state)])
    if not rows:
        return ""
    return "<h3>Thresholds</h3>" + _table(["target", "metric", "value", "limit", "result"], rows, left=2)


def results_table(rep: dict) -> str:
    """Every target and PyTorch, one row each: status, accuracy against PyTorch, latency, size.

    Figures are written as in the terminal (:mod:`xcit_export.report.formats`); columns no row
    has a figure for are left out (top-1 without labels, latency for targets timed only on a
    device), so the table fits the page."""
    chosen = (rep.get("recommendation") or {}).get("target")
    ref = rep["reference"]
    rlat, racc = ref.get("latency") or {}, ref.get("accuracy") or {}
    cols = [  # header, cell of a target entry, cell of the reference row
        ("top-1", lambda t, a, l: fmt_percent(a.get("top1")), fmt_percent(racc.get("top1"))),
        ("top-1 drop (pt)", lambda t, a, l: _num(None if a.get("top1") is None or a.get("reference_top1") is None
                                                  else 100 * (a["reference_top1"] - a["top1"]), "+.1f"), "-"),
        ("top-1 agreement", lambda t, a, l: fmt_percent(a.get("top1_agreement")), "-"),
        ("cosine (min)", lambda t, a, l: fmt_cosine(a.get("cosine_min")), "-"),
        ("max abs err", lambda t, a, l: _num(a.get("max_abs_error"), ".1e"), "-"),
        ("median (ms)", lambda t, a, l: fmt_ms(l.get("median_ms")), fmt_ms(rlat.get("median_ms"))),
        ("p90 (ms)", lambda t, a, l: fmt_ms(l.get("p90_ms")), fmt_ms(rlat.get("p90_ms"))),
        ("speed-up vs PyTorch", lambda t, a, l: fmt_speedup(t.get("speedup_vs_pytorch")), "1x"),
        ("size (MB)", lambda t, a, l: _num(((t.get("artifact") or {}).get("size_bytes") or 0) / 1e6 or None, ".1f"),
         "-"),
    ]
    cells = [[get(t, t.get("accuracy") or {}, t.get("latency") or {}) for _, get, _ in cols] for t in rep["targets"]]
    keep = [i for i in range(len(cols)) if any(row[i] != "-" for row in cells)]
    rows = []
    for t, row in zip(rep["targets"], cells):
        status, klass = _status_cell(t)
        name = _name(t["target"]) + (' <span class="badge pass">recommended</span>' if t["target"] == chosen else "")
        rows.append([name, (_e(status), klass), *[row[i] for i in keep]])
    rows.append([("pytorch-eager (reference)", "l"), ("reference", "skip"), *[cols[i][2] for i in keep]])
    notes = [t for t in rep["targets"] if t.get("error") or t.get("note")]
    note_html = "".join(f"<p><b>{_e(t['target'])}</b>: {_e(t.get('error') or t.get('note'))}</p>" for t in notes)
    return _table(["target", "status", *[cols[i][0] for i in keep]], rows) + note_html


def _latency_plot(rep: dict) -> str:
    """The targets' latency distributions; PyTorch eager is never in it (its figure is in the
    table: one slow reference squashes every target into a corner). A report whose targets were
    not timed here says so instead of showing an empty plot."""
    rows = [{"label": t["target"], "samples_ms": (t.get("latency") or {}).get("samples_ms")} for t in rep["targets"]]
    rows = [r for r in rows if r["samples_ms"]]
    if not rows:
        untimed = [t["target"] for t in rep["targets"] if not t.get("latency")]
        where = (" TensorRT engines are timed on the device (<code>xcit-export device-check</code>)."
                 if any(str(n).startswith("tensorrt") for n in untimed) else "")
        return f"<h3>Latency</h3><p>No target was timed on this machine.{where}</p>"
    ref_ms = (rep["reference"].get("latency") or {}).get("median_ms")
    ref = f" PyTorch eager (median {fmt_ms(ref_ms)} ms) is in the table, not in the plot." if ref_ms else ""
    return ("<h3>Latency distribution</h3>" + plots.latency_distribution(rows)
            + f"<p class='sub'>Every timed inference of each target.{ref}</p>")


def _accuracy_plot(rep: dict) -> str:
    """Accuracy against median latency, one numbered point per timed target, and the key table
    beside it (number, target, figures, verdict): points on one value are told apart by their
    numbers, not by colour."""
    rec = rep.get("recommendation") or {}
    verdicts = {c["target"]: c["verdict"] for c in rec.get("candidates", [])}
    labelled = rep["evaluation"].get("labelled") and any((t.get("accuracy") or {}).get("top1") is not None
                                                         for t in rep["targets"])
    metric, label, percent = (("top1", "top-1 accuracy (labelled)", True) if labelled else
                              ("top1_agreement", "top-1 agreement with PyTorch", True))
    if not any((t.get("accuracy") or {}).get(metric) is not None for t in rep["targets"]):
        metric, label, percent = "cosine_mean", "mean cosine with PyTorch", False
    timed = [t for t in rep["targets"] if t.get("latency") and (t.get("accuracy") or {}).get(metric) is not None]
    if len(timed) < 2:
        return ""  # one point says nothing the results table does not
    kind = {"chosen": "chosen", "out": "out"}
    points = [{"label": str(i), "median_ms": t["latency"]["median_ms"], "value": t["accuracy"][metric],
               "kind": kind.get(verdicts.get(t["target"]), "ok")} for i, t in enumerate(timed, 1)]
    budget, budget_label = None, ""
    b = rec.get("budget")
    if b and metric == "top1":
        ref_top1 = next((t["accuracy"].get("reference_top1") for t in rep["targets"]
                         if (t.get("accuracy") or {}).get("reference_top1") is not None), None)
        if ref_top1 is not None:
            budget, budget_label = ref_top1 - b["max_top1_drop"], "budget: PyTorch top-1 - max drop"
    elif b and metric == "top1_agreement":
        budget, budget_label = b["min_top1_agreement"], "budget: min agreement"
    svg = plots.accuracy_vs_latency(points, label, percent, budget, budget_label)
    fmt = fmt_percent if percent else (lambda v: _num(v, ".5f"))
    words = {"chosen": ("recommended", "pass"), "slower": ("slower", ""), "out": ("outside budget", "fail")}
    rows = []
    for p, t in zip(points, timed):
        verdict = words.get(verdicts.get(t["target"]), ("", ""))
        rows.append([f"<b>{p['label']}</b>", _name(t["target"]), fmt_ms(p["median_ms"]), fmt(p["value"])]
                    + ([(_e(verdict[0]), verdict[1])] if verdicts else []))
    head = ["#", ("target",), "median (ms)", _e(label.split(" (")[0])] + ([("verdict",)] if verdicts else [])
    key = _table(head, rows, left=2, cls="key")
    return f"<h3>Accuracy vs latency</h3><div class='columns'><div>{svg}</div>{key}</div>"


def plot_section(rep: dict) -> str:
    return _latency_plot(rep) + _accuracy_plot(rep)


def _ratio_cell(ratio):
    """A profiled / measured ratio, marked when it is more than the tolerance off."""
    from ..evaluate.profiling import off

    return (_num(ratio, ".0%"), "fail") if off(ratio) else _num(ratio, ".0%")


def profile_section(rep: dict) -> str:
    from ..evaluate.profiling import COVERAGE_TOLERANCE, coverage, same_pass_ratio

    profiled = [t for t in rep["targets"] if t.get("op_profile")]
    failed = "".join(f"<p><b>{_e(t['target'])}</b>: the profiler failed ({_e(t['op_profile_error'])})</p>"
                     for t in rep["targets"] if t.get("op_profile_error"))
    if not profiled:
        return f"<h2>Where the time goes</h2>{failed}" if failed else ""
    rows = []
    for t in profiled:
        p = t["op_profile"]
        cov = coverage(t)
        top = ", ".join(f"{o['op_type']} {o['share']:.0%}" for o in p["ops"][:6])
        removed = (f"{p['node_cost_us']:.1f} us x {p.get('nodes', '?')} nodes"
                   if p.get("node_cost_us") is not None else "none")
        rows.append([_name(t["target"]), _num(p["total_ms"], ".2f"),
                     _num((t.get("latency") or {}).get("median_ms"), ".2f"), _ratio_cell(cov),
                     _num(p.get("unprofiled_ms"), ".2f"), _ratio_cell(same_pass_ratio(p)), _e(removed),
                     (_e(top), "why")])
    chart = plots.op_breakdown([{"label": t["target"], "ops": t["op_profile"]["ops"],
                                 "median_ms": (t.get("latency") or {}).get("median_ms")} for t in profiled])
    return ("<h2>Where the time goes</h2><p class='sub'>Per-operator-type time from each runtime's own profiler, "
            "collected in a separate pass after the latency measurement (on a separately compiled model), so the "
            "latency figures above are untouched. TensorRT engines are profiled on the device "
            "(<code>device-check</code>). Where a profiler's own bookkeeping falls inside the spans it times "
            "(onnxruntime's), that cost is measured on the model's own nodes that do no work (Reshape, Squeeze) and "
            "removed from every node. OpenVINO's <i>(outside operators)</i> is the time of the unprofiled runs that no "
            "node's counter covers (the call; shape inference and memory set-up for a dynamic-batch IR). A total more "
            f"than {COVERAGE_TOLERANCE:.0%} off is marked. The unprofiled runs are the same artifact without the "
            "profiler, timed just before the profiled inferences: on a shared host the machine's speed can differ "
            "between the latency pass and this one.</p>" + chart
            + _table(["target", "profiled (ms)", "median (ms)", "ratio", "unprofiled (ms)",
                      "ratio", "cost removed", ("largest op types",)], rows)
            + "<p class='sub'>Profilers: " + _e("; ".join(dict.fromkeys(t["op_profile"]["source"] for t in profiled)))
            + ". <i>median</i>: the target's measured latency; <i>ratio</i>: profiled "
              "time over the figure to its left; "
              "<i>unprofiled</i>: the same artifact without the profiler, timed in this pass; <i>cost removed</i>: "
              "the profiler's own time a node, subtracted from every node (report.json keeps the uncorrected "
              "<code>raw_total_ms</code>).</p>" + failed)


def _span(values: list[float]) -> str:
    lo, hi = f"{min(values):.1f}", f"{max(values):.1f}"
    return lo if lo == hi else f"{lo}-{hi}"


def latency_method(rep: dict) -> str:
    """How latency was taken, in one sentence (``10 untimed warm-ups, then at least 50 timed
    inferences, stopped after 30 s at most, ...``)."""
    lm = rep.get("latency_method", {})
    parts = [f"{lm.get('warmup')} untimed warm-ups, then at least {lm.get('iterations')} timed inferences"]
    if lm.get("min_seconds"):
        parts[0] += f" and {lm['min_seconds']:g} s"
    if lm.get("max_seconds"):
        parts.append(f"stopped after {lm['max_seconds']:g} s at most")
    parts.append(f"one request at a time, {plural(lm.get('threads') or 0, 'thread')}; median and percentiles of "
                 "per-inference wall time")
    return ", ".join(parts)


def device_section(rep: dict) -> str:
    d = rep["device"]
    libs = ", ".join(f"{k} {v}" for k, v in d.get("libraries", {}).items())
    rows = [["CPU", _e(f"{d['cpu']} ({d.get('cpu_count')} logical cores)")],
            ["ISA flags", _e(", ".join(d.get("cpu_flags", [])) or "none of " + "AVX2/AVX-512/VNNI/AMX")],
            ["GPUs", _e(", ".join(d.get("gpus", [])) or "none")],
            ["OS / Python", _e(f"{d.get('os')} / Python {d.get('python')}")],
            ["libraries", _e(libs)],
            ["latency method", _e(latency_method(rep))]]
    noise = rep.get("latency_noise")
    if noise and noise.get("timings"):
        loads = [t["load_avg_1m"] for t in noise["timings"] if t.get("load_avg_1m") is not None]
        worst = max((t["p90_over_median"] for t in noise["timings"] if t.get("p90_over_median")), default=None)
        rows.append(["stability", _e(f"p90 / median up to {worst:.2f} (bound {noise['bounds']['p90_over_median']:g})"
                                     + (f"; load average {_span(loads)} on {plural(noise['cores'], 'core')} "
                                        f"while timing" if loads else ""))])
    return "<h2>Device and method</h2>" + _table(None, rows, cls="facts")


def device_check_body(rep: dict) -> str:
    """A device-check report (no PyTorch on the device): its verdict and checks, as the host's are shown."""
    passed = bool(rep.get("passed"))
    engine = (rep.get("engine") or {}).get("status")
    built = passed and (rep.get("targets") or [{}])[0].get("status") == "built"  # a stand-in ran, no engine
    klass, word = ("warn", "BUILT, NOT RUN (no engine ran here)") if built else \
        ("ok", "PASSED") if passed else ("bad", "FAILED")
    head = (f"<div id=\"verdict\" class=\"verdict {klass}\"><div class=\"head\">"
            f"device-check: {_e(rep['model']['name'])} / {_e(rep.get('target'))} on {_e(rep.get('runner'))}: "
            f"{word}</div><p>engine: {_e(engine)}</p></div>")
    # checks as the verdict writes them (metric/limit/ok/why); a report written before: check/threshold/passed
    rows = [[_e(c.get("metric", c.get("check"))),
             _e(f"{c['value']:.6g}" if isinstance(c.get("value"), float) else c.get("value")),
             _e(c.get("limit", c.get("threshold"))), ("SKIP", "skip") if str(c.get("why", "")).startswith("skipped") else
             ("PASS", "pass") if c.get("ok", c.get("passed")) else ("FAIL", "fail")]
            for c in rep.get("checks", [])]
    table = _table(["check", "value", "threshold", "result"], rows, left=1) if rows else ""
    note = f"<p class='sub'>{_e(rep['note'])}</p>" if rep.get("note") else ""
    d = rep.get("device") or {}
    where = _e(f"{d.get('cpu')}; GPUs: {', '.join(d.get('gpus', [])) or 'none'}; {d.get('os')}")
    scenarios = _scenarios(rep)  # --scenario on the device
    more = f"<h2>{_e(scenarios[0])}</h2>{scenarios[1]}" if scenarios else ""
    return head + table + note + f"<p class='sub'>Device: {where}</p>" + profile_section(rep) + more


def _calibration(ev: dict) -> str:
    """What INT8 targets were calibrated on; the bundled demo set used by default says so."""
    calib = ev.get("calibration")
    if not calib:
        return ""
    note = f": <b>{_e(calib['note'])}</b>" if calib.get("note") else ""
    return f"<p class='sub'>Calibration: {_e(calib['source'])} ({calib['count']} images){note}</p>"


def warnings_html(rep: dict) -> str:
    """The report's warnings and, when the latency figures are noisy, that warning: first on the page."""
    from .noise import ADVICE, noise_reasons

    boxes = "".join(f'<div class="verdict bad"><div class="head">Warning: {_e(w)}</div></div>'
                    for w in rep.get("warnings", []))
    reasons = noise_reasons(rep)
    if reasons:
        boxes += (f'<div class="verdict warn" id="noise"><p><b>Latency figures are noisy</b> '
                  f'({_e("; ".join(reasons))}): {_e(ADVICE)}.</p></div>')
    return boxes


def device_body(rep: dict) -> str:
    """Everything about one device's report: the answer first (verdict, results, sizes), the method last."""
    if rep.get("kind") == "device-check":
        return device_check_body(rep)
    ev = rep["evaluation"]
    labelled = "labelled" if ev.get("labelled") else "unlabelled: agreement and cosine with PyTorch stand in"
    batch = rep["reference"]["latency"].get("batch")
    parts = [warnings_html(rep), verdict(rep),
             f"<h2>Results</h2><p class='sub'>Evaluation: {_e(ev['description'])} ({_e(ev['count'])} inputs, "
             f"{labelled}). Export batch {_e(rep['export']['batch'])}; latency at batch {_e(batch)}"
             f"{' (@batch1: static batch-1 exports)' if any('@batch1' in str(t['target']) for t in rep['targets']) else ''}"
             ".</p>", _calibration(ev), results_table(rep), sizes_section(rep), thresholds_table(rep),
             "<h2>Plots</h2>" + plot_section(rep), profile_section(rep)]
    for section in EXTRA_SECTIONS:
        extra = section(rep)
        if extra:
            parts.append(f"<h2>{_e(extra[0])}</h2>{extra[1]}")
    parts.append(device_section(rep))
    return "".join(parts)


def html_page(report: dict) -> str:
    """The report (or a merged multi-device report) as one HTML file that opens offline."""
    m = report["model"]
    title = f"xcit-export report: {m['name']}"
    if report.get("kind") == "merged":
        sub = f"{len(report['reports'])} devices compared"
        overview = []
        for r in report["reports"]:
            rec = r.get("recommendation") or {}
            failed = sum(t.get("status") == "failed" or t.get("passed") is False for t in r["targets"])
            overview.append([_e(r["device_label"]), _e(rec.get("target") or "-"),
                             _num((rec.get("latency") or {}).get("median_ms"), ".2f"),
                             (f"{failed} failed" if failed else "pass", "fail" if failed else "pass")])
        body = "<h2>Overview</h2>" + _table(["device", "recommended", "median (ms)", "targets"], overview)
        body += "".join(f"<h2 style='font-size:19px'>Device: {_e(r['device_label'])}</h2>{device_body(r)}"
                        for r in report["reports"])
    else:
        sub = (f"weights {m['weights']} · {m['num_classes']} classes · input {m['input_size'][0]}x{m['input_size'][1]}"
               f" · export batch {report['export']['batch']} · {report['device']['cpu']} · {report.get('created', '')}")
        body = device_body(report)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<style>{_CSS}</style></head><body>
<h1>{_e(title)}</h1><p class="sub">{_e(sub)}</p>
{body}
</body></html>
"""
