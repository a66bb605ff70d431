"""OpenVINO latency on this CPU, all figures from one run: PyTorch eager, our openvino-fp32 runner,
OpenVINO's own ``benchmark_app`` on the same IR, openvino-int8, and the ratios BENCHMARKS.md quotes.

    .venv/bin/python benchmarks/openvino_latency.py                 # nano 224, static batch 1
    .venv/bin/python benchmarks/openvino_latency.py --json out/openvino_latency.json

What is measured (batch 1, static-batch IRs, same thread count everywhere):

* ``pytorch-eager``: ``validate.torch_infer`` + ``validate.measure_latency`` (the pipeline's method);
* ``openvino-fp32``: the target's runner (``INFERENCE_PRECISION_HINT=f32``, latency hint, one reused
  infer request) timed by the same ``measure_latency``;
* ``benchmark_app``: ``benchmark_app -m model.xml -d CPU -hint latency -t 15 -infer_precision f32``
  (threads through ``-load_config``) on the same IR; its "Median" line. ``-infer_precision f32`` matters: without
  it the CPU plugin runs the FP32 IR in bf16 on CPUs with AVX512_BF16/AMX (this one included),
  which is a different computation from what ``openvino-fp32`` validates;
* ``openvino-fp32 @ device default``: the same IR at the CPU's default precision (bf16 here) for
  reference, since that is what an unconfigured OpenVINO deployment gets;
* ``openvino-int8``: NNCF PTQ (transformer preset) calibrated on ``--calib-count`` seeded random
  inputs (calibration content does not change speed), at the device's default precision;
* ``openvino-fp32 dynamic``: a dynamic-batch IR run at batch 1 (``--no-dynamic`` skips its export).

Timings on a shared or busy machine are noise; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xcit_export.export import ExportOptions, export_onnx, seeded_inputs, simplify_onnx  # noqa: E402
from xcit_export.fingerprint import device_fingerprint  # noqa: E402
from xcit_export.targets import Artifact, BuildContext, get_target  # noqa: E402
from xcit_export.validate import LatencyOptions, measure_latency, torch_infer  # noqa: E402
from xcit_export.weights import load_model  # noqa: E402
from xcit_export.zoo import get_spec  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def export(model, input_shape, folder: Path, batch: int | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    raw = export_onnx(model, input_shape, folder / "model.raw.onnx", ExportOptions(batch=batch))
    return simplify_onnx(raw, folder / "model.onnx")


def build(name: str, spec, onnx_path: Path, folder: Path, batch: int | None, input_shape, options: dict,
          calibration=None, threads=None) -> Artifact:
    folder.mkdir(parents=True, exist_ok=True)
    ctx = BuildContext(spec=spec, onnx_path=onnx_path, out_dir=folder, batch=batch, input_shape=input_shape,
                       calibration=calibration, calibration_id="seeded", options=options, threads=threads)
    artifact = get_target(name).build(ctx)
    artifact.save_metadata()
    return Artifact.from_dir(folder)


def time_runner(name: str, artifact: Artifact, x: np.ndarray, opts: LatencyOptions, threads: int,
                **options) -> dict:
    runner = get_target(name).load(artifact, threads=threads, **options)
    try:
        stats = measure_latency(runner.infer, x, opts).to_dict()
        stats["inference_precision"] = getattr(runner, "inference_precision", None)
        stats["threads"] = runner.threads
    finally:
        runner.close()
    return stats


def benchmark_app(xml: Path, seconds: int, threads: int | None, precision: str | None) -> dict:
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    if not Path(exe).exists():
        raise SystemExit("benchmark_app not found: it ships with the openvino wheel (pip install openvino)")
    cmd = [exe, "-m", str(xml), "-d", "CPU", "-hint", "latency", "-t", str(seconds)]
    if precision:
        cmd += ["-infer_precision", precision]
    if threads:
        # benchmark_app refuses -nthreads together with -hint (a UI rule); the same property goes in
        # through -load_config, exactly as our runner sets it.
        config = xml.parent / "benchmark_app_config.json"
        config.write_text(json.dumps({"CPU": {"INFERENCE_NUM_THREADS": str(threads)}}))
        cmd += ["-load_config", str(config)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300)
    out = res.stdout + res.stderr
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{out[-2000:]}")

    def grab(label: str) -> float | None:
        m = re.search(rf"{label}:\s+([\d.]+)\s*ms", out)
        return float(m.group(1)) if m else None

    count = re.search(r"Count:\s+(\d+)\s+iterations", out)
    median = grab("Median")
    if median is None:
        raise SystemExit(f"could not find the median latency in benchmark_app's output:\n{out[-2000:]}")
    return {"command": " ".join(cmd[1:]), "median_ms": median, "mean_ms": grab("Average"), "min_ms": grab("Min"),
            "max_ms": grab("Max"), "iterations": int(count.group(1)) if count else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="xcit_nano_12_p16_224")
    ap.add_argument("--weights", default="random", help="random (seeded), pretrained, or a checkpoint path")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every runner (default: all)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--min-seconds", type=float, default=10.0, help="minimum timed seconds per runner")
    ap.add_argument("--bench-seconds", type=int, default=15, help="benchmark_app -t")
    ap.add_argument("--calib-count", type=int, default=128, help="seeded calibration inputs for INT8")
    ap.add_argument("--no-dynamic", action="store_true", help="skip the dynamic-batch FP32 comparison")
    ap.add_argument("--no-int8", action="store_true", help="skip INT8")
    ap.add_argument("--work", type=Path, help="folder for the ONNX and IRs (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    import openvino as ov

    work = args.work or Path(tempfile.mkdtemp(prefix="ov-bench-"))
    spec = get_spec(args.model)
    h, w = spec.preprocessing.input_size
    input_shape = (3, h, w)
    threads = args.threads
    opts = LatencyOptions(warmup=args.warmup, iterations=args.iterations, min_seconds=args.min_seconds,
                          max_seconds=max(60.0, args.min_seconds * 3))
    fp = device_fingerprint()
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    log(f"CPU: {fp['cpu']} ({fp['cpu_count']} cores) flags {fp['cpu_flags']}; OpenVINO {ov.__version__} "
        f"capabilities {caps}; threads {threads}")
    results: dict = {"model": spec.name, "batch": 1, "threads": threads, "cpu": fp["cpu"],
                     "cpu_flags": fp["cpu_flags"], "openvino_capabilities": list(caps),
                     "avx512_vnni": "avx512_vnni" in fp["cpu_flags"], "openvino": ov.__version__, "rows": {}}
    rows = results["rows"]

    log(f"export: {spec.name} static batch 1")
    model = load_model(spec, args.weights, 0)
    onnx_static = export(model, input_shape, work / "onnx-b1", 1)
    x = seeded_inputs(input_shape, 1, seed=2)

    log("PyTorch eager")
    rows["pytorch-eager"] = measure_latency(torch_infer(model, threads), x, opts).to_dict()

    log("openvino-fp32: build + our runner")
    fp32 = build("openvino-fp32", spec, onnx_static, work / "openvino-fp32", 1, input_shape, {})
    rows["openvino-fp32"] = time_runner("openvino-fp32", fp32, x, opts, threads)
    log(f"benchmark_app -hint latency -infer_precision f32 -t {args.bench_seconds}")
    rows["benchmark_app-fp32"] = benchmark_app(fp32.path, args.bench_seconds, threads, "f32")

    log("openvino-fp32 IR at the device's default precision")
    rows["openvino-fp32@default"] = time_runner("openvino-fp32", fp32, x, opts, threads,
                                                inference_precision="default")

    if not args.no_int8:
        log(f"openvino-int8: NNCF PTQ on {args.calib_count} seeded inputs")
        calib = seeded_inputs(input_shape, args.calib_count, seed=3)
        t0 = time.perf_counter()
        int8 = build("openvino-int8", spec, onnx_static, work / "openvino-int8", 1, input_shape,
                     {"subset_size": args.calib_count}, calibration=calib)
        results["int8_build_seconds"] = round(time.perf_counter() - t0, 1)
        rows["openvino-int8"] = time_runner("openvino-int8", int8, x, opts, threads)
        rows["openvino-int8@f32"] = time_runner("openvino-int8", int8, x, opts, threads, inference_precision="f32")

    if not args.no_dynamic:
        log("openvino-fp32 dynamic batch, run at batch 1")
        onnx_dyn = export(model, input_shape, work / "onnx-dynamic", None)
        dyn = build("openvino-fp32", spec, onnx_dyn, work / "openvino-fp32-dynamic", None, input_shape, {})
        rows["openvino-fp32-dynamic"] = time_runner("openvino-fp32", dyn, x, opts, threads)

    med = {k: v["median_ms"] for k, v in rows.items()}
    ratios = {
        "ours_vs_benchmark_app (fp32; gate: within 15%)": med["openvino-fp32"] / med["benchmark_app-fp32"],
        "openvino-fp32 / pytorch-eager (gate: <= 0.40)": med["openvino-fp32"] / med["pytorch-eager"],
        "openvino-fp32@default / pytorch-eager": med["openvino-fp32@default"] / med["pytorch-eager"],
    }
    if "openvino-int8" in med:
        ratios["openvino-int8 / openvino-fp32"] = med["openvino-int8"] / med["openvino-fp32"]
        ratios["openvino-int8 / openvino-fp32@default"] = med["openvino-int8"] / med["openvino-fp32@default"]
    if "openvino-fp32-dynamic" in med:
        ratios["openvino-fp32 static / dynamic"] = med["openvino-fp32"] / med["openvino-fp32-dynamic"]
    results["ratios"] = {k: round(v, 3) for k, v in ratios.items()}

    print(f"\n{spec.name}, batch 1, {threads} threads, {fp['cpu']} (avx512_vnni: {results['avx512_vnni']}; "
          f"OpenVINO CPU capabilities: {', '.join(caps)}), OpenVINO {ov.__version__.split('-')[0]}\n")
    print("| runner | precision at run time | median ms | p90 ms | iterations |")
    print("|---|---|---:|---:|---:|")
    for name, r in rows.items():
        prec = r.get("inference_precision") or ("f32" if name == "benchmark_app-fp32" else "fp32 (torch)")
        p90 = f"{r['p90_ms']:.2f}" if "p90_ms" in r else "-"
        print(f"| {name} | {prec} | {r['median_ms']:.2f} | {p90} | {r.get('iterations')} |")
    print()
    for k, v in results["ratios"].items():
        print(f"{k}: {v:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
