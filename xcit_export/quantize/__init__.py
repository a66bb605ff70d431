"""Quantization: ModelOpt FP16/INT8 ONNX, per-group sensitivity and budget search, ORT INT8 formats."""
