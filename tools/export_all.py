"""Export every zoo model at a small input through the whole ONNX stage (trace, checker, onnxsim,
parity against PyTorch) and print one line per model. Slow (the 24-layer models take a while):
a release check, not part of the test suite.

    python tools/export_all.py [--size 64] [MODEL ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from xcit_export import export as ex
from xcit_export.models.weights import load_model
from xcit_export.models.zoo import MODELS, get_spec


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("models", nargs="*")
    args = ap.parse_args()
    failures = 0
    for name in args.models or list(MODELS):
        spec = get_spec(name).with_overrides(input_size=(args.size, args.size))
        model = load_model(spec)
        t0 = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                raw = ex.export_onnx(model, (3, args.size, args.size), Path(tmp) / "raw.onnx")
                simplified = ex.simplify_onnx(raw, Path(tmp) / "model.onnx")
                x = ex.seeded_inputs((3, args.size, args.size), 2)
                worst = ex.check_parity(simplified, x, ex.torch_reference(model, x))["logits"]
            print(f"{name:28s} ok   max|onnx - torch| = {worst:.2e}  ({time.perf_counter() - t0:.1f} s)", flush=True)
        except Exception as exc:  # report every model, then fail at the end
            failures += 1
            print(f"{name:28s} FAIL {type(exc).__name__}: {exc}", flush=True)
    print(f"{len(args.models or MODELS) - failures} exported, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
