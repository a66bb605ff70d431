"""onnxruntime-int8 design check: the same fixture ONNX quantized three ways, accuracy and latency.

    .venv/bin/python benchmarks/ort_int8_variants.py ONNX

ONNX is the simplified static-batch-1 FP32 ONNX of the fixture, e.g. out/ci/onnx/model.onnx after
``xcit-export --recipe recipes/ci-gate.toml --out out/ci``. Calibration: 128 demo calib images;
evaluation: 300 demo eval images (both seed 0).
"""
import numpy as np, onnx, time, sys
from onnxruntime.quantization import quantize_static, QuantFormat, QuantType, CalibrationMethod, quant_pre_process
from xcit_export.targets.onnxruntime import _Calibration, OnnxRuntimeRunner
from xcit_export.data import demo_dataset, calibration_set
from xcit_export.zoo import get_spec
from xcit_export.validate import run_in_batches, measure_latency, LatencyOptions
pp = get_spec("xcit_nano_12_p16_224").preprocessing
cal,_ = calibration_set("demo", pp, 128).load()
ev = demo_dataset("eval").select(300, 0, "--eval-size"); x, y = ev.load()
src = sys.argv[1]
m = onnx.load(src)
inits = {i.name for i in m.graph.initializer}
act_mm = [n.name for n in m.graph.node if n.op_type == "MatMul" and not any(i in inits for i in n.input)]
print("activation matmuls", len(act_mm))
fp = OnnxRuntimeRunner(__import__("pathlib").Path(src), threads=2)
ref = run_in_batches(fp.infer, x, 1)[0]
print("fp32 top1", (ref.argmax(1)==y).mean(), measure_latency(fp.infer, x[:1], LatencyOptions(5,50)).median_ms)
quant_pre_process(src, "/tmp/xcit-int8-prep.onnx", skip_symbolic_shape=True)
for name, act, sym, excl in [("u8-asym", QuantType.QUInt8, False, []), ("u8-asym-noact", QuantType.QUInt8, False, act_mm), ("s8-sym-noact", QuantType.QInt8, True, act_mm)]:
    t=time.time()
    quantize_static("/tmp/xcit-int8-prep.onnx", f"/tmp/xcit-int8-{name}.onnx", _Calibration("input", cal, 1), quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul","Gemm","Conv"], per_channel=True, activation_type=act, weight_type=QuantType.QInt8,
        nodes_to_exclude=excl, calibrate_method=CalibrationMethod.MinMax, extra_options={"ActivationSymmetric": sym, "WeightSymmetric": True})
    r = OnnxRuntimeRunner(__import__("pathlib").Path(f"/tmp/xcit-int8-{name}.onnx"), threads=2)
    out = run_in_batches(r.infer, x, 1)[0]
    cos = (out*ref).sum(1)/np.linalg.norm(out,axis=1)/np.linalg.norm(ref,axis=1)
    print(name, "top1", (out.argmax(1)==y).mean(), "agree", (out.argmax(1)==ref.argmax(1)).mean(), "cosmin", cos.min(), "lat", measure_latency(r.infer, x[:1], LatencyOptions(5,50)).median_ms, time.time()-t)
