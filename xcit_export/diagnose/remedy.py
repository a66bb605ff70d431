"""From the blamed points to each backend's own remedy: options a rebuild takes.

The nodes of a point are found structurally, not by name: the *segment* of a point is every node
that computes its tensor from the previous points' tensors (walking back from the point's tensor
and stopping at any other point's tensor, a graph input or a weight) -- the same segment the cut
graph of :mod:`.mark` runs in isolation, so the remedy keeps exactly what was measured. Its
compute nodes (Conv, MatMul, Gemm: :data:`xcit_export.quantize.sensitivity.COMPUTE_OPS`, the
operations quantizers quantize) are what an INT8 remedy keeps out of INT8; every node of it is
what an FP16 remedy keeps in FP32.

Per backend, through options the targets already take (``list-targets --options``):

* ``onnxruntime-int8``: ``exclude_nodes`` (onnxruntime ``quantize_static``'s ``nodes_to_exclude``),
  node names of the artifact's own QDQ graph, which keeps the names of the prepared model it was
  quantized from;
* ``openvino-int8``: ``ignored_scope`` patterns (NNCF ``IgnoredScope(patterns=...)``): the OpenVINO
  ONNX frontend names each operation after its ONNX node (a biased Conv or Gemm becomes
  ``<node>/WithoutBiases`` and ``<node>``), so the FP32 ONNX's names anchor the IR's;
* ``tensorrt-int8`` / ``tensorrt-rtx-int8``: ``exclude_nodes`` (ModelOpt ``nodes_to_exclude``,
  regular expressions on the FP32 ONNX's node names) plus ``keep_fp32_nodes`` for the whole segment,
  so the named layers run in FP32 rather than the INT8 graph's FP16 remainder;
* ``tensorrt-fp16`` / ``tensorrt-rtx-fp16``: ``keep_fp32_nodes`` for the whole segment (AutoCast's
  ``nodes_to_exclude``);
* ``openvino-fp16``: ``inference_precision=f32``; this target exposes no per-layer precision, so
  the remedy is the whole model in FP32, and the record says so;
* FP32 targets: none. An FP32 target that leaves PyTorch is a conversion bug, not a precision choice.

Which points are blamed (:func:`blamed`): the worst, and every other that adds at least half as
much (at most :data:`MAX_BLAMED`), in the manner of NNCF's accuracy control, which reverts the
quantizer groups that cost the most; here the ranking is the measured per-point error, and the
rebuild (``--fix``) checks what it bought.
"""

from __future__ import annotations

import re
from pathlib import Path

from .locate import Location

# A point is blamed with the worst when it adds at least this share of the worst's error.
BLAME_SHARE = 0.5
MAX_BLAMED = 3


def blamed(divergence: dict) -> list[str]:
    """The modules a remedy keeps in higher precision (module docstring), worst first."""
    top = (divergence or {}).get("worst")
    if not top:
        return []
    rows = [r for r in divergence.get("points", []) if isinstance(r.get("added"), (int, float))]
    limit = BLAME_SHARE * (top.get("added") or 0.0)
    others = sorted((r for r in rows if r["module"] != top["module"] and limit > 0 and r["added"] >= limit),
                    key=lambda r: -r["added"])
    return [top["module"], *[r["module"] for r in others][:MAX_BLAMED - 1]]


def segment(model, locations: dict[str, Location], module: str) -> list:
    """The nodes (graph order) that compute ``module``'s tensor from the previous points' tensors."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    stops = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    own = locations[module].names
    for other, loc in locations.items():
        if other != module:
            stops.update(loc.names)
    start = next((n for n in own if n in producer), None)
    if start is None:
        return []
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        node = producer.get(name)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        todo += [i for i in node.input if i and i not in stops]
    return [n for n in graph.node if n.name in seen]


def _compute(nodes, quantized_only: bool, graph=None) -> list[str]:
    from ..quantize.sensitivity import COMPUTE_OPS

    dq = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"} if quantized_only else set()
    return [n.name for n in nodes if n.op_type in COMPUTE_OPS and (not quantized_only or any(i in dq for i in n.input))]


def _regexes(names: list[str]) -> list[str]:
    return [f"^{re.escape(n)}$" for n in names]


def remedy(target, artifact, fp32_onnx: Path, locations: dict[str, Location], modules: list[str]) -> dict:
    """The options that keep ``modules`` in higher precision on ``target`` (module docstring).

    Returns ``{"modules", "options", "nodes", "note"}``; ``options`` is empty when the backend has
    no remedy, or the segments hold nothing it could change (``note`` says which)."""
    import onnx

    name, precision = target.name, target.precision
    record = {"modules": list(modules), "options": {}, "nodes": {}, "note": None}
    if precision == "fp32" or not modules:
        record["note"] = ("an FP32 target that leaves PyTorch is a conversion bug, not a precision choice: "
                          "no precision remedy") if precision == "fp32" else "nothing blamed"
        return record
    if target.backend == "openvino" and precision == "fp16":
        record["options"] = {"inference_precision": "f32"}
        record["note"] = ("openvino-fp16 exposes no per-layer precision: the remedy runs the whole model in FP32 "
                          f"(blamed: {', '.join(modules)})")
        return record
    if target.backend == "onnxruntime":
        graph_model = onnx.load(str(artifact.path), load_external_data=False)
    else:
        graph_model = onnx.load(str(fp32_onnx), load_external_data=False)
    quantized = graph_model if target.backend == "onnxruntime" else None
    for module in modules:
        nodes = segment(graph_model, locations, module)
        record["nodes"][module] = {
            "compute": _compute(nodes, quantized is not None, quantized.graph if quantized is not None else None),
            "all": [n.name for n in nodes]}
    compute = [n for m in modules for n in record["nodes"][m]["compute"]]
    every = [n for m in modules for n in record["nodes"][m]["all"]]
    if precision == "int8" and not compute:
        record["note"] = (f"the segment(s) of {', '.join(modules)} hold no quantized Conv/MatMul/Gemm: "
                          f"the error there comes from the INT8 values entering them; no node to keep")
        return record
    if target.backend == "onnxruntime":
        record["options"] = {"exclude_nodes": compute}
    elif target.backend == "openvino":
        # The OpenVINO ONNX frontend names an operation after its ONNX node, and splits a Conv/Gemm with
        # a bias into "<node>/WithoutBiases" + "<node>" (the Add): a pattern covers both, and NNCF
        # validates that every pattern matches (IgnoredScope, validate=True).
        record["options"] = {"ignored_scope": {"patterns": [f"^{re.escape(n)}(/.*)?$" for n in compute]}}
    elif target.backend.startswith("tensorrt"):
        record["options"] = ({"keep_fp32_nodes": _regexes(every)} if precision == "fp16" else
                             {"exclude_nodes": _regexes(compute), "keep_fp32_nodes": _regexes(every)})
    else:
        record["note"] = f"no remedy is known for the {target.backend} backend"
    return record


def option_flags(target_name: str, options: dict) -> list[str]:
    """``-O target:key=value`` arguments for ``options`` (lists comma-separated, dicts as JSON),
    quoted for a POSIX shell; merging with what the run already gave is the caller's job."""
    import json
    import shlex

    flags = []
    for key, value in options.items():
        if isinstance(value, dict):
            text = json.dumps(value, separators=(",", ":"))
        elif isinstance(value, (list, tuple)):
            text = ",".join(str(v) for v in value)
        else:
            text = str(value)
        flags.append(f"-O {shlex.quote(f'{target_name}:{key}={text}')}")
    return flags
