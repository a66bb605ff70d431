"""The same points marked in each target's own graph, run on its own runtime, in two forms.

**Marked** (the error by depth): every point's tensor becomes an extra output of the unchanged
graph, so each point shows the error accumulated from the input up to it. **Cut** (the error a
point adds): every point's tensor is *also* replaced, for the nodes that read it, by a new graph
input fed with PyTorch's value of that point; the point's own tensor is still an output. Each
segment between two points then runs on PyTorch's exact input, and its output's error is what
that segment alone gets wrong, whatever came before (Polygraphy's ``debug reduce`` isolates a
failing subgraph the same way, one subgraph at a time; cutting at every point at once needs one
session and one pass per batch).

By graph kind:

* ONNX (onnxruntime FP32 and QDQ INT8; a TensorRT target's precision-ready ONNX, run on
  onnxruntime as the host's stand-in for its engine): a point's tensor gets a ``Cast`` to float32
  made a graph output (an FP16 tensor of an AutoCast graph comes back as float32; a float32 one is
  a no-op the optimiser removes), as onnxruntime's ``quantization/qdq_loss_debug.py`` marks
  tensors; a cut input has the tensor's own type (float16 in an FP16 graph).
* OpenVINO IR (FP32, FP16-compressed, NNCF's INT8): ``Result`` nodes on the tensor's output port
  (``ov.Model.add_outputs``), and for a cut a ``Parameter`` that replaces the port as the source
  of its readers (``Input.replace_source_output``); compiled with the runner's own properties
  (device, hint, inference precision, threads), so a bf16-by-default CPU runs it in bf16 as it
  runs the target.
* TensorRT engines: :func:`xcit_export.targets.tensorrt.engine.mark_points` marks the parsed
  network in device-check, on the device (marked form only).

A marked graph is not quite the deployed one: a runtime does not fuse across a tensor that is an
output (Polygraphy's documentation warns of this for ``--trt-outputs mark all``). The runners
therefore return the graph's own outputs too, and :mod:`.explain` reports how far they moved
from the unmarked artifact's (``marking_effect``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from .locate import Location

OUTPUT_PREFIX = "xcit_diag."
INPUT_PREFIX = "xcit_diag_in."


def _types(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    return {vi.name: vi.type.tensor_type.elem_type
            for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}


def mark_onnx(model, locations: dict[str, Location], cut: bool = False):
    """A copy of ``model`` with every located point as a float32 output, and with ``cut`` every
    point's readers fed from a new input instead (module docstring).

    Returns ``(model, {module: output}, {module: (input, numpy dtype)}, [modules the graph lacks])``.
    """
    import onnx
    from onnx import TensorProto, helper

    marked = onnx.ModelProto()
    marked.CopyFrom(model)
    graph = marked.graph
    produced = {o for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    types = _types(model) if cut else {}
    names: dict[str, str] = {}
    inputs: dict[str, tuple[str, np.dtype]] = {}
    missing: list[str] = []
    for module, loc in locations.items():
        tensor = next((n for n in loc.names if n in produced), None)
        if tensor is None:
            missing.append(module)
            continue
        if tensor in outputs:
            names[module] = tensor
        else:
            out = OUTPUT_PREFIX + module
            graph.node.append(helper.make_node("Cast", [tensor], [out], to=TensorProto.FLOAT,
                                               name=f"{OUTPUT_PREFIX}cast.{module}"))
            graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
            names[module] = out
        if cut:
            elem = types.get(tensor, TensorProto.FLOAT)
            feed = INPUT_PREFIX + module
            for node in graph.node:
                if node.name.startswith(OUTPUT_PREFIX):
                    continue
                for slot, name in enumerate(node.input):
                    if name == tensor:
                        node.input[slot] = feed
            graph.input.append(helper.make_tensor_value_info(feed, elem, None))
            inputs[module] = (feed, np.dtype(helper.tensor_dtype_to_np_dtype(elem)))
    return marked, names, inputs, missing


class MarkedOnnxRunner:
    """A marked (or cut) ONNX on onnxruntime's CPU provider with the target runner's session options.

    ``infer(x, feeds)`` returns ``(the graph's own outputs, {module: value})``; ``feeds`` gives a
    cut graph PyTorch's value at every point (``{module: array}``)."""

    def __init__(self, onnx_path: Path, locations: dict[str, Location], threads: int | None = None,
                 cut: bool = False):
        import onnx
        import onnxruntime as ort

        from ..targets.onnxruntime import session_options

        model = onnx.load(str(onnx_path), load_external_data=False)
        self.final_names = [o.name for o in model.graph.output]
        self.input_name = model.graph.input[0].name
        marked, self.names, self.inputs, self.missing = mark_onnx(model, locations, cut)
        try:
            self.session = ort.InferenceSession(marked.SerializeToString(), session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"onnxruntime cannot load the {'cut' if cut else 'marked'} copy of '{onnx_path}': "
                                f"{str(exc).splitlines()[0][:300]}") from None
        self._fetch = list(dict.fromkeys([*self.final_names, *self.names.values()]))

    def infer(self, x: np.ndarray, feeds: dict[str, np.ndarray] | None = None):
        feed = {self.input_name: x}
        for module, (name, dtype) in self.inputs.items():
            feed[name] = np.ascontiguousarray(feeds[module], dtype=dtype)
        values = dict(zip(self._fetch, self.session.run(self._fetch, feed)))
        return [values[n] for n in self.final_names], {m: values[n] for m, n in self.names.items()}

    def close(self) -> None:
        self.session = None


def ov_ports(model, locations: dict[str, Location]) -> tuple[dict[str, object], list[str]]:
    """``{module: output port}`` of an ``ov.Model`` for every located point it still has, by the
    ONNX tensor names the OpenVINO ONNX frontend keeps on each output; and the modules it lacks."""
    by_name = {}
    for op in model.get_ordered_ops():
        for port in op.outputs():
            for name in port.get_names():
                by_name.setdefault(name, port)
    ports, missing = {}, []
    for module, loc in locations.items():
        port = next((by_name[n] for n in loc.names if n in by_name), None)
        if port is None:
            missing.append(module)
        else:
            ports[module] = port
    return ports, missing


def _same_port(a, b) -> bool:
    return a.get_node().get_friendly_name() == b.get_node().get_friendly_name() and a.get_index() == b.get_index()


def openvino_config(options: dict, precision: str, threads: int | None) -> tuple[str, dict]:
    """The device and ``compile_model`` properties the target's runner compiles its IR with
    (:class:`xcit_export.targets.openvino.OpenVINORunner`), from its parsed options."""
    from ..targets import openvino as ovt
    from ..targets.openvino.runner import runner_config

    device = ovt.parse_device(options.get("device"))
    ovt.check_device_available(device)
    return device, runner_config(device, ovt.parse_hint(options.get("hint")), options.get("inference_precision"),
                                 precision, threads)


class MarkedOpenVINORunner:
    """An IR with a ``Result`` at every point (and with ``cut``, a ``Parameter`` feeding each
    point's readers), compiled as the target's runner compiles it."""

    def __init__(self, xml: Path, locations: dict[str, Location], precision: str = "fp32",
                 threads: int | None = None, cut: bool = False, **options):
        import openvino as ov

        from ..targets.openvino import options as ovo

        core = ovo._core()
        model = core.read_model(str(xml))
        finals = [r for r in model.get_results()]
        self.final_count = len(finals)
        ports, self.missing = ov_ports(model, locations)
        self.inputs: dict[str, int] = {}
        params = list(model.get_parameters())
        if cut:
            for module, port in ports.items():
                param = ov.opset13.parameter(port.get_partial_shape(), port.get_element_type(),
                                             name=INPUT_PREFIX + module)
                for reader in list(port.get_target_inputs()):
                    if reader.get_node().get_type_name() != "Result":
                        reader.replace_source_output(param.output(0))
                self.inputs[module] = len(params)
                params.append(param)
        results = list(finals)
        self.names: dict[str, int] = {}
        for module, port in ports.items():
            at = next((i for i, r in enumerate(results) if _same_port(r.input_value(0), port)), None)
            if at is None:
                results.append(ov.opset13.result(port))
                at = len(results) - 1
            self.names[module] = at
        model = ov.Model(results, params, "marked")
        device, config = openvino_config(options, precision, threads)
        try:
            self.compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise ArtifactError(f"OpenVINO cannot compile the {'cut' if cut else 'marked'} copy of '{xml}': "
                                f"{ovo.last_line(exc)}") from None
        self.request = self.compiled.create_infer_request()
        self._dtypes = {m: self.compiled.input(i).get_element_type().to_dtype() for m, i in self.inputs.items()}

    def infer(self, x: np.ndarray, feeds: dict[str, np.ndarray] | None = None):
        inputs = {0: np.ascontiguousarray(x)}
        for module, index in self.inputs.items():
            inputs[index] = np.ascontiguousarray(feeds[module], dtype=self._dtypes[module])
        result = self.request.infer(inputs)
        outs = [np.array(result[self.compiled.output(i)]) for i in range(len(self.compiled.outputs))]
        return outs[:self.final_count], {m: outs[i] for m, i in self.names.items()}

    def close(self) -> None:
        self.request = self.compiled = None


def open_marked(target, artifact, locations: dict[str, Location], threads: int | None = None,
                cut: bool = False, **options):
    """The marked (or cut) runner for ``target``'s artifact, chosen by backend (target names are
    module names). Returns ``(runner, what it runs)``; raises ArtifactError for a backend with no marker."""
    backend = target.backend
    if backend == "onnxruntime":
        return MarkedOnnxRunner(artifact.path, locations, threads, cut), "onnxruntime CPU (the artifact itself)"
    if backend == "openvino":
        precision = artifact.metadata.get("precision", "fp32")
        return (MarkedOpenVINORunner(artifact.path, locations, precision, threads, cut, **options),
                "OpenVINO CPU (the IR itself, with extra Result nodes)")
    if backend.startswith("tensorrt"):
        onnx_name = artifact.metadata.get("onnx")
        if not onnx_name:
            raise ArtifactError(f"{target.name}: the artifact names no precision-ready ONNX to mark")
        return (MarkedOnnxRunner(Path(artifact.path).parent / onnx_name, locations, threads, cut),
                "onnxruntime CPU on the precision-ready ONNX (the host's stand-in for the engine; "
                "device-check marks the engine itself)")
    raise ArtifactError(f"no way to mark points in a {backend} artifact")
