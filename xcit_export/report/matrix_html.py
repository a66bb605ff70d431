"""``matrix.html``: a recipe matrix (models x targets x device kinds) as one page read at a glance.

In report.html's style (:mod:`xcit_export.report.html`: its CSS, tables and pass/fail colours):
the verdict first, then per model a grid of targets (rows) by device kinds (columns), each cell
coloured by pass/fail with its median latency and top-1 drop (top-1 agreement where the set has no
labels) and a link to its details; the recommendation per (model, device kind) where the recipe
sets ``[targets] auto = true``; the nodes the run saw; then every cell's details (figures, the
node id, kinds and hostname each of its tasks ran on, checks, and its own JSON report).
One self-contained file, no scripts, nothing fetched.
"""

from __future__ import annotations

from pathlib import Path

from .html import _CSS, _e, _name, _num, _status_cell, _table, plural

_MATRIX_CSS = """
table.grid th{text-align:left}table.grid td.cell{text-align:left;vertical-align:top;min-width:150px;white-space:normal;line-height:1.3}
table.grid td.cell a{color:inherit}table.grid td.na{background:#fafafa;color:#aaa;text-align:center}
table.grid td.cell .fig{font-weight:400;font-size:12px;display:block}
table.grid td.rec{background:#f6f9ff}.node{font-family:ui-monospace,monospace;font-size:11.5px;color:#444}
.legend span{margin-right:12px}.details h3{margin-top:18px}
"""

CELLS_DIR = "cells"  # where scale/matrix.py writes each cell's report: OUT/<model>/cells/<target>@<kind>.json


def cell_anchor(row: dict) -> str:
    """The id of a cell's details on the page (names are plain: letters, digits, - _ .)."""
    return f"cell-{row['model']}--{row['target']}--{row['device_kind']}"


def cell_json(row: dict) -> str:
    """The cell's own report, relative to matrix.html."""
    return f"{row['model']}/{CELLS_DIR}/{row['target']}@{row['device_kind']}.json"


def _short(node_id) -> str:
    return node_id[:8] if node_id else "-"


def _failed(row: dict) -> bool:
    return row.get("status") == "failed" or row.get("passed") is False


def _drop(acc: dict):
    if acc.get("top1") is None or acc.get("reference_top1") is None:
        return None
    return 100 * (acc["reference_top1"] - acc["top1"])


def _grid_cell(row: dict, chosen: bool, ray: bool = True) -> tuple[str, str]:
    status, klass = _status_cell(row)
    acc, lat = row.get("accuracy") or {}, row.get("latency") or {}
    figs = []
    if lat.get("median_ms") is not None:
        figs.append(f"median {lat['median_ms']:.2f} ms")
    drop = _drop(acc)
    if drop is not None:
        figs.append(f"top-1 drop {drop:+.1f} pt")
    elif acc.get("top1_agreement") is not None:
        figs.append(f"agreement {acc['top1_agreement']:.1%}")
    if ray and (row.get("node_id") or row.get("node")):  # a local run has one node: this machine
        ident = _short(row.get("node_id")) if row.get("node_id") else row.get("node")
        figs.append(f'<span class="node">node {_e(ident)}</span>')
    for lost in row.get("lost_nodes", []):
        figs.append(f'<span class="node">node {_e(_short(lost.get("node_id")))} lost</span>')
    if row.get("status") == "failed" and row.get("error"):
        figs.append(_e(_grid_reason(row)))
    badge = ' <span class="badge pass">recommended</span>' if chosen else ""
    body = (f'<a href="#{_e(cell_anchor(row))}"><b>{_e(status)}</b></a>{badge}'
            + "".join(f'<span class="fig">{f}</span>' for f in figs))
    return body, f"cell {klass}"


def reason(row: dict) -> str:
    """A failed cell's error for a page that already names the cell: without the ``cell M x T x K:``
    prefix the matrix runner puts on it, the first line whole (the fix is named at its end)."""
    text = str(row.get("error") or "").splitlines()[0] if row.get("error") else ""
    label = f"{row.get('model')} x {row.get('target')} x {row.get('device_kind') or 'any'}"
    if text.startswith(f"cell {label}: "):
        text = text[len(label) + 7:]
    elif text.startswith("cell ") and ": " in text:  # "cell ...: " (a label written some other way)
        text = text.split(": ", 1)[1]
    if text.startswith(label + " "):  # a task's label starts with the cell's: "<cell> accuracy 0:16: ..."
        text = text[len(label) + 1:]
    return text


def _grid_reason(row: dict) -> str:
    """The part of a cell's error a grid cell shows: from the marker that says what happened
    (``node lost: ...``) on, whole."""
    text = reason(row)
    for marker in ("node lost:", "no node advertises", "lost twice", "failed twice"):
        at = text.find(marker)
        if at >= 0:
            return text[at:]
    return text


def _missed(row: dict) -> str:
    """The thresholds a cell missed, with figures."""
    misses = [f"{c['metric']} {c['value']:.6g} vs limit {c['limit']}" if isinstance(c["value"], float)
              else f"{c['metric']} {c['value']} vs limit {c['limit']}" for c in row.get("checks", []) if not c["ok"]]
    return "missed " + ("; ".join(misses) if misses else "a threshold")


def verdict_box(report: dict) -> str:
    cells = report["cells"]
    failed = [r for r in cells if _failed(r)]
    ok = [r for r in cells if r.get("status") == "ok" and r.get("passed") is not False]
    if failed:
        head, klass = f"FAIL: {len(failed)} of {plural(len(cells), 'cell')} failed or missed a threshold", "bad"
    elif ok:
        head, klass = (f"PASS: {plural(len(ok), 'cell')} ran and {'holds its' if len(ok) == 1 else 'hold their'} "
                       f"thresholds"), "ok"
    else:
        head, klass = "Nothing ran (built only)", "warn"
    detail = "".join(f"<p><a href=\"#{_e(cell_anchor(r))}\">{_e(r['model'])} x {_e(r['target'])} x "
                     f"{_e(r['device_kind'])}</a>: {_e(reason(r) if r.get('error') else _missed(r))}</p>"
                     for r in failed[:12])
    more = f"<p>... and {len(failed) - 12} more (see the details below)</p>" if len(failed) > 12 else ""
    return f'<div class="verdict {klass}" id="verdict"><div class="head">{_e(head)}</div>{detail}{more}</div>'


def grid_section(report: dict) -> str:
    recs = {(r["model"], r["device_kind"]): r for r in report.get("recommendations") or []}
    where = (", the Ray node that timed it" if report.get("executor") == "ray" else "")
    parts = ["<h2>Matrix</h2><p class='sub legend'><span class='badge pass'>ok</span>"
             "<span class='badge fail'>failed or missed a threshold</span>"
             "<span class='badge skip'>built, not run</span> Each cell: median latency, top-1 drop vs PyTorch "
             f"(labelled sets; top-1 agreement otherwise){where}. Click a cell for its details.</p>"]
    for model in dict.fromkeys(r["model"] for r in report["cells"]):
        rows = [r for r in report["cells"] if r["model"] == model]
        kinds = list(dict.fromkeys(r["device_kind"] for r in rows))
        by = {(r["target"], r["device_kind"]): r for r in rows}
        body = []
        for target in dict.fromkeys(r["target"] for r in rows):
            line = [_e(target)]
            for kind in kinds:
                row = by.get((target, kind))
                chosen = (recs.get((model, kind)) or {}).get("target") == target
                line.append(_grid_cell(row, chosen, ray=report.get("executor") == "ray") if row
                            else ("not in the recipe", "na"))
            body.append(line)
        if any((model, k) in recs for k in kinds):
            line = [("<b>recommended</b>", "rec")]
            for kind in kinds:
                rec = recs.get((model, kind))
                if rec is None:
                    line.append(("-", "na"))
                elif rec.get("target"):
                    line.append((f"<b>{_e(rec['target'])}</b><span class='fig'>"
                                 f"{_num((rec.get('latency') or {}).get('median_ms'), '.2f')} ms median</span>",
                                 "cell pass"))
                else:
                    line.append(("no candidate holds the budget", "cell fail"))
            body.append(line)
        html = _table(["target \\ device kind", *[_e(k) for k in kinds]], body, cls="grid")
        parts.append(f"<h3>{_e(model)}</h3>{html}")
    return "".join(parts)


def recommendations_section(report: dict) -> str:
    recs = report.get("recommendations")
    if not recs:
        return ""
    rows = []
    for r in recs:
        others = "; ".join(r["lines"][2:]) if len(r.get("lines", [])) > 2 else ""
        rows.append([_name(r["model"]), _name(r["device_kind"]),
                     (_e(r.get("target") or "none"), "pass" if r.get("target") else "fail"),
                     _num((r.get("latency") or {}).get("median_ms"), ".2f"), (_e(others) or "-", "why")])
    budget = recs[0].get("budget") or {}
    sub = (f"<p class='sub'>Budget: top-1 drop at most {100 * budget.get('max_top1_drop', 0):.1f} pt, top-1 agreement "
           f"at least {budget.get('min_top1_agreement', 0):.1%} ({_e(budget.get('basis', ''))}); the fastest median "
           f"latency within it wins, per model and device kind.</p>") if budget else ""
    return ("<h2>Recommendations</h2>" + sub
            + _table(["model", "device kind", "recommended", "median (ms)", ("why the others lost",)], rows, left=2))


def nodes_section(report: dict) -> str:
    if report.get("executor") != "ray":
        here = ", ".join(f"{n['name']} ({n['cpus']} CPUs)" for n in report["nodes"]) or "this machine"
        return f"<h2>Where it ran</h2><p class='sub'>Every cell ran here, one after another: {_e(here)}.</p>"
    timed: dict = {}
    for r in report["cells"]:
        if r.get("node_id") or r.get("node"):
            timed.setdefault(r.get("node_id") or r.get("node"), []).append(r)
    rows = []
    for n in report["nodes"]:
        ident = n.get("node_id")
        here = timed.get(ident or n["name"], [])
        state = ("lost during the run", "fail") if n.get("lost") else ("alive", "pass")
        rows.append([f'<span class="node" title="{_e(ident or "")}">{_e(_short(ident) if ident else "-")}</span>',
                     _e(n["name"]), str(n["cpus"]), _e(", ".join(n["kinds"]) or "none"), state,
                     (", ".join(f'<a href="#{_e(cell_anchor(r))}">{_e(r["target"])}@{_e(r["device_kind"])}</a>'
                                for r in here) or "-", "why")])
    return ("<h2>Nodes</h2><p class='sub'>As the run saw them at its start: the Ray node id (hover for all of it), "
            "the hostname (several nodes may share one), and the kinds each advertises.</p>"
            + _table(["node id", "host", ("CPUs",), ("kinds",), ("state",), ("cells timed there",)], rows, left=6))


def _placement_rows(row: dict) -> list[list]:
    p = row.get("placement") or {}
    out = []
    if p.get("latency"):
        out.append(["latency", p["latency"]])
    for shard in p.get("accuracy", []):
        out.append([f"accuracy {shard.get('shard', '')}", shard])
    rows = []
    for what, w in out:
        if w.get("node"):
            rows.append([_e(what), f'<span class="node" title="{_e(w.get("node_id") or "")}">'
                                   f'{_e(_short(w.get("node_id")))}</span>',
                         _e(w.get("node", "-")), _e(", ".join(w.get("kinds") or []) or "-")])
        for n in w.get("lost_nodes", []):
            rows.append([(_e(f"{what}: abandoned, node lost"), "fail"),
                         f'<span class="node" title="{_e(n.get("node_id") or "")}">{_e(_short(n.get("node_id")))}</span>',
                         _e(n.get("node", "-")), _e(", ".join(n.get("kinds") or []) or "-")])
    return rows


def details_section(report: dict) -> str:
    parts = ["<h2>Cell details</h2>"]
    for r in report["cells"]:
        status, klass = _status_cell(r)
        acc, lat = r.get("accuracy") or {}, r.get("latency") or {}
        facts = [["status", (_e(status), klass)]]
        if r.get("error") or r.get("note"):
            facts.append(["why" if r.get("error") else "note", (_e(reason(r) if r.get("error") else r["note"]), "why")])
        if acc:
            facts += [["inputs", _e(acc.get("count"))], ["top-1", _num(acc.get("top1"), ".2%")],
                      ["PyTorch top-1", _num(acc.get("reference_top1"), ".2%")],
                      ["top-1 drop (pt)", _num(_drop(acc), "+.2f")],
                      ["top-1 agreement", _num(acc.get("top1_agreement"), ".2%")],
                      ["cosine (mean / min)", f"{_num(acc.get('cosine_mean'), '.6f')} / {_num(acc.get('cosine_min'), '.6f')}"],
                      ["max abs error", _num(acc.get("max_abs_error"), ".3e")]]
        if lat:
            facts += [["latency median / p90 (ms)", f"{_num(lat.get('median_ms'), '.2f')} / {_num(lat.get('p90_ms'), '.2f')}"],
                      ["threads", _e(r.get("threads", "-"))]]
        if r.get("finished"):
            facts.append(["finished", _e(r["finished"])])
        table = _table(None, [[_e(k), v] for k, v in facts], cls="facts")
        where = _placement_rows(r)
        where_html = ("<p class='sub'>Where its tasks ran:</p>"
                      + _table(["task", "node id", "host", "kinds"], where, left=4)) if where else ""
        checks = [[_e(c["metric"]), _e(f"{c['value']:.6g}" if isinstance(c["value"], float) else c["value"]),
                   _e(c["limit"]), ("PASS", "pass") if c["ok"] else ("FAIL", "fail")] for c in r.get("checks", [])]
        checks_html = _table(["metric", "value", "limit", "result"], checks) if checks else ""
        link = (f"<p class='sub'>This cell's report: <a href=\"{_e(cell_json(r))}\">{_e(cell_json(r))}</a></p>"
                if r.get("finished") else "")
        parts.append(f'<div class="cell-details" id="{_e(cell_anchor(r))}"><h3>{_e(r["model"])} x {_e(r["target"])} x '
                     f"{_e(r['device_kind'])}</h3>{table}{where_html}{checks_html}{link}</div>")
    return "".join(parts)


def matrix_page(report: dict) -> str:
    """The matrix report as one HTML page that opens offline."""
    title = f"xcit-export matrix: {Path(str(report['recipe'])).name}"
    sub = (f"{plural(len(report['cells']), 'cell')} · executor {report['executor']} · "
           f"{plural(report['shards'], 'shard')} per evaluation set · {plural(len(report['nodes']), 'node')} · "
           f"{report.get('created', '')}")
    from .scenarios import html_section, matrix_view

    scenarios = html_section(matrix_view(report))  # --scenario: a table per scenario, a row per cell
    body = (verdict_box(report) + grid_section(report) + recommendations_section(report)
            + (f"<h2>{_e(scenarios[0])}</h2>{scenarios[1]}" if scenarios else "") + nodes_section(report)
            + f'<div class="details">{details_section(report)}</div>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<style>{_CSS}{_MATRIX_CSS}</style></head><body>
<h1>{_e(title)}</h1><p class="sub">{_e(sub)}</p>
{body}
</body></html>
"""


def write_matrix_html(report: dict, path: Path) -> Path:
    from ..io import write_text_atomic

    return write_text_atomic(Path(path), matrix_page(report))
