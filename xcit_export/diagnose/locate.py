"""Where each point is in the exported ONNX: found by value, then named by tensor.

onnxsim drops the dynamo exporter's node metadata (``pkg.torch.onnx.name_scopes``, which names
each node's module) and renames nothing else reliably: tensor names are the FX node names
(``add_248``), which say nothing about modules. So a point is found the way a person would check
it: the FP32 ONNX is run once with *every* float tensor marked as an output (Polygraphy's
``--onnx-outputs mark all``; onnxruntime's ``qdq_loss_debug.modify_model_output_intermediate_tensors``
does the same), optimisations off so no tensor is fused away, and each point is the tensor whose
shape is the PyTorch hook's and whose value agrees with it within :data:`MATCH_RTOL`. This needs
no naming convention from any exporter, and it proves the mapping: a point that agrees in FP32 is
the same tensor.

Every tensor that matches a point is kept, first in graph order (the producer) first: a later
graph (a quantized ONNX, an OpenVINO IR, a TensorRT network) may have kept one name and not the
other (an ``Identity`` removed, a node fused), and :mod:`.mark` takes the first it finds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import XcitExportError

# Relative L2 error under which an ONNX tensor is the hook's tensor (FP32 vs FP32: ~1e-6 here;
# the export's own parity tolerance is 1e-3 relative).
MATCH_RTOL = 1e-3


@dataclass
class Location:
    """The ONNX tensor(s) holding one point: ``names`` in graph order, ``rel_error`` of the first."""

    module: str
    names: list[str] = field(default_factory=list)
    rel_error: float | None = None


def float_tensors(model) -> list[str]:
    """Every float32 tensor a node produces, in graph order (shape inference gives the types)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in
             list(inferred.graph.value_info) + list(inferred.graph.output)}
    out = []
    for node in model.graph.node:
        for name in node.output:
            if name and types.get(name) == onnx.TensorProto.FLOAT:
                out.append(name)
    return out


def run_all_tensors(onnx_path: Path, x: np.ndarray, threads: int | None = None) -> dict[str, np.ndarray]:
    """Every float tensor of ``onnx_path`` on ``x`` (onnxruntime CPU, graph optimisations off)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path), load_external_data=False)
    outputs = {o.name for o in model.graph.output}
    for name in float_tensors(model):
        if name not in outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: np.ascontiguousarray(x)})
    return dict(zip(names, values))


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b|| / ||b||`` in float64 (inf when b is zero and a is not)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num, den = float(np.linalg.norm(a64 - b64)), float(np.linalg.norm(b64))
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def locate(onnx_path: Path, x: np.ndarray, reference: dict[str, np.ndarray],
           threads: int | None = None) -> dict[str, Location]:
    """``{module: Location}`` for every point in ``reference`` (from :func:`.reference.capture` on ``x``).

    Raises naming the points no tensor of the FP32 ONNX reproduces: then the ONNX is not the
    model the hooks saw, and no per-point figure would mean anything.
    """
    tensors = run_all_tensors(onnx_path, x, threads)
    by_shape: dict[tuple, list[str]] = {}
    for name, value in tensors.items():
        by_shape.setdefault(tuple(value.shape), []).append(name)
    found: dict[str, Location] = {}
    missing = []
    for module, ref in reference.items():
        if not np.isfinite(ref).all():
            missing.append(f"{module} (not finite in PyTorch)")
            continue
        scored = [(relative_error(tensors[n], ref), n) for n in by_shape.get(tuple(ref.shape), [])]
        names = [n for err, n in scored if err <= MATCH_RTOL]
        if not names:
            best = min(scored, default=None)
            missing.append(f"{module} (closest {best[1]}: relative error {best[0]:.2g})" if best
                           else f"{module} (no tensor of shape {tuple(ref.shape)})")
            continue
        found[module] = Location(module, names, min(err for err, n in scored if n == names[0]))
    if missing:
        raise XcitExportError(f"the FP32 ONNX '{onnx_path}' holds no tensor equal to the PyTorch reference at "
                              f"{len(missing)} point(s): {'; '.join(missing[:4])}; the ONNX is not the model the "
                              f"hooks ran (rebuild it with --rebuild)")
    return found
