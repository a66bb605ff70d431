"""Per-operator time of the reference form and the export form (models/fuse.py), OpenVINO and ONNX Runtime.

    .venv/bin/python benchmarks/op_profile.py [--model xcit_nano_12_p16_224] [--threads 1] [--runs 30]

Both forms of the model (random weights, static batch 1) are exported; for each, OpenVINO's CPU
performance counters (``PERF_COUNT``, FP32 inference precision) and onnxruntime's profiler
(``enable_profiling``, kernel events) are summed by executed layer/op type over ``--runs``
inferences. One thread by default: on a shared machine, single-thread kernel times move the
least. Prints one markdown table per runtime: ms per inference and count, before -> after.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401  (puts the repository on sys.path)

from xcit_export.export import ExportOptions, export_onnx, seeded_inputs, simplify_onnx  # noqa: E402
from xcit_export.models.weights import load_model  # noqa: E402
from xcit_export.models.zoo import get_spec  # noqa: E402


def openvino_profile(path: Path, x, threads: int, runs: int) -> dict[str, list[float]]:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True,
                                                          "INFERENCE_PRECISION_HINT": "f32",
                                                          "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    for _ in range(10):
        request.infer({0: x})
    agg: dict = collections.defaultdict(lambda: [0.0, 0])
    for _ in range(runs):
        request.infer({0: x})
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                agg[info.node_type][0] += info.real_time.total_seconds() * 1e3 / runs
                agg[info.node_type][1] += 1
    return {k: [v[0], v[1] // runs] for k, v in agg.items()}


def onnxruntime_profile(path: Path, x, threads: int, runs: int, folder: Path) -> dict[str, list[float]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(folder / f"ort_{path.parent.name}")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(10 + runs):
        sess.run(None, {name: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    agg: dict = collections.defaultdict(lambda: [0.0, 0])
    # The first 10 runs are warm-up: keep the last ``runs`` occurrences of every node.
    per_node: dict = collections.defaultdict(list)
    for e in kernels:
        per_node[e["name"]].append((e["args"].get("op_name", "?"), e["dur"] / 1e3))
    for samples in per_node.values():
        for op, ms in samples[-runs:]:
            agg[op][0] += ms / runs
        agg[samples[-1][0]][1] += 1
    return {k: [v[0], v[1]] for k, v in agg.items()}


def table(title: str, before: dict, after: dict) -> str:
    lines = [f"{title}", "", "| op type | reference form ms (count) | export form ms (count) |", "|---|---:|---:|"]
    for k in sorted(set(before) | set(after), key=lambda k: -max(before.get(k, [0])[0], after.get(k, [0])[0])):
        b, a = before.get(k), after.get(k)
        lines.append(f"| {k} | {f'{b[0]:.3f} ({b[1]})' if b else '-'} | {f'{a[0]:.3f} ({a[1]})' if a else '-'} |")
    tb, ta = sum(v[0] for v in before.values()), sum(v[0] for v in after.values())
    lines.append(f"| **sum** | **{tb:.2f}** | **{ta:.2f}** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="xcit_nano_12_p16_224")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args(argv)
    spec = get_spec(args.model)
    h, w = spec.preprocessing.input_size
    model = load_model(spec, "random", 0)
    x = seeded_inputs((3, h, w), 1, seed=2)
    folder = Path(tempfile.mkdtemp(prefix="op-profile-"))
    paths = {}
    for form in (False, True):
        sub = folder / ("export" if form else "reference")
        sub.mkdir()
        raw = export_onnx(model, (3, h, w), sub / "raw.onnx", ExportOptions(batch=1, export_form=form))
        paths[form] = simplify_onnx(raw, sub / "model.onnx")
    record = common.machine(args.threads)
    print(f"{spec.name}, batch 1, {args.threads} thread(s), {record['cpu']} flags {' '.join(record['cpu_flags'])}\n")
    print(table("OpenVINO CPU (FP32), performance counters by layer type, ms per inference",
                openvino_profile(paths[False], x, args.threads, args.runs),
                openvino_profile(paths[True], x, args.threads, args.runs)))
    print(table("onnxruntime CPU EP, profiler kernel time by op type, ms per inference",
                onnxruntime_profile(paths[False], x, args.threads, args.runs, folder),
                onnxruntime_profile(paths[True], x, args.threads, args.runs, folder)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
