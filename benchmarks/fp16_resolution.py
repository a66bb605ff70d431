"""FP16 at high resolution: cosine of tensorrt-fp16's precision-ready ONNX vs FP32, at 224 and 800x1344.

XCiT L2-normalises q and k over the token axis (196 tokens at 224, 4,200 at 800x1344), so that sum
of squares grows with the size. This script converts one --dynamic-size FP32 ONNX of
xcit_nano_12_p16_224 with ModelOpt AutoCast twice -- "plain" (AutoCast's own rules only: no op type
or node kept in FP32) and "ours" (quantize/precision.py's defaults: LayerNorm and the ReduceL2
chains in FP32) -- and runs both on onnxruntime CPU at each size against the FP32 ONNX.

Usage: python benchmarks/fp16_resolution.py [--weights demo] [--sizes 224,800x1344] [--count 4]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from xcit_export import export as export_mod
from xcit_export.values import parse_sizes
from xcit_export.evaluate.validate import compare_outputs
from xcit_export.models.deploy import DeployModel
from xcit_export.models.weights import load_model
from xcit_export.models.zoo import get_spec
from xcit_export.quantize.precision import run_onnxruntime, to_fp16


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="xcit_nano_12_p16_224")
    p.add_argument("--weights", default="random")
    p.add_argument("--sizes", default="224,800x1344")
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    spec = get_spec(args.model)
    if args.weights == "demo":  # the bundled trained fixture: 10 classes
        from xcit_export.models.weights import default_num_classes

        spec = spec.with_overrides(num_classes=default_num_classes("demo", args.model))
    model = DeployModel(load_model(spec, args.weights, 0), spec.preprocessing, dynamic_size=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = export_mod.export_onnx(model, model.input_shape, tmp / "raw.onnx",
                                     export_mod.ExportOptions(dynamic_size=True))
        fp32 = export_mod.simplify_onnx(raw, tmp / "fp32.onnx")
        calib = export_mod.seeded_inputs(model.input_shape, 8, seed=7)
        variants = {
            "plain AutoCast": to_fp16(fp32, tmp / "plain.onnx", calib, keep_op_types=(), keep_l2_normalize=False),
            "ours (LayerNorm + ReduceL2 chains FP32)": to_fp16(fp32, tmp / "ours.onnx", calib),
        }
        files = {"plain AutoCast": tmp / "plain.onnx", "ours (LayerNorm + ReduceL2 chains FP32)": tmp / "ours.onnx"}
        print("| variant | FP32 compute nodes | size | 1 - cosine (mean) | 1 - cosine (max) | max abs err | top-1 agreement | finite |")
        print("|---|---:|---|---:|---:|---:|---:|---|")
        for size in parse_sizes(args.sizes):
            x = export_mod.seeded_inputs((3, *size), args.count, seed=11)
            ref = run_onnxruntime(fp32, x, args.threads)
            for name, summary in variants.items():
                out = run_onnxruntime(files[name], x, args.threads)
                acc = compare_outputs(out, ref)
                print(f"| {name} | {summary['fp32_compute_nodes']} | {size[0]}x{size[1]} | {1 - acc['cosine_mean']:.2e} | "
                      f"{1 - acc['cosine_min']:.2e} | {acc['max_abs_error']:.2e} | {acc.get('top1_agreement', float('nan')):.2%} | "
                      f"{bool(np.isfinite(out).all())} |", flush=True)


if __name__ == "__main__":
    main()
