"""ONNX Runtime target vs PyTorch eager, same model, same thread count, measured in one run.

    python benchmarks/ort_vs_eager.py [--model xcit_nano_12_p16_224] [--threads 2] [--rounds 5]

Both runners are timed with xcit_export.evaluate.validate.measure_latency (the timer every report uses), in
alternating rounds so that drift in machine load hits both equally; the figure is the median of
the per-round medians. Prints the ratio ORT / eager for the dynamic-batch and static-batch ONNX.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from xcit_export import export as ex
from xcit_export.targets.onnxruntime import OnnxRuntimeRunner
from xcit_export.evaluate.validate import LatencyOptions, measure_latency, torch_infer
from xcit_export.models.weights import load_model
from xcit_export.models.zoo import get_spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="xcit_nano_12_p16_224")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=100)
    args = ap.parse_args()

    spec = get_spec(args.model)
    model = load_model(spec, "random")
    shape = (3, *spec.preprocessing.input_size)
    tmp = Path(tempfile.mkdtemp())
    paths = {}
    for name, batch in (("dynamic", None), ("static-1", 1)):
        raw = ex.export_onnx(model, shape, tmp / f"{name}.raw.onnx", ex.ExportOptions(batch=batch))
        paths[name] = ex.simplify_onnx(raw, tmp / f"{name}.onnx")
    runners = {"pytorch-eager": torch_infer(model, args.threads)}
    for name, path in paths.items():
        runners[f"onnxruntime-fp32 ({name})"] = OnnxRuntimeRunner(path, threads=args.threads).infer
    x = ex.seeded_inputs(shape, 1)
    opts = LatencyOptions(warmup=10, iterations=args.iterations)
    medians: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(args.rounds):
        for name, infer in runners.items():
            medians[name].append(measure_latency(infer, x, opts).median_ms)
    eager = float(np.median(medians["pytorch-eager"]))
    print(f"{args.model}, batch 1, {args.threads} threads, {args.rounds} rounds x {args.iterations} iterations")
    for name, values in medians.items():
        med = float(np.median(values))
        print(f"  {name:34s} median {med:7.2f} ms   ratio vs eager {med / eager:.3f}")


if __name__ == "__main__":
    main()
