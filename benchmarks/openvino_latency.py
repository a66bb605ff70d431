"""OpenVINO and ONNX Runtime latency at batch 1, every runner timed alternately in one run, with the roofline.

    .venv/bin/python benchmarks/openvino_latency.py                      # nano 224, static batch 1, 2 threads
    .venv/bin/python benchmarks/openvino_latency.py --rounds 9 --json out/openvino_latency.json

Runners (each in its own process, ``common.Worker``; rounds alternate A B C ... with the order rotated,
and every figure is the median of per-round medians):

* ``pytorch-eager`` and ``torch.compile`` (inductor, ``--compile-mode``; ``--no-compile`` skips it);
* ``openvino-fp32``: our runner (``INFERENCE_PRECISION_HINT=f32``, latency hint, one reused request);
* ``benchmark_app-fp32``: ``benchmark_app -hint latency -infer_precision f32 -niter N`` on the same IR
  with the same ``INFERENCE_NUM_THREADS`` (``-load_config``), one subprocess per round; its Median;
* ``openvino-fp32 (reference form)``: the IR of the model exported as written, without the export-form
  rewrites of ``models/fuse.py`` (``--no-reference-form`` skips it): what the rewrites buy;
* ``openvino-int8`` and ``benchmark_app-int8`` (CPU default precision, NNCF PTQ on ``--calib-count``
  seeded inputs: speed only);
* ``onnxruntime-fp32``: our runner, and ``onnxruntime-bare``: a bare ``InferenceSession.run`` loop with
  the same session options (our runner's overhead).

It prints the machine's CPU flags, the measured FP32 matmul peak, the model's FLOPs, each runner's
roofline ratio (median / (FLOPs / peak)), and the ratios the issues quote. Timings on a busy machine
are noise; alternation keeps the *ratios* fair, not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import numpy as np
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (build, BenchmarkApp, Worker, alternate, bare_ort_factory, compile_factory,  # noqa: E402
                    eager_factory, log, machine, matmul_peak_gflops, model_gflops, summarise, target_factory)

from xcit_export.export import ExportOptions, export_onnx, seeded_inputs, simplify_onnx  # noqa: E402
from xcit_export.models.weights import load_model  # noqa: E402
from xcit_export.models.zoo import get_spec  # noqa: E402


def export(model, input_shape, folder: Path, batch: int | None, export_form: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    raw = export_onnx(model, input_shape, folder / "model.raw.onnx", ExportOptions(batch=batch, export_form=export_form))
    return simplify_onnx(raw, folder / "model.onnx")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="xcit_nano_12_p16_224")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="threads for every runner")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds")
    ap.add_argument("--iterations", type=int, default=100, help="timed inferences per runner per round")
    ap.add_argument("--calib-count", type=int, default=32, help="seeded calibration inputs for INT8")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune, ...)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--no-int8", action="store_true", help="skip INT8")
    ap.add_argument("--no-reference-form", action="store_true", help="skip the IR of the un-rewritten export")
    ap.add_argument("--work", type=Path, help="folder for the ONNX and IRs (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="ov-bench-"))
    spec = get_spec(args.model)
    h, w = spec.preprocessing.input_size
    input_shape = (3, h, w)
    threads = args.threads
    record = machine(threads)
    log(f"CPU: {record['cpu']} ({record['cpu_count']} cores) flags {record['cpu_flags']}; OpenVINO CPU "
        f"capabilities {record.get('openvino_capabilities')}; threads {threads}; load {record.get('loadavg_at_start')}")
    peaks = [matmul_peak_gflops(threads)]
    model = load_model(spec, "random", 0)
    gflops = model_gflops(model, seeded_inputs(input_shape, 1, seed=2))
    log(f"FP32 matmul peak {peaks[0]:.1f} GFLOP/s; {spec.name}: {gflops:.3f} GFLOP per image")

    log(f"export: {spec.name} static batch 1 (export form)")
    onnx_static = export(model, input_shape, work / "onnx-b1", 1)
    fp32 = build("openvino-fp32", spec, onnx_static, work / "openvino-fp32", 1, input_shape, {})
    ort = build("onnxruntime-fp32", spec, onnx_static, work / "onnxruntime-fp32", 1, input_shape, {})
    n = args.iterations
    name = spec.name
    workers = {
        "pytorch-eager": (eager_factory, (name, 1, threads)),
        "openvino-fp32": (target_factory, ("openvino-fp32", str(fp32.path.parent), name, 1, threads, {})),
        "onnxruntime-fp32": (target_factory, ("onnxruntime-fp32", str(ort.path.parent), name, 1, threads, {})),
        "onnxruntime-bare": (bare_ort_factory, (str(ort.path), name, 1, threads)),
    }
    apps = {"benchmark_app-fp32": BenchmarkApp(fp32.path, threads, "f32", iterations=n)}
    if not args.no_compile:
        workers["torch.compile"] = (compile_factory, (name, 1, threads, args.compile_mode))
    if not args.no_reference_form:
        log("export: the reference form (no models/fuse.py rewrites), for comparison")
        onnx_ref = export(model, input_shape, work / "onnx-b1-reference", 1, export_form=False)
        ref_ir = build("openvino-fp32", spec, onnx_ref, work / "openvino-fp32-reference", 1, input_shape, {})
        workers["openvino-fp32 (reference form)"] = (
            target_factory, ("openvino-fp32", str(ref_ir.path.parent), name, 1, threads, {}))
        ort_ref = build("onnxruntime-fp32", spec, onnx_ref, work / "onnxruntime-fp32-reference", 1, input_shape, {})
        workers["onnxruntime-fp32 (reference form)"] = (
            target_factory, ("onnxruntime-fp32", str(ort_ref.path.parent), name, 1, threads, {}))
    if not args.no_int8:
        log(f"openvino-int8: NNCF PTQ on {args.calib_count} seeded inputs")
        calib = seeded_inputs(input_shape, args.calib_count, seed=3)
        int8 = build("openvino-int8", spec, onnx_static, work / "openvino-int8", 1, input_shape,
                     {"subset_size": args.calib_count}, calibration=calib)
        workers["openvino-int8"] = (target_factory, ("openvino-int8", str(int8.path.parent), name, 1, threads, {}))
        apps["benchmark_app-int8"] = BenchmarkApp(int8.path, threads, None, iterations=n)
        log("onnxruntime-int8")
        ort8 = build("onnxruntime-int8", spec, onnx_static, work / "onnxruntime-int8", 1, input_shape, {},
                     calibration=calib)
        workers["onnxruntime-int8"] = (target_factory, ("onnxruntime-int8", str(ort8.path.parent), name, 1,
                                                        threads, {}))
    log(f"starting {len(workers)} runner processes")
    started = {k: Worker(k, f, a, n) for k, (f, a) in workers.items()}
    runners = {**started, **apps}
    log(f"{args.rounds} alternating rounds x {n} iterations over {len(runners)} runners")
    try:
        rounds = alternate(runners, args.rounds, on_round=lambda r: log(f"round {r + 1}/{args.rounds} done"))
    finally:
        for wk in started.values():
            wk.close()
    peaks.append(matmul_peak_gflops(threads))
    peak = max(peaks)
    med = summarise(rounds)
    roof = gflops / peak * 1e3
    results = {"model": spec.name, "batch": 1, "threads": threads, "machine": record, "gflops": round(gflops, 4),
               "matmul_peak_gflops": round(peak, 1), "matmul_peaks_gflops": [round(p, 1) for p in peaks],
               "roofline_ms": round(roof, 3), "median_ms": med, "round_medians_ms": rounds,
               "benchmark_app_commands": {k: a.command for k, a in apps.items()}}
    eager = med["pytorch-eager"]
    ratios = {"openvino-fp32 / benchmark_app-fp32 (goal <= 1.05)": med["openvino-fp32"] / med["benchmark_app-fp32"],
              "onnxruntime-fp32 / onnxruntime-bare": med["onnxruntime-fp32"] / med["onnxruntime-bare"]}
    if "openvino-int8" in med:
        ratios["openvino-int8 / benchmark_app-int8 (goal <= 1.05)"] = med["openvino-int8"] / med["benchmark_app-int8"]
    fp32_names = [k for k in med if ("fp32" in k or k == "onnxruntime-bare") and "reference" not in k]
    best_fp32 = min(fp32_names, key=med.get)
    best = min((k for k in med if not k.startswith("benchmark_app")), key=med.get)  # our targets only
    ratios[f"best FP32 ({best_fp32}) / roofline (goal <= 1.4 on AVX2)"] = med[best_fp32] / roof
    ratios[f"best overall ({best}) / pytorch-eager (goal <= 0.30)"] = med[best] / eager
    for form in ("openvino-fp32", "onnxruntime-fp32"):
        if f"{form} (reference form)" in med:
            ratios[f"{form}: export form / reference form"] = med[form] / med[f"{form} (reference form)"]
    results["ratios"] = {k: round(v, 3) for k, v in ratios.items()}
    # The same comparisons paired round by round (median of the per-round ratios): a burst of load
    # from outside that slows one round slows both runners of a pair, so this reading is the one
    # least moved by a shared host.
    pairs = [("openvino-fp32", "benchmark_app-fp32"), ("openvino-int8", "benchmark_app-int8"),
             ("onnxruntime-fp32", "onnxruntime-bare")]
    results["paired_ratios"] = {f"{a} / {b}": round(float(np.median(np.array(rounds[a]) / np.array(rounds[b]))), 3)
                                for a, b in pairs if a in rounds and b in rounds}

    print(f"\n{spec.name}, batch 1, {threads} threads, {record['cpu']} flags {' '.join(record['cpu_flags'])}; "
          f"{gflops:.3f} GFLOP; FP32 matmul peak {peak:.1f} GFLOP/s (measured {', '.join(f'{p:.1f}' for p in peaks)}) "
          f"-> roofline {roof:.2f} ms; {args.rounds} alternating rounds x {n} iterations\n")
    print("| runner | median ms | min-max of round medians | roofline ratio | vs eager |")
    print("|---|---:|---:|---:|---:|")
    for k in sorted(med, key=med.get):
        lo, hi = min(rounds[k]), max(rounds[k])
        print(f"| {k} | {med[k]:.2f} | {lo:.2f}-{hi:.2f} | {med[k] / roof:.2f} | {med[k] / eager:.3f} |")
    print()
    for k, v in results["ratios"].items():
        print(f"{k}: {v:.3f}")
    for k, v in results["paired_ratios"].items():
        print(f"{k}, median of per-round ratios: {v:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
