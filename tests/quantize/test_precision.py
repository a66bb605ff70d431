"""Precision-ready ONNX (xcit_export.quantize.precision): FP16 by ModelOpt AutoCast, INT8 by ModelOpt PTQ.

Both must run on onnxruntime CPU and agree with the FP32 ONNX; the FP16 graph must keep XCiT's
overflow-prone ops in FP32; the INT8 graph must be what NVIDIA's ONNX parser accepts (no INT32
DequantizeLinear, which onnxruntime's own quantize_static emits for biases).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from xcit_export.quantize import precision as prec
from xcit_export.errors import DataError, ExportError

import trt_models


def _agreement(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    return float(cos.min()), float((out.argmax(1) == ref.argmax(1)).mean())


def _types(model: onnx.ModelProto) -> dict[str, int]:
    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.value_info}
    types.update({vi.name: vi.type.tensor_type.elem_type for vi in list(model.graph.input) + list(model.graph.output)})
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


@pytest.fixture(scope="module")
def eval_x():
    return trt_models.inputs(8, seed=5)


@pytest.fixture(scope="module")
def fp32_out(eval_x):
    return prec.run_onnxruntime(trt_models.nano_onnx(), eval_x)


def test_l2_normalisation_chains_are_found_structurally():
    model = onnx.load(str(trt_models.nano_onnx()))
    nodes = {n.name: n.op_type for n in model.graph.node}
    chain = prec.l2_normalize_nodes(model)
    ops = [nodes[n] for n in chain]
    assert ops.count("ReduceL2") == 24  # q and k in each of nano's 12 XCA blocks
    assert ops.count("Div") == 24 and ops.count("Clip") == 24


def test_fp16_keeps_norms_in_fp32_and_agrees_with_fp32(eval_x, fp32_out):
    path, summary = trt_models.precision_onnx("fp16")
    model = onnx.load(str(path))
    types = _types(model)
    assert types["input"] == TensorProto.FLOAT and types["logits"] == TensorProto.FLOAT
    kept = set(prec.l2_normalize_nodes(model))
    checked = 0
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "ReduceL2") or (node.name in kept and node.op_type == "Div"):
            assert types.get(node.output[0]) == TensorProto.FLOAT, f"{node.name} ({node.op_type}) is not FP32"
            assert types.get(node.input[0]) == TensorProto.FLOAT, f"{node.name} ({node.op_type}) input is not FP32"
            checked += 1
    assert checked == 41 + 24 + 24
    # ...and the rest really is FP16: the MatMul/Gemm/Conv weights are float16 initializers.
    weights = [types.get(n.input[1]) for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")
               and n.input[1] in {i.name for i in model.graph.initializer}]
    assert weights and all(t == TensorProto.FLOAT16 for t in weights)
    assert summary["l2_normalize_nodes_kept"] == 96 and summary["reference_images"] == 8

    out = prec.run_onnxruntime(path, eval_x)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    cos_min, top1 = _agreement(out, fp32_out)
    assert cos_min >= 0.9999 and top1 == 1.0


def test_int8_is_explicit_qdq_the_parser_accepts_and_agrees_with_fp32(eval_x, fp32_out):
    path, summary = trt_models.precision_onnx("int8")
    model = onnx.load(str(path))
    assert summary["quantize_linear"] > 100 and summary["calibration_method"] == "entropy"
    assert prec.int32_dequantize_nodes(model) == []
    # Explicit quantization as TensorRT fuses it: every DequantizeLinear reads a QuantizeLinear
    # (INT8, weights included), and biases stay float: no Gemm/Conv bias comes out of a DQ.
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            assert producers[node.input[0]].op_type == "QuantizeLinear", node.name
        if node.op_type == "Add":  # the residual stream stays unquantized (precision.INT8_DEFAULT_...)
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
        if node.op_type in ("Gemm", "Conv") and len(node.input) > 2:
            bias = producers.get(node.input[2])
            assert bias is None or bias.op_type != "DequantizeLinear", f"{node.name} has a quantized bias"
    types = _types(model)
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "ReduceL2"):
            assert types.get(node.output[0]) == TensorProto.FLOAT, f"{node.name} is not FP32"

    out = prec.run_onnxruntime(path, eval_x)
    assert np.isfinite(out).all()
    cos_min, top1 = _agreement(out, fp32_out)
    assert cos_min >= 0.98 and top1 >= 0.75


def test_int32_bias_detector_catches_onnxruntime_quantize_static(tmp_path):
    """The finding behind ModelOpt: onnxruntime's default QDQ output quantizes a Gemm bias to INT32."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w", "b"], ["logits"], name="qkv", transB=1)], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")])
    src = tmp_path / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(src))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": rng.standard_normal((2, 8)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    dst = tmp_path / "gemm.qdq.onnx"
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ)
    assert prec.int32_dequantize_nodes(onnx.load(str(dst))), "onnxruntime no longer emits an INT32 bias DQ"


def test_calibration_of_the_wrong_size_is_refused(tmp_path):
    bad = np.zeros((4, 3, 64, 64), np.float32)
    with pytest.raises(DataError, match=r"\(3, 64, 64\).*\(3, 224, 224\)"):
        prec.to_int8(trt_models.nano_onnx(), tmp_path / "x.onnx", bad)


def test_unknown_calibration_method_is_refused(tmp_path):
    with pytest.raises(ExportError, match="calibration_method=entropy"):
        prec.to_int8(trt_models.nano_onnx(), tmp_path / "x.onnx", trt_models.calibration(), method="percentile")
