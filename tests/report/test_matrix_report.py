"""matrix.html's structure (read with the standard library's html.parser, no browser) and the
per-(model, device kind) recommendation of a matrix with ``[targets] auto = true``. No builds."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from xcit_export.recipe import load_recipe
from xcit_export.report.matrix_html import cell_anchor, matrix_page
from xcit_export.scale.matrix import recommendations

A, B, C = "a" * 56, "b" * 56, "c" * 56  # Ray node ids are 56 hex digits
RECIPE = """
[model]
name = ["xcit_nano_12_p16_224", "xcit_nano_12_p8_224"]
[data]
eval = "demo"
[targets]
auto = true
[auto]
max_top1_drop = 0.02
[targets.onnxruntime-fp32]
device = ["kind-a", "kind-b"]
[targets.openvino-fp16]
device = "kind-a"
thresholds = { max_top1_drop = 0.001 }
"""


def _where(node_id: str, kinds: list[str]) -> dict:
    return {"node_id": node_id, "node": "vm", "kinds": kinds}


def _ok(model, target, kind, node_id, kinds, median, top1, agreement=1.0, **extra) -> dict:
    where = _where(node_id, kinds)
    return {"model": model, "target": target, "device_kind": kind, "status": "ok", "node": "vm", "node_id": node_id,
            "node_kinds": kinds, "placement": {"latency": where, "accuracy": [{"shard": "0:16", **where}]},
            "accuracy": {"count": 32, "top1": top1, "reference_top1": 0.5, "top1_agreement": agreement,
                         "cosine_mean": 0.99999, "cosine_min": 0.9999, "max_abs_error": 1e-3},
            "latency": {"median_ms": median, "p90_ms": median * 1.2}, "threads": 1,
            "finished": "2026-11-28T15:00:00+00:00", **extra}


def _report(tmp_path: Path) -> dict:
    m1, m2 = "xcit_nano_12_p16_224", "xcit_nano_12_p8_224"
    rows = [
        _ok(m1, "onnxruntime-fp32", "kind-a", B, ["kind-a"], 2.5, 0.5),
        {"model": m1, "target": "onnxruntime-fp32", "device_kind": "kind-b", "status": "failed",
         "error": f"cell {m1} x onnxruntime-fp32 x kind-b: ... accuracy 0:16: node lost: no live node of kind kind-b "
                  f"(node(s) {C} advertised it when the run started and are gone)",
         "placement": {"latency": {"lost_nodes": [_where(C, ["kind-a", "kind-b"])]}, "accuracy": []},
         "lost_nodes": [_where(C, ["kind-a", "kind-b"])], "finished": "2026-11-28T15:00:01+00:00"},
        _ok(m1, "openvino-fp16", "kind-a", B, ["kind-a"], 1.5, 0.48, agreement=0.97,
            checks=[{"metric": "max_top1_drop", "value": 0.02, "limit": 0.001, "ok": False, "why": "over"}],
            passed=False),
        _ok(m2, "onnxruntime-fp32", "kind-a", B, ["kind-a"], 4.0, 0.5),
        {"model": m2, "target": "onnxruntime-fp32", "device_kind": "kind-b", "status": "failed",
         "error": "cell ...: no node advertises device kind 'kind-b' (the ray executor's nodes advertise: kind-a)"},
        _ok(m2, "openvino-fp16", "kind-a", B, ["kind-a"], 3.0, 0.5),
    ]
    path = tmp_path / "auto.toml"
    path.write_text(RECIPE)
    models = {m: {"info": {"evaluation": {"labelled": True}}, "classify": True} for m in (m1, m2)}
    return {"recipe": str(path), "executor": "ray", "shards": 2, "created": "2026-11-28T15:00:02+00:00",
            "nodes": [{"node_id": A, "name": "vm", "cpus": 1, "kinds": ["pytorch"]},
                      {"node_id": B, "name": "vm", "cpus": 1, "kinds": ["kind-a"]},
                      {"node_id": C, "name": "vm", "cpus": 1, "kinds": ["kind-a", "kind-b"], "lost": True}],
            "models": {}, "cells": rows, "recommendations": recommendations(load_recipe(path), rows, models)}


class _Page(HTMLParser):
    """Tables (with their class and cells: class, text, links), every id, every link."""

    def __init__(self):
        super().__init__()
        self.ids, self.links, self.tables = set(), [], []
        self._td = None
        self.divs = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
            if self._td is not None:
                self._td["links"].append(a["href"])
        if tag == "table":
            self.tables.append({"class": a.get("class", ""), "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th") and self.tables:
            self._td = {"tag": tag, "class": a.get("class", ""), "text": "", "links": []}
            self.tables[-1]["rows"][-1].append(self._td)
        elif tag == "div":
            self.divs.append(a.get("class", ""))

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._td = None

    def handle_data(self, data):
        if self._td is not None:
            self._td["text"] += data


def test_recommendation_per_model_and_kind(tmp_path):
    recs = {(r["model"], r["device_kind"]): r for r in _report(tmp_path)["recommendations"]}
    assert set(recs) == {(m, k) for m in ("xcit_nano_12_p16_224", "xcit_nano_12_p8_224") for k in ("kind-a", "kind-b")}
    # p16 on kind-a: openvino-fp16 is faster and within the [auto] budget, but misses its own recipe threshold
    p16a = recs[("xcit_nano_12_p16_224", "kind-a")]
    assert p16a["target"] == "onnxruntime-fp32"
    assert any(line.startswith("openvino-fp16: its own limits: max_top1_drop = 0.02 (limit 0.001)")
               for line in p16a["lines"]), p16a["lines"]
    assert recs[("xcit_nano_12_p8_224", "kind-a")]["target"] == "openvino-fp16"  # 3.0 ms < 4.0 ms
    assert recs[("xcit_nano_12_p16_224", "kind-b")]["target"] is None  # its only cell failed
    assert any("node lost" in line for line in recs[("xcit_nano_12_p16_224", "kind-b")]["lines"])


def test_matrix_html_structure(tmp_path):
    report = _report(tmp_path)
    page = _Page()
    page.feed(matrix_page(report))
    grids = [t for t in page.tables if "grid" in t["class"].split()]
    assert len(grids) == 2  # one grid per model
    head = [c["text"] for c in grids[0]["rows"][0]]
    assert head[1:] == ["kind-a", "kind-b"]  # device kinds across
    body = {r[0]["text"]: r[1:] for r in grids[0]["rows"][1:]}  # targets down
    assert set(body) == {"onnxruntime-fp32", "openvino-fp16", "recommended"}
    ort_a, ort_b = body["onnxruntime-fp32"]
    assert ort_a["class"].split() == ["cell", "pass"]
    assert "median 2.50 ms" in ort_a["text"] and "top-1 drop +0.0 pt" in ort_a["text"]
    assert "node bbbbbbbb" in ort_a["text"]
    assert ort_b["class"].split() == ["cell", "fail"] and "node lost: no live node of kind kind-b" in ort_b["text"]
    ov_a, ov_b = body["openvino-fp16"]
    assert ov_a["class"].split() == ["cell", "fail"] and "ok, missed a threshold" in ov_a["text"]
    assert "recommended" in ort_a["text"] and "recommended" not in ov_a["text"]
    assert ov_b["class"] == "na"  # not in the recipe
    rec_a, rec_b = body["recommended"]
    assert "onnxruntime-fp32" in rec_a["text"] and "pass" in rec_a["class"].split()
    assert "fail" in rec_b["class"].split()
    # every grid cell links to its details, and every in-page link lands on an element
    for row in grids[0]["rows"][1:3] + grids[1]["rows"][1:3]:
        for cell in row[1:]:
            if cell["class"] != "na":
                assert cell["links"] and cell["links"][0].startswith("#cell-")
    anchors = [h[1:] for h in page.links if h.startswith("#")]
    assert anchors and all(a in page.ids for a in anchors)
    assert {cell_anchor(r) for r in report["cells"]} <= page.ids
    # finished cells link their own JSON report; the verdict says FAIL
    assert "xcit_nano_12_p16_224/cells/onnxruntime-fp32@kind-a.json" in page.links
    assert "verdict bad" in page.divs
    nodes = next(t for t in page.tables if [c["text"] for c in t["rows"][0]][:2] == ["node id", "host"])
    lost = next(r for r in nodes["rows"][1:] if r[0]["text"] == "cccccccc")
    assert lost[4]["text"] == "lost during the run" and "fail" in lost[4]["class"].split()
    # the lost node is named in the failed cell's details
    details = next(t for t in page.tables if any("abandoned, node lost" in c["text"] for r in t["rows"] for c in r))
    assert any(c["text"] == "cccccccc" for r in details["rows"] for c in r)
