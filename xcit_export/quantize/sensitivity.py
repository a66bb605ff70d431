"""Per-layer-group INT8 sensitivity and the accuracy-budget search, for any Q/DQ ONNX.

Works on the quantized graph the target built (onnxruntime's QDQ, ModelOpt's Q/DQ), calibrated
once: "quantize only group G" is that graph with the Q/DQ pairs feeding every *other* group's
compute nodes removed (activations rewired to the float tensor before the QuantizeLinear,
weights replaced by the FP32 originals), so no step re-calibrates.

Groups follow XCiT's structure, named from the parameters each compute node reads (the exporter
keeps PyTorch's parameter names on the initializers): ``patch_embed``, ``blockN.attn`` (qkv,
the attention products, proj), ``blockN.mlp``, ``blockN.lpi`` (the local patch interaction
convolutions), ``class_attention`` (both class-attention blocks) and ``head``.

Sensitivity: each group quantized alone, top-1 agreement and cosine against FP32 on the
evaluation set, sorted by damage (agreement lost first, then mean cosine). Budget search: with a
``max_top1_drop`` budget, keep the most damaging groups in high precision one at a time until the
drop (labelled top-1 against the FP32 ONNX, or 1 - agreement without labels) holds, or say plainly
that it cannot. Both run on the evaluation set, so figures on that set are optimistic afterwards
(as with NNCF's accuracy control).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import XcitExportError
from ..evaluate.validate import evaluation_batch
from ..values import as_drop

COMPUTE_OPS = ("Conv", "MatMul", "Gemm", "ConvTranspose")
# (parameter-name pattern, group name template); first match wins, so class attention precedes blocks.
_GROUP_PATTERNS = (
    (re.compile(r"patch_embed\."), "patch_embed"),
    (re.compile(r"cls_attn_blocks\."), "class_attention"),
    (re.compile(r"(?<![a-z_])blocks\.(\d+)\.attn\."), "block{}.attn"),
    (re.compile(r"(?<![a-z_])blocks\.(\d+)\.mlp\."), "block{}.mlp"),
    (re.compile(r"(?<![a-z_])blocks\.(\d+)\.local_mp\."), "block{}.lpi"),
    (re.compile(r"(^|\.)head\."), "head"),
)


def _group_of(name: str) -> str | None:
    for pattern, template in _GROUP_PATTERNS:
        m = pattern.search(name)
        if m:
            return template.format(*[g for g in m.groups() if g and g != "."][:1])
    return None


def node_groups(model: "onnx.ModelProto") -> dict[str, str]:
    """Compute node name -> group, for a float or a Q/DQ graph.

    A node's parameters are its initializer inputs, directly or through one DequantizeLinear. A
    compute node without named parameters (an attention product) belongs to the group of the
    named compute node before it.
    """
    inits = {i.name for i in model.graph.initializer}
    dq_source = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    groups: dict[str, str] = {}
    last = None
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        params = [i for i in node.input if i in inits] + [dq_source[i] for i in node.input if dq_source.get(i) in inits]
        group = next((g for g in map(_group_of, params) if g), None)
        if group is None and not params and last and (last.endswith(".attn") or last == "class_attention"):
            group = last
        if group:
            groups[node.name] = last = group
    return groups


def quantized_groups(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Group -> its compute nodes that read a DequantizeLinear output (i.e. run in INT8), in graph order."""
    dq_out = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    groups = node_groups(model)
    out: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in COMPUTE_OPS and any(i in dq_out for i in node.input):
            out.setdefault(groups.get(node.name, "other"), []).append(node.name)
    return out


def _dequantize(init: "onnx.TensorProto", scale: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    from onnx import numpy_helper

    q = numpy_helper.to_array(init).astype(np.float64)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero = None if zero is None else zero.reshape(shape)
    return ((q - (0 if zero is None else zero.astype(np.float64))) * scale).astype(scale.dtype)


def dequantize_groups(model: onnx.ModelProto, groups: set[str], float_model: onnx.ModelProto | None = None
                      ) -> onnx.ModelProto:
    """A copy of ``model`` whose compute nodes in ``groups`` take float inputs again.

    Activations are rewired to the tensor before their QuantizeLinear; weights become the FP32
    originals from ``float_model`` (same node name and input slot, cast to the graph's dtype), or
    the dequantized values where no original is found. Orphaned Q/DQ nodes are removed.
    """
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    names = node_groups(out)
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    originals = {}
    if float_model is not None:
        float_inits = {i.name: i for i in float_model.graph.initializer}
        originals = {n.name: [float_inits.get(i) for i in n.input] for n in float_model.graph.node}
    new_inits = []
    for node in g.node:
        if node.op_type not in COMPUTE_OPS or names.get(node.name, "other") not in groups:
            continue
        for slot, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in inits:  # a weight or bias
                scale = numpy_helper.to_array(inits[dq.input[1]])
                zero = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] else None
                axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
                value = _dequantize(inits[dq.input[0]], scale, zero, axis)
                orig = (originals.get(node.name) or [None] * (slot + 1))
                orig = orig[slot] if slot < len(orig) else None
                if orig is not None and tuple(orig.dims) == value.shape:
                    value = numpy_helper.to_array(orig).astype(value.dtype)
                fname = f"{name}__float"
                new_inits.append(numpy_helper.from_array(value, fname))
                node.input[slot] = fname
            else:
                q = producer.get(dq.input[0])
                node.input[slot] = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]
    # onnxruntime's QDQ also quantizes a compute node's output (Q -> DQ after it): bypass that pair
    # for every reader of a dequantized group's output, except a still-quantized compute node.
    graph_outputs = {o.name for o in g.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for node in g.node:
        if node.op_type not in COMPUTE_OPS or names.get(node.name, "other") not in groups:
            continue
        for q in [r for r in readers.get(node.output[0], []) if r.op_type == "QuantizeLinear"]:
            for dq in [r for r in readers.get(q.output[0], []) if r.op_type == "DequantizeLinear"]:
                if dq.output[0] in graph_outputs:  # e.g. the logits: the compute node writes it again
                    for reader in readers.get(node.output[0], []):
                        for slot, name in enumerate(reader.input):
                            if name == node.output[0] and reader is not q:
                                reader.input[slot] = dq.output[0]
                    q.input[0] = node.output[0] = dq.output[0]
                    dq.output[0] = f"{dq.output[0]}__unused"
                    continue
                for reader in readers.get(dq.output[0], []):
                    if reader.op_type in COMPUTE_OPS and names.get(reader.name, "other") not in groups:
                        continue
                    for slot, name in enumerate(reader.input):
                        if name == dq.output[0]:
                            reader.input[slot] = node.output[0]
    g.initializer.extend(new_inits)
    _prune(out)
    return out


def _prune(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody reads, then unused initializers."""
    g = model.graph
    outputs = {o.name for o in g.output}
    while True:
        used = outputs | {i for n in g.node for i in n.input}
        dead = [n for n in g.node if n.output and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------

class Evaluator:
    """Runs graphs on onnxruntime's CPU provider over the evaluation set and compares with FP32."""

    def __init__(self, fp32: Path, x: np.ndarray, labels: np.ndarray | None, batch: int | None,
                 threads: int | None, time_steps: bool = True):
        import onnx

        self.x, self.labels, self.batch, self.threads, self.time_steps = x, labels, evaluation_batch(batch), threads, time_steps
        self.reference = self._run(onnx.load(str(fp32)))[0]
        self.reference_top1 = None if labels is None else float((self.reference.argmax(1) == labels).mean())

    def _session(self, model: onnx.ModelProto):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = self.threads, 1
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        out = sess.get_outputs()[0].name
        return lambda x: sess.run([out], {name: x})

    def _run(self, model: onnx.ModelProto) -> tuple[np.ndarray, Callable]:
        from ..evaluate.validate import run_in_batches

        infer = self._session(model)
        return run_in_batches(infer, self.x, self.batch)[0], infer

    def measure(self, model: onnx.ModelProto) -> dict:
        from ..evaluate.validate import LatencyOptions, compare_outputs, measure_latency

        out, infer = self._run(model)
        acc = compare_outputs(out, self.reference, self.labels)
        row = {"top1_agreement": acc["top1_agreement"], "cosine_mean": acc["cosine_mean"],
               "cosine_min": acc["cosine_min"]}
        if self.labels is not None:
            row["top1"] = acc["top1"]
            row["top1_drop"] = round(self.reference_top1 - acc["top1"], 6)
        else:
            row["top1_drop"] = round(1.0 - acc["top1_agreement"], 6)
        if self.time_steps:
            x1 = np.ascontiguousarray(self.x[:self.batch] if len(self.x) >= self.batch else
                                      np.resize(self.x, (self.batch, *self.x.shape[1:])))
            row["median_ms"] = round(measure_latency(infer, x1, LatencyOptions(warmup=3, iterations=20)).median_ms, 3)
        return row


def sensitivity(model: onnx.ModelProto, evaluator: Evaluator, float_model: onnx.ModelProto | None = None,
                progress: Callable[[str], None] = lambda m: None) -> list[dict]:
    """Each group quantized alone (every other group in float), sorted by damage, worst first."""
    groups = quantized_groups(model)
    rows = []
    for i, (group, nodes) in enumerate(groups.items()):
        progress(f"sensitivity {i + 1}/{len(groups)}: {group}")
        alone = dequantize_groups(model, set(groups) - {group}, float_model)
        timed, evaluator.time_steps = evaluator.time_steps, False
        try:
            row = evaluator.measure(alone)
        finally:
            evaluator.time_steps = timed
        rows.append({"group": group, "nodes": len(nodes), **{k: v for k, v in row.items() if k != "top1_drop"}})
    rows.sort(key=lambda r: (r["top1_agreement"], r["cosine_mean"]))
    return rows


def parse_budget(value, option: str = "max_drop") -> float | None:
    """A top-1 drop budget as a fraction (0.01 = one percentage point): ``values.as_drop``."""
    return as_drop(value, option)


def budget_search(model: onnx.ModelProto, evaluator: Evaluator, budget: float,
                  float_model: onnx.ModelProto | None = None, ranking: list[dict] | None = None,
                  progress: Callable[[str], None] = lambda m: None) -> tuple[onnx.ModelProto, dict]:
    """Keep the most damaging groups in high precision, one at a time, until ``budget`` holds.

    Returns the model of the last step and a record of every step (excluded groups, accuracy,
    latency). The sensitivity ranking is computed only if the all-INT8 model misses the budget.
    Raises when the budget is met only with every group in high precision (no INT8 left) or not
    at all, naming the best step.
    """
    steps = []
    current = model
    row = evaluator.measure(current)
    steps.append({"excluded": [], **row})
    progress(f"budget search: all INT8, drop {row['top1_drop']:.4f} (budget {budget})")
    record = {"budget": budget, "metric": ("labelled top-1 drop vs the FP32 ONNX" if evaluator.labels is not None
                                           else "1 - top-1 agreement with the FP32 ONNX"),
              "evaluation_count": int(len(evaluator.x)), "steps": steps}
    if row["top1_drop"] <= budget:
        record.update(met=True, excluded_groups=[])
        return current, record
    ranking = ranking if ranking is not None else sensitivity(model, evaluator, float_model, progress)
    record["ranking"] = [r["group"] for r in ranking]
    excluded: list[str] = []
    all_groups = {r["group"] for r in ranking}
    for r in ranking[:-1]:  # the last group left: excluding it too would leave no INT8 at all
        excluded.append(r["group"])
        current = dequantize_groups(model, set(excluded), float_model)
        row = evaluator.measure(current)
        steps.append({"excluded": list(excluded), **row})
        progress(f"budget search: {len(excluded)} group(s) kept in high precision, drop {row['top1_drop']:.4f}")
        if row["top1_drop"] <= budget:
            record.update(met=True, excluded_groups=list(excluded), int8_groups=sorted(all_groups - set(excluded)))
            return current, record
    best = min(steps, key=lambda s: s["top1_drop"])
    raise XcitExportError(
        f"max_drop={budget} cannot be met on {len(evaluator.x)} evaluation images: all-INT8 drops "
        f"{steps[0]['top1_drop']:.4f}, and the best of {len(steps)} steps (keeping {len(best['excluded'])} of "
        f"{len(all_groups)} groups in high precision) still drops {best['top1_drop']:.4f}; raise max_drop or use "
        f"the FP32/FP16 target")


def analyse(quantized_path: Path, fp32_path: Path, evaluation, *, batch: int | None, threads: int | None,
            budget: float | None, want_sensitivity: bool, float_path: Path | None = None, time_steps: bool = True,
            search_images: int | None = None, seed: int = 0) -> dict:
    """Sensitivity and/or budget search for a built Q/DQ ONNX; rewrites ``quantized_path`` when the
    search keeps groups in high precision. Returns metadata for ``artifact.json``.

    ``search_images`` limits the evaluation images to a seeded subset, stratified by class where
    labelled (:func:`xcit_export.data.sets.representative_subset`), recorded as ``search_selection``."""
    if evaluation is None or evaluation[0] is None:
        raise XcitExportError("INT8 sensitivity and max_drop need an evaluation set: pass --eval (or --eval demo)")
    x, labels = evaluation
    selection = None
    if search_images:
        from ..data.sets import representative_subset, take_rows

        picked, selection = representative_subset(len(x), search_images, labels, seed)
        x, labels = take_rows(x, labels, picked)  # --on-bad-image skip replaces an unreadable image
    import onnx

    t0 = time.perf_counter()
    model = onnx.load(str(quantized_path))
    float_model = onnx.load(str(float_path or fp32_path), load_external_data=False)
    evaluator = Evaluator(fp32_path, x, labels, batch, threads, time_steps)
    meta: dict = {"search_selection": selection} if selection is not None else {}
    ranking = None
    if want_sensitivity:
        ranking = sensitivity(model, evaluator, float_model)
        meta["sensitivity"] = {"evaluation_count": int(len(x)), "rows": ranking,
                               "most_damaging": ranking[0]["group"] if ranking else None}
    if budget is not None:
        final, record = budget_search(model, evaluator, budget, float_model, ranking)
        if record["excluded_groups"]:
            onnx.save(final, str(quantized_path))
        meta["budget_search"] = record
    meta["search_seconds"] = round(time.perf_counter() - t0, 2)
    return meta


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

def sensitivity_markdown(target: str, meta: dict) -> list[str]:
    """Markdown lines for one target's sensitivity table and budget search (empty if neither ran)."""
    lines: list[str] = []
    sens = meta.get("sensitivity")
    if sens:
        lines += ["", f"### {target}: INT8 sensitivity by layer group ({sens['evaluation_count']} images, "
                      f"each group quantized alone, worst first)", "",
                  "| group | nodes | top-1 agreement | cosine (mean) | cosine (min) |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['group']} | {r['nodes']} | {r['top1_agreement']:.2%} | {r['cosine_mean']:.6f} | "
                  f"{r['cosine_min']:.4f} |" for r in sens["rows"]]
    search = meta.get("budget_search")
    if search:
        verdict = ("met" if search["met"] else "not met")
        lines += ["", f"### {target}: accuracy-budget search (max drop {search['budget']}, {search['metric']}, "
                      f"{search['evaluation_count']} images): {verdict}; kept in high precision: "
                      f"{', '.join(search['excluded_groups']) or 'nothing'}", "",
                  "| step | kept in high precision | top-1 drop | top-1 agreement | cosine (min) | median (ms) |",
                  "|---:|---|---:|---:|---:|---:|"]
        for i, s in enumerate(search["steps"]):
            ms = s.get("median_ms")
            lines.append(f"| {i} | {', '.join(s['excluded']) or '-'} | {s['top1_drop']:.4f} | "
                         f"{s['top1_agreement']:.2%} | {s['cosine_min']:.4f} | {'-' if ms is None else f'{ms:.2f}'} |")
    return lines


def sensitivity_chart_svg(rows: list[dict]) -> str:
    """Horizontal bars of each group's damage (1 - mean cosine vs FP32), worst on top, as inline SVG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: (r["top1_agreement"], r["cosine_mean"]))
    damage = [max(1.0 - r["cosine_mean"], 1e-9) for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.22 * len(rows)))
    try:
        ypos = list(range(len(rows)))[::-1]
        ax.barh(ypos, damage, color="#d62728")
        ax.set_yticks(ypos, [r["group"] for r in rows], fontsize=8)
        for y, d, r in zip(ypos, damage, rows):
            ax.text(d, y, f"  agreement {r['top1_agreement']:.1%}", va="center", fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("1 - mean cosine vs FP32 (only this group quantized)")
        ax.margins(x=0.35)
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
    finally:
        plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]
