"""How latency and throughput grow with model size, patch size, resolution and batch (issue 13).

    .venv/bin/python benchmarks/scaling.py --markdown out/scaling.md --json out/scaling.json

For every model (default: nano, tiny, small at p16/224, nano at p8/224 and at p16/384) and batch
(default 1 and 8) the runners below are timed in alternating rounds (``common.alternate``) at the
same thread count, with random weights (weights do not change FP32 or INT8 kernel speed; INT8
calibration uses ``--calib-count`` seeded random inputs, enough for speed, not for accuracy):

* ``eager``: PyTorch eager (``validate.torch_infer``);
* ``compile``: ``torch.compile`` (inductor, ``--compile-mode``), compiled per batch before timing;
* ``ort-fp32`` / ``ort-int8``: the ``onnxruntime-fp32`` / ``onnxruntime-int8`` targets' runners on
  the dynamic-batch ONNX (export form);
* ``ov-fp32`` / ``ov-int8``: the ``openvino-fp32`` (``INFERENCE_PRECISION_HINT=f32``) /
  ``openvino-int8`` (CPU default precision) runners on static-batch IRs. The INT8 IR is quantized
  once per model at a dynamic batch and reshaped to each batch (NNCF runs once, not per batch).

Every cell is printed beside the model's FLOPs at that batch and its roofline ratio: measured
time / (FLOPs / measured FP32 matmul peak), both measured in this run (``common``). Batch 1 is
latency (median ms); batch 8 is throughput (images/s at the median).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
from common import (build, Worker, alternate, compile_factory, eager_factory, log, machine, matmul_peak_gflops, model_gflops,
                    summarise, target_factory)

from xcit_export.export import ExportOptions, export_onnx, seeded_inputs, simplify_onnx
from xcit_export.targets import Artifact
from xcit_export.models.weights import load_model
from xcit_export.models.zoo import get_spec

MODELS = ["xcit_nano_12_p16_224", "xcit_tiny_12_p16_224", "xcit_small_12_p16_224", "xcit_nano_12_p8_224",
          "xcit_nano_12_p16_384"]
RUNNERS = ["eager", "compile", "ort-fp32", "ort-int8", "ov-fp32", "ov-int8"]


def static_ir(artifact: Artifact, batch: int, folder: Path) -> Artifact:
    """A static-batch copy of a dynamic-batch IR (dynamic -> static is safe; the reverse is not)."""
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    model = ov.Core().read_model(str(artifact.path))
    shape = model.input(0).get_partial_shape()
    model.reshape({model.input(0): ov.PartialShape([batch, *[d.get_length() for d in list(shape)[1:]]])})
    xml = folder / "model.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    meta = dict(artifact.metadata, batch=batch, bin_size_bytes=xml.with_suffix(".bin").stat().st_size)
    out = Artifact(target=artifact.target, path=xml, files=[xml, xml.with_suffix(".bin")], metadata=meta)
    out.save_metadata()
    return Artifact.from_dir(folder)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--runners", nargs="+", default=RUNNERS, choices=RUNNERS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per (model, batch)")
    ap.add_argument("--images", type=int, default=160,
                    help="images timed per runner per round (iterations = images / batch, at least 5)")
    ap.add_argument("--calib-count", type=int, default=32, help="seeded calibration inputs for INT8 (speed only)")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune, ...)")
    ap.add_argument("--work", type=Path, help="folder for ONNX and IRs (default: a temporary one)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="xcit-scaling-"))
    threads = args.threads
    record = machine(threads)
    log(f"CPU {record['cpu']} ({record['cpu_count']} cores), flags {record['cpu_flags']}, threads {threads}")
    peaks = [matmul_peak_gflops(threads)]
    log(f"FP32 matmul peak (2048^3 torch.mm, {threads} threads): {peaks[0]:.1f} GFLOP/s")
    results: dict = {"machine": record, "runners": args.runners, "rows": [], "command": " ".join(
        ["benchmarks/scaling.py"] + (argv if argv is not None else __import__("sys").argv[1:]))}
    t_start = time.perf_counter()
    for name in args.models:
        spec = get_spec(name)
        h, w = spec.preprocessing.input_size
        input_shape = (3, h, w)
        model = load_model(spec, "random", 0).eval()
        folder = work / name
        log(f"{name}: export (dynamic batch, export form)")
        folder.mkdir(parents=True, exist_ok=True)
        onnx_path = simplify_onnx(export_onnx(model, input_shape, folder / "raw.onnx", ExportOptions(batch=None)),
                                  folder / "model.onnx")
        ort_int8 = ov_int8 = None
        calib = seeded_inputs(input_shape, args.calib_count, seed=3)
        if "ort-int8" in args.runners:
            log(f"{name}: onnxruntime-int8 build")
            ort_int8 = build("onnxruntime-int8", spec, onnx_path, folder / "ort-int8", None, input_shape, {},
                             calibration=calib, threads=threads)
        if "ov-int8" in args.runners:
            log(f"{name}: openvino-int8 build (NNCF, {args.calib_count} inputs)")
            ov_int8 = build("openvino-int8", spec, onnx_path, folder / "ov-int8", None, input_shape,
                            {"subset_size": args.calib_count}, calibration=calib, threads=threads)
        ort_fp32 = build("onnxruntime-fp32", spec, onnx_path, folder / "ort-fp32", None, input_shape, {})
        for batch in args.batches:
            x = seeded_inputs(input_shape, batch, seed=2)
            gflops = model_gflops(model, x)
            iterations = max(5, args.images // batch)
            workers: dict = {}
            for runner in args.runners:
                if runner == "eager":
                    workers[runner] = (eager_factory, (name, batch, threads))
                elif runner == "compile":
                    workers[runner] = (compile_factory, (name, batch, threads, args.compile_mode))
                elif runner == "ort-fp32":
                    workers[runner] = (target_factory, ("onnxruntime-fp32", str(ort_fp32.path.parent), name, batch,
                                                        threads, {}))
                elif runner == "ort-int8":
                    workers[runner] = (target_factory, ("onnxruntime-int8", str(ort_int8.path.parent), name, batch,
                                                        threads, {}))
                elif runner == "ov-fp32":
                    art = build("openvino-fp32", spec, onnx_path, folder / f"ov-fp32-b{batch}", batch, input_shape, {})
                    workers[runner] = (target_factory, ("openvino-fp32", str(art.path.parent), name, batch, threads, {}))
                else:
                    art = static_ir(ov_int8, batch, folder / f"ov-int8-b{batch}")
                    workers[runner] = (target_factory, ("openvino-int8", str(art.path.parent), name, batch, threads, {}))
            log(f"{name} b{batch}: starting {len(workers)} runner processes")
            t0 = time.perf_counter()
            started = {k: Worker(k, f, a, iterations) for k, (f, a) in workers.items()}
            log(f"{name} b{batch}: ready in {time.perf_counter() - t0:.0f} s; {args.rounds} alternating rounds x "
                f"{iterations} iterations")
            try:
                medians = alternate(started, args.rounds)
            finally:
                for w in started.values():
                    w.close()
            peaks.append(matmul_peak_gflops(threads))
            results["rows"].append({"model": name, "input": h, "patch": spec.patch_size, "batch": batch,
                                    "gflops": round(gflops, 3), "median_ms": summarise(medians),
                                    "round_medians_ms": medians})
            log(f"{name} b{batch} ({gflops:.2f} GFLOP): " + ", ".join(f"{k} {v:.2f} ms" for k, v in summarise(medians).items()))
            if args.json:  # partial results survive an interrupted run
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(results, indent=1) + "\n")
    peak = max(peaks)
    results["matmul_peak_gflops"] = round(peak, 1)
    results["matmul_peaks_gflops"] = [round(p, 1) for p in peaks]
    results["seconds"] = round(time.perf_counter() - t_start)
    for row in results["rows"]:
        row["roofline_ms"] = round(row["gflops"] / peak * 1e3, 3)
        row["roofline_ratio"] = {k: round(v / row["roofline_ms"], 2) for k, v in row["median_ms"].items()}
    table = markdown(results, args.runners)
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def markdown(results: dict, runners: list[str]) -> str:
    m = results["machine"]
    lines = [f"{m['cpu']}, {m['threads']} threads, flags {' '.join(m['cpu_flags'])}; FP32 matmul peak "
             f"{results['matmul_peak_gflops']} GFLOP/s (per-group peaks {results['matmul_peaks_gflops']}); "
             f"{results['seconds']} s", "",
             "Batch 1: median ms (roofline ratio). Batch 8: images/s (roofline ratio).", "",
             "| model | input | batch | GFLOP | roofline ms | " + " | ".join(runners) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(runners)]
    for row in results["rows"]:
        cells = []
        for r in runners:
            ms = row["median_ms"].get(r)
            if ms is None:
                cells.append("-")
            elif row["batch"] == 1:
                cells.append(f"{ms:.2f} ({row['roofline_ratio'][r]:.2f})")
            else:
                cells.append(f"{row['batch'] * 1e3 / ms:.0f} ({row['roofline_ratio'][r]:.2f})")
        short = row["model"].replace("xcit_", "").replace("_12", "")
        lines.append(f"| {short} | {row['input']} | {row['batch']} | {row['gflops']:.2f} | {row['roofline_ms']:.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
