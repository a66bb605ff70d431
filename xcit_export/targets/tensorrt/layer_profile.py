"""TensorRT's layer profiler, grouped by layer type: the engine's ``op_profile`` (device-check).

:meth:`.runner.EngineRunner.layer_profile` attaches :func:`make_profiler`'s ``trt.IProfiler`` to an
execution context (``IExecutionContext.profiler``), runs plain ``execute_async_v3`` calls, takes
each run's per-layer milliseconds and groups them here by layer type into the report's
``op_profile`` (:func:`xcit_export.evaluate.profiling.breakdown`), the format the host pipeline uses for the
onnxruntime and OpenVINO profilers.

Layer types, in order of trust:

1. ``IEngineInspector`` JSON ``"LayerType"`` (e.g. ``CaskConvolution``, ``CaskGemm``, ``Reformat``,
   ``Myelin``), present when the engine was built with ``ProfilingVerbosity.DETAILED``, as
   :func:`.engine.build_engine` does (see :data:`.engine.PROFILING_VERBOSITY`);
2. the ONNX op types of the nodes the layer is named after: TensorRT's ONNX parser names each layer
   after its node (``node_Shape_0``, and ``node_Shape_0_0``, ``node_Shape_0_1`` when one node makes
   several layers), fused layers join the names with ``" + "``; the bundle records every node's
   op type (:func:`onnx_node_types`, ``bundle.json`` ``onnx_node_types``), because the names alone
   do not say it: torch's dynamo exporter names nodes after ATen ops (``node_conv2d_3`` is a
   ``Conv``, ``n0`` an ``Erf``);
3. otherwise a type read from the layer's name by :func:`type_from_name` (the rule is documented
   there and tested in tests/targets/test_trt_runner.py).

Device side: numpy-free, Python 3.8 compatible, imports neither torch, onnx nor click.
UNVERIFIED ON HARDWARE like the runner: no machine here can deserialize an engine (TensorRT-RTX's
``deserialize_cuda_engine`` returns None without a GPU), so neither the inspector's JSON on a real
engine nor the profiler's layer names have been seen; the rules follow NVIDIA's documentation.
"""

from __future__ import annotations

import json
import re
from typing import Dict, List, Mapping, Optional

SOURCE = "TensorRT IProfiler (IExecutionContext.profiler)"

# A layer name part that is a torch.onnx node name: "node_MatMul_12" (dynamo exporter) or
# "/blocks.0/attn/MatMul_1" (TorchScript exporter). The op type is the part between.
_DYNAMO = re.compile(r"^node_([A-Za-z_][A-Za-z0-9_]*?)(?:_\d+)*_?$")
_SCOPED = re.compile(r"^/(?:[^/]*/)*([A-Za-z][A-Za-z0-9]*?)(?:_\d+)*$")


def make_profiler(trt):
    """A ``trt.IProfiler`` that keeps every ``report_layer_time(layer_name, ms)`` call until :meth:`take`.

    TensorRT's Python docs require the subclass to call ``trt.IProfiler.__init__`` itself. Reports
    are collected per call rather than assumed to come from one inference: with
    ``IExecutionContext.enqueue_emits_profile`` at its default (True) TensorRT reports a run's layer
    times by the time ``execute_async_v3`` returns, and :meth:`take` after the stream sync hands
    them over as that run's.
    """

    class LayerTimes(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)
            self._times: Dict[str, float] = {}

        def report_layer_time(self, layer_name, ms):
            # A layer reported twice in one run (a loop body) adds up, as trtexec's profiler does.
            self._times[layer_name] = self._times.get(layer_name, 0.0) + float(ms)

        def take(self) -> Dict[str, float]:
            times, self._times = self._times, {}
            return times

    return LayerTimes()


def _part_type(part: str) -> Optional[str]:
    part = part.strip()
    for pattern in (_DYNAMO, _SCOPED):
        m = pattern.match(part)
        if m:
            return m.group(1)
    return None


def type_from_name(name: str) -> str:
    """A layer type read from a TensorRT layer name (engines without detailed layer information).

    * ``"node_MatMul_12"``, ``"/blocks.0/attn/MatMul_1"`` (ONNX node names) -> ``"MatMul"``;
    * fused layers, ``"A + B"`` -> the parts' types, in order, each once: ``"MatMul+Add"``;
    * ``"PWN(...)"`` (TensorRT's fused point-wise layers) -> ``"PointWise"``;
    * ``"{ForeignNode[...]}"`` (a subgraph handed to Myelin) -> ``"ForeignNode (Myelin)"``;
    * ``"Reformatting CopyNode ..."`` -> ``"Reformat"``;
    * ``"__myl_..."`` (a kernel Myelin generated) -> ``"Myelin kernel"``;
    * a bare number (engines built with ``ProfilingVerbosity.NONE`` name layers by index) ->
      ``"layer (unnamed)"``;
    * any other name is its own type (parser-made layers such as ``ONNXTRT_Broadcast_3`` lose
      their trailing numbers: ``"ONNXTRT_Broadcast"``), so nothing is dropped from the total.
    """
    name = name.strip()
    if name.isdigit():
        return "layer (unnamed)"
    if name.startswith("{ForeignNode["):
        return "ForeignNode (Myelin)"
    if name.startswith("PWN("):
        return "PointWise"
    if name.startswith("Reformatting CopyNode"):
        return "Reformat"
    if name.startswith("__myl_"):
        return "Myelin kernel"
    types: List[str] = []
    for part in name.split(" + "):
        t = _part_type(part)
        if t is None:
            return re.sub(r"(?:_\d+)+$", "", name) or name
        if t not in types:
            types.append(t)
    return "+".join(types)


def inspector_types(trt, engine, context=None) -> Dict[str, str]:
    """Layer name -> ``"LayerType"`` from the engine inspector's JSON, for the layers that have one.

    An engine built without ``ProfilingVerbosity.DETAILED`` describes a layer by its name alone
    (a JSON string, not an object): such layers are left out and :func:`type_from_name` types them.
    """
    inspector = engine.create_engine_inspector()
    if inspector is None:
        return {}
    if context is not None and hasattr(inspector, "execution_context"):
        inspector.execution_context = context  # concrete shapes for a dynamic-shape engine
    types = {}
    for i in range(int(engine.num_layers)):
        text = inspector.get_layer_information(i, trt.LayerInformationFormat.JSON)
        try:
            info = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(info, dict) and info.get("Name") and info.get("LayerType"):
            types[str(info["Name"])] = str(info["LayerType"])
    return types


def onnx_node_types(onnx_path) -> Dict[str, str]:
    """ONNX node name -> op type, for the bundle (host side: imports onnx when called)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {n.name: n.op_type for n in model.graph.node if n.name}


def _node_type(part: str, node_types: Mapping[str, str]) -> Optional[str]:
    """The op type of the ONNX node a layer (name part) came from: ``node_Shape_0_1`` -> ``node_Shape_0``."""
    name = part.strip()
    for _ in range(3):
        if name in node_types:
            return node_types[name]
        stripped = re.sub(r"_\d+$", "", name)
        if stripped == name:
            break
        name = stripped
    return None


def classify(layer: str, types: Mapping[str, str], node_types: Optional[Mapping[str, str]] = None) -> tuple:
    """``(type, source)`` for ``layer``; source is ``"inspector"``, ``"onnx"`` or ``"name"`` (module docstring)."""
    if layer in types:
        return types[layer], "inspector"
    if node_types:
        parts = [_node_type(p, node_types) for p in layer.split(" + ")]
        if all(parts):
            return "+".join(dict.fromkeys(parts)), "onnx"  # each type once, in order
    return type_from_name(layer), "name"


def group_by_type(run: Mapping[str, float], types: Mapping[str, str],
                  node_types: Optional[Mapping[str, str]] = None) -> Dict[str, float]:
    """One run's ``{layer name: ms}`` -> ``{layer type: ms}``; every layer counts towards one type."""
    out: Dict[str, float] = {}
    for layer, ms in run.items():
        kind = classify(layer, types, node_types)[0]
        out[kind] = out.get(kind, 0.0) + float(ms)
    return out


def type_sources(layers, types: Mapping[str, str], node_types: Optional[Mapping[str, str]] = None) -> Dict[str, int]:
    """How many of ``layers`` were typed by the inspector, by the ONNX node op types, by name alone."""
    counts = {"inspector": 0, "onnx": 0, "name": 0}
    for layer in layers:
        counts[classify(layer, types, node_types)[1]] += 1
    return counts


__all__ = ["SOURCE", "classify", "group_by_type", "inspector_types", "make_profiler", "onnx_node_types",
           "type_from_name", "type_sources"]
