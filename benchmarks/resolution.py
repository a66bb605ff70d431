"""Latency against tokens: one --dynamic-size ONNX per model, timed on onnxruntime-fp32 at several sizes.

XCiT's cross-covariance attention is linear in the number of tokens N, a ViT's token attention
quadratic; the fitted log-log slope of median latency against N shows it (near 1 for XCiT, rising
toward 2 for ViT as N grows). Random weights (latency does not depend on them), batch 1.

Usage: python benchmarks/resolution.py [--sizes 224,384,512,768] [--threads 2] [--iterations 10]
       [--models xcit_nano_12_p16_224,vit_small_patch16_224] [--svg out.svg]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from xcit_export import export as export_mod
from xcit_export.evaluate.sizes import fit_slope, label, tokens
from xcit_export.values import parse_sizes
from xcit_export.evaluate.validate import LatencyOptions, measure_latency
from xcit_export.models.deploy import DeployModel
from xcit_export.models.zoo import build_model, get_spec
from xcit_export.targets.onnxruntime import OnnxRuntimeRunner


def run(models: list[str], sizes, threads: int, iterations: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            spec = get_spec(name)
            torch.manual_seed(0)
            model = DeployModel(build_model(spec), spec.preprocessing, dynamic_size=True)
            raw = export_mod.export_onnx(model, model.input_shape, Path(tmp) / f"{name}.raw.onnx",
                                         export_mod.ExportOptions(batch=1, dynamic_size=True))
            path = export_mod.simplify_onnx(raw, Path(tmp) / f"{name}.onnx")
            runner = OnnxRuntimeRunner(path, threads=threads)
            points = []
            for size in sizes:
                x = export_mod.seeded_inputs((3, *size), 1, seed=1)
                lat = measure_latency(runner.infer, x, LatencyOptions(warmup=2, iterations=iterations))
                n = tokens(size, spec.patch_size)
                points.append((n, lat.median_ms))
                rows.append({"model": name, "size": label(size), "tokens": n, "median_ms": lat.median_ms})
                print(f"{name:24s} {label(size):>9s} {n:6d} tokens  {lat.median_ms:9.2f} ms", flush=True)
            runner.close()
            rows.append({"model": name, "slope": fit_slope(points),
                         "slope_upper": fit_slope(points[len(points) // 2:])})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="xcit_nano_12_p16_224,vit_small_patch16_224")
    p.add_argument("--sizes", default="224,384,512,768")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--svg", type=Path, help="also write the log-log plot (report/plots.py) here")
    args = p.parse_args()
    sizes = parse_sizes(args.sizes)
    rows = run(args.models.split(","), sizes, args.threads, args.iterations)
    print("\n| model | size | tokens | median (ms) |\n|---|---|---:|---:|")
    for r in rows:
        if "size" in r:
            print(f"| {r['model']} | {r['size']} | {r['tokens']} | {r['median_ms']:.2f} |")
    print()
    for r in rows:
        if "slope" in r:
            print(f"{r['model']}: fitted slope {r['slope']:.2f} over all sizes, {r['slope_upper']:.2f} over the "
                  f"larger half")
    if args.svg:
        from xcit_export.report.plots import latency_vs_tokens

        series = [{"label": m, "slope": next(r["slope"] for r in rows if r.get("model") == m and "slope" in r),
                   "points": [(r["tokens"], r["median_ms"]) for r in rows if r.get("model") == m and "size" in r]}
                  for m in args.models.split(",")]
        args.svg.write_text(latency_vs_tokens(series))


if __name__ == "__main__":
    main()
