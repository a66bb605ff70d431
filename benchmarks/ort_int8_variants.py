"""onnxruntime-int8 formats on the trained fixture: accuracy and latency of each, on this CPU.

    # build every format once (calibrated once), evaluate and time them here:
    .venv/bin/python benchmarks/ort_int8_variants.py build ONNX OUT [--calib 128] [--eval 300]
    # evaluate the same files on another CPU or an emulated one (needs only onnxruntime + numpy):
    qemu-x86_64 -cpu Haswell .venv/bin/python benchmarks/ort_int8_variants.py eval OUT --count 60

ONNX is the simplified static-batch-1 FP32 ONNX of the fixture, e.g. out/ci/onnx/model.onnx after
``xcit-export --recipe recipes/ci-gate.toml --out out/ci``. Calibration: the first demo calib
images; evaluation: demo eval images (seed 0). Activation-by-activation MatMuls stay FP32 as in the
shipped target. ``eval`` prints the CPU's ISA flags as CPUID reports them (an emulator's, under
qemu); its latency column is meaningless under emulation and is printed only natively.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xcit_export.fingerprint import cpu_capabilities  # noqa: E402


def _runner(path, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _accuracy(out, ref, y):
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    return {"top1": float((out.argmax(1) == y).mean()), "agreement": float((out.argmax(1) == ref.argmax(1)).mean()),
            "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}


def evaluate(folder: Path, count: int | None, threads: int, rounds: int, timed: bool,
             formats: list | None = None) -> dict:
    data = np.load(folder / "eval.npz")
    x, y = data["x"][:count], data["y"][:count]
    names = ["fp32"] + (formats or json.loads((folder / "formats.json").read_text()))
    runners = {n: _runner(folder / f"{n}.onnx", threads) for n in names}
    outs, rows = {}, {}
    for n, r in runners.items():  # one row at a time, so a slow (emulated) run shows progress
        outs[n] = np.concatenate([r(x[i:i + 1]) for i in range(len(x))])
        rows[n] = _accuracy(outs[n], outs["fp32"], y)
        print(f"{n}: {rows[n]}", flush=True)
    if timed:  # alternate the runners, so a busy neighbour slows all of them alike
        times = {n: [] for n in names}
        for _ in range(rounds):
            for n, r in runners.items():
                for _ in range(3):
                    r(x[:1])
                for _ in range(20):
                    t0 = time.perf_counter()
                    r(x[:1])
                    times[n].append((time.perf_counter() - t0) * 1e3)
        for n in names:
            rows[n]["median_ms"] = float(np.median(times[n]))
    caps = cpu_capabilities()
    print(f"CPU flags (CPUID): {', '.join(caps.flags) or 'none'}; ISA class {caps.isa_class}; {len(x)} images")
    print("| format | top-1 | agreement | cosine (mean) | cosine (min) |" + (" median (ms) |" if timed else ""))
    for n, r in rows.items():
        line = (f"| {n} | {r['top1']:.2%} | {r['agreement']:.2%} | {r['cosine_mean']:.4f} | {r['cosine_min']:.3f} |")
        print(line + (f" {r['median_ms']:.2f} |" if timed else ""))
    return rows


def build(onnx_path: Path, folder: Path, calib: int, count: int) -> None:
    import shutil

    from onnxruntime.quantization import quant_pre_process

    from xcit_export.data.sets import calibration_set, demo_dataset
    from xcit_export.targets.onnxruntime import _activation_matmuls
    from xcit_export.quantize.ort_int8 import FORMATS, quantize
    from xcit_export.models.zoo import get_spec

    folder.mkdir(parents=True, exist_ok=True)
    pp = get_spec("xcit_nano_12_p16_224").preprocessing
    cal, _ = calibration_set("demo", pp, calib).load()
    x, y = demo_dataset("eval").select(count, 0, "--eval-size").load()
    np.savez(folder / "eval.npz", x=x, y=y)
    shutil.copyfile(onnx_path, folder / "fp32.onnx")
    prepared = folder / "prepared.onnx"
    quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
    exclude = _activation_matmuls(prepared)
    cache = folder / "calibration.json"
    for name, fmt in FORMATS.items():
        t0 = time.perf_counter()
        quantize(prepared, folder / f"{name}.onnx", cal, fmt, step=1, exclude_nodes=exclude, cache=cache)
        print(f"{name}: quantized in {time.perf_counter() - t0:.1f} s")
    (folder / "formats.json").write_text(json.dumps(list(FORMATS)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("onnx", type=Path)
    b.add_argument("out", type=Path)
    b.add_argument("--calib", type=int, default=128)
    b.add_argument("--eval", type=int, default=300)
    e = sub.add_parser("eval")
    e.add_argument("out", type=Path)
    e.add_argument("--count", type=int)
    e.add_argument("--formats", nargs="+", help="only these formats (default: all built)")
    for p in (b, e):
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--rounds", type=int, default=5)
        p.add_argument("--no-timing", action="store_true", help="accuracy only (e.g. under an emulator)")
    args = ap.parse_args()
    if args.cmd == "build":
        build(args.onnx, args.out, args.calib, args.eval)
    evaluate(args.out, getattr(args, "count", None), args.threads, args.rounds, not args.no_timing,
             getattr(args, "formats", None))


if __name__ == "__main__":
    main()
