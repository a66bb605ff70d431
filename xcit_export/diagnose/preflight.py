"""FP16 pre-flight: which tensors and reductions of the FP32 model leave FP16's range on real images.

Before an FP16 build, PyTorch runs the calibration images (at every size the run evaluates) with
hooks that keep only maxima, and flags what would overflow FP16 (largest finite value 65,504):

* ``range``: a module's output whose largest magnitude exceeds 65,504 (every leaf module: each
  Linear, Conv, norm, activation), and every point of :mod:`.points` (the residual stream);
* ``layernorm_sum_sq``: a LayerNorm's sum over the channels of ``(x - mean)^2`` for the worst
  token, what an FP16 variance accumulates before it divides (the overflow of TensorRT #2564 and
  #3999, and why :data:`xcit_export.quantize.precision.FP16_KEEP_OP_TYPES` keeps LayerNorm in FP32);
* ``l2_sum_sq``: XCA's L2 normalisation of q and k sums squares over *all tokens* (196 at p16/224,
  2,304 at p8/384): the largest per-channel sum of ``q^2`` or ``k^2``;
* ``softmax_input``: the largest magnitude entering a softmax (class attention, ViT attention;
  XCA's is bounded by its learnt temperature, since L2-normalised q.k lies in [-1, 1]). A softmax
  kernel subtracts the row maximum before ``exp``, so its sum stays at most the row length; the
  input itself is what must fit.

Each finding names the module (backbone-relative PyTorch path), the size, the value and the
``margin`` (65,504 / value: below 1 it overflows). :func:`kept_in_fp32` then says, per FP16 target
of the run, whether the chosen FP16 path keeps each flagged tensor in FP32: read from the
precision-ready ONNX for TensorRT (the node's output type after AutoCast), and from OpenVINO's
runtime model for OpenVINO (each executed node's ``runtimePrecision``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

FP16_MAX = 65504.0
# Findings listed besides the flagged ones: the closest to the limit (smallest margins).
CLOSEST = 8


def _max_abs(t) -> float:
    return float(t.detach().abs().amax()) if t.numel() else 0.0


def _hooks(model, peaks: dict):
    """Forward hooks on ``model`` that raise ``peaks[(module, check)]`` to the batch's maxima."""
    import torch
    from torch import nn

    backbone = getattr(model, "backbone", model)
    prefix = "backbone." if backbone is not model else ""
    handles = []

    def bump(key, value):
        if value == value:  # NaN never counts as a peak
            peaks[key] = max(peaks.get(key, 0.0), value)

    def name_of(path: str) -> str:
        return path[len(prefix):] if path.startswith(prefix) else path

    for path, module in model.named_modules():
        if not path.startswith(prefix) or path == prefix.rstrip("."):
            continue
        name = name_of(path)
        if not list(module.children()):
            handles.append(module.register_forward_hook(
                lambda m, a, out, n=name: bump((n, "range"), _max_abs(out if isinstance(out, torch.Tensor) else out[0]))))
        if isinstance(module, nn.LayerNorm):
            def ln_hook(m, args, n=name):
                x = args[0].to(torch.float32)
                bump((n, "layernorm_sum_sq"), float(((x - x.mean(-1, keepdim=True)) ** 2).sum(-1).amax()))
            handles.append(module.register_forward_pre_hook(ln_hook))
        if hasattr(module, "temperature") and hasattr(module, "qkv"):  # XCA
            def xca_hook(_qkv, a, out, n=name, mod=module):
                c = out.shape[-1] // 3
                qk = out[..., :2 * c].to(torch.float32)  # (B, N, 2C): sums over tokens per channel
                bump((n, "l2_sum_sq"), float((qk ** 2).sum(1).amax()))
                bump((n, "softmax_input"), float(mod.temperature.detach().abs().amax()))
            handles.append(module.qkv.register_forward_hook(xca_hook))
        elif all(hasattr(module, k) for k in ("q", "k", "num_heads", "scale")):  # class attention
            store = {}

            def keep(which, out, s=store):
                s[which] = out

            def logits(m, _a, _out, n=name, s=store):
                q, k = s.get("q"), s.get("k")
                if q is None or k is None:
                    return
                B, N, C = k.shape
                h = m.num_heads
                qh = (q * m.scale).reshape(B, 1, h, C // h).permute(0, 2, 1, 3)
                kh = k.reshape(B, N, h, C // h).permute(0, 2, 1, 3)
                bump((n, "softmax_input"), _max_abs(qh @ kh.transpose(-2, -1)))
            handles.append(module.q.register_forward_hook(lambda m, a, out, f=keep: f("q", out)))
            handles.append(module.k.register_forward_hook(lambda m, a, out, f=keep: f("k", out)))
            handles.append(module.register_forward_hook(logits))
        elif hasattr(module, "qkv") and hasattr(module, "head_dim"):  # ViT attention
            def vit_hook(m, a, out, n=name, mod=module):
                B, N, C3 = out.shape
                qkv = out.reshape(B, N, 3, mod.num_heads, mod.head_dim).permute(2, 0, 3, 1, 4)
                bump((n, "softmax_input"), _max_abs((qkv[0] * mod.scale) @ qkv[1].transpose(-2, -1)))
            handles.append(module.qkv.register_forward_hook(vit_hook))
    return handles


def _point_hooks(model, peaks: dict):
    """Range hooks at every point of :mod:`.points` (the residual stream, which no module outputs)."""
    from .points import model_points
    from .reference import _tensor_of

    modules = dict(model.named_modules())
    handles = []
    for point in model_points(model):
        module = modules.get(point.hook)
        if module is None:
            continue

        def bump(value, name=point.module):
            tensor = _tensor_of(value)
            if tensor is not None:
                peaks[(name, "range")] = max(peaks.get((name, "range"), 0.0), _max_abs(tensor))

        if point.where == "input":
            handles.append(module.register_forward_pre_hook(lambda m, args, f=bump: f(args)))
        else:
            handles.append(module.register_forward_hook(lambda m, args, out, f=bump: f(out)))
    return handles


def activation_peaks(model, batches: Iterable[np.ndarray]) -> tuple[dict[tuple[str, str], float], int]:
    """``{(module, check): peak}`` over every batch, and how many images that was (only maxima are
    kept: memory does not grow with the images)."""
    import torch

    peaks: dict[tuple[str, str], float] = {}
    handles = _hooks(model, peaks) + _point_hooks(model, peaks)
    count = 0
    try:
        with torch.inference_mode():
            for xb in batches:
                model(torch.from_numpy(np.ascontiguousarray(xb)))
                count += len(xb)
    finally:
        for h in handles:
            h.remove()
    return peaks, count


def preflight(model, images_by_size: dict[str, np.ndarray], batch: int = 16) -> dict:
    """The pre-flight record (module docstring) for ``{"HxW": images in the deployed format}``."""
    findings = []
    counts = {}
    for size, x in images_by_size.items():
        peaks, counts[size] = activation_peaks(model, (x[i:i + batch] for i in range(0, len(x), batch)))
        for (module, check), value in peaks.items():
            margin = FP16_MAX / value if value > 0 else float("inf")
            findings.append({"module": module, "check": check, "size": size, "value": float(f"{value:.6g}"),
                             "margin": float(f"{margin:.4g}") if np.isfinite(margin) else None})
    ranked = sorted((f for f in findings if f["margin"] is not None), key=lambda f: f["margin"])
    flagged = [f for f in ranked if f["margin"] < 1]
    return {"limit": FP16_MAX, "images": counts, "sizes": list(images_by_size),
            "flagged": flagged, "closest": [f for f in ranked if f["margin"] >= 1][:CLOSEST],
            "checks": sorted({f["check"] for f in findings})}


# ------------------------------------------------------------------------------------------------
# Which flagged tensors an FP16 path keeps in FP32
# ------------------------------------------------------------------------------------------------

def _param_prefix(model) -> str:
    return "backbone." if any(i.name.startswith("backbone.") for i in model.graph.initializer) else ""


def _readers(model, names: set[str]) -> list:
    """Nodes that read one of ``names`` directly or through one Transpose/Cast/DequantizeLinear."""
    via = {n.output[0] for n in model.graph.node
           if n.op_type in ("Transpose", "Cast", "DequantizeLinear") and n.input and n.input[0] in names}
    return [n for n in model.graph.node if any(i in names or i in via for i in n.input)
            and n.op_type not in ("Transpose", "Cast", "DequantizeLinear", "QuantizeLinear")]


def _region(model, module: str, prefix: str) -> list:
    """The nodes of ``module``: those reading its parameters, and every node after them up to a
    node that reads another module's parameters (attention's L2 norms and softmax sit in between)."""
    inits = {i.name for i in model.graph.initializer}
    own = {n for n in inits if n.startswith(f"{prefix}{module}.")}
    others = {n for n in inits if n.startswith(prefix) and n not in own and "." in n[len(prefix):]}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    start = _readers(model, own)
    seen = {n.name: n for n in start}
    todo = list(start)
    while todo:
        node = todo.pop()
        for out in node.output:
            for nxt in consumers.get(out, []):
                if nxt.name in seen or any(i in others for i in nxt.input):
                    continue
                seen[nxt.name] = nxt
                todo.append(nxt)
    return [n for n in model.graph.node if n.name in seen]


def finding_nodes(fp32_model, finding: dict) -> list[str]:
    """ONNX node names (of the FP32 graph, kept by every converted graph) computing a finding's
    tensor; [] where the finding is not mapped (a parameterless module's output, a point)."""
    prefix = _param_prefix(fp32_model)
    module, check = finding["module"], finding["check"]
    if check in ("range", "layernorm_sum_sq"):
        # a Linear's weight is stored transposed under a generated name (Gemm): its bias names the node
        params = {f"{prefix}{module}.weight", f"{prefix}{module}.bias"}
        ops = ("LayerNormalization",) if check == "layernorm_sum_sq" else None
        return [n.name for n in _readers(fp32_model, params) if ops is None or n.op_type in ops]
    op = {"l2_sum_sq": "ReduceL2", "softmax_input": "Softmax"}[check]
    return [n.name for n in _region(fp32_model, module, prefix) if n.op_type == op]


def _onnx_precisions(path: Path, names: list[str]) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    words = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}
    by_name = {n.name: n for n in model.graph.node}
    return {n: words.get(types.get(by_name[n].output[0]), "other") for n in names if n in by_name}


def _openvino_precisions(artifact, options: dict, threads, names: list[str]) -> dict[str, str]:
    """Each node's precision in OpenVINO's runtime model (``runtimePrecision`` of the executed node
    whose ``originalLayersNames`` holds it), compiled as the target's runner compiles it."""
    from ..targets.openvino import options as ovo
    from .mark import openvino_config

    core = ovo._core()
    device, config = openvino_config(options, artifact.metadata.get("precision", "fp32"), threads)
    runtime = core.compile_model(core.read_model(str(artifact.path)), device, config).get_runtime_model()
    wanted, out = set(names), {}
    words = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}
    for op in runtime.get_ops():
        rt = op.get_rt_info()
        if "originalLayersNames" not in rt or "runtimePrecision" not in rt:
            continue
        for name in set(rt["originalLayersNames"].astype(str).split(",")) & wanted:
            precision = rt["runtimePrecision"].astype(str)
            out[name] = words.get(precision, precision)
    return out


def kept_in_fp32(record: dict, target, artifact, fp32_onnx: Path, options: dict | None = None,
                 threads: int | None = None) -> list[dict]:
    """Per flagged finding of ``record``: the nodes computing it and the precision ``target``'s
    deployed graph computes them in (``fp32``, ``fp16``, ``bf16``),
    and ``safe``: whether that precision has FP32's range (fp32, bf16). None where not mapped."""
    import onnx

    fp32_model = onnx.load(str(fp32_onnx), load_external_data=False)
    rows = []
    for finding in record.get("flagged", []):
        names = finding_nodes(fp32_model, finding)
        rows.append({**{k: finding[k] for k in ("module", "check", "size")}, "nodes": names})
    every = sorted({n for r in rows for n in r["nodes"]})
    if target.backend == "openvino":
        precisions = _openvino_precisions(artifact, options or {}, threads, every)
        where = "OpenVINO's runtime model on this device"
    else:
        onnx_name = artifact.metadata.get("onnx")
        precisions = _onnx_precisions(Path(artifact.path).parent / onnx_name, every) if onnx_name else {}
        where = "the precision-ready ONNX"
    for row in rows:
        got = sorted({precisions[n] for n in row["nodes"] if n in precisions})
        row["precision"] = ",".join(got) or None
        row["safe"] = None if not got else all(p in ("fp32", "bf16") for p in got)
        row["read_from"] = where
    return rows
