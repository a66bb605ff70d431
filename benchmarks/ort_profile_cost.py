"""onnxruntime's profiler cost a node: the model's own no-work nodes against a null graph.

    .venv/bin/xcit-export -m xcit_nano_12_p16_224 --weights demo --calib demo --eval demo --eval-size 300 \\
        --target auto --out out/auto
    .venv/bin/python benchmarks/ort_profile_cost.py out/auto [--threads 1 2] [--reps 4] [--runs 20]

For every onnxruntime target folder under the run's output (``onnxruntime-fp32``, ``onnxruntime-int8``)
and every thread count, ``--reps`` times: one profile pass (``targets.onnxruntime._profiled_runs``:
``--runs`` timed inferences of a plain session, then ``--runs`` profiled ones), and on that same
profile the two corrections ``targets.onnxruntime.profile`` can make: the profiler's cost a node
from the model's no-work nodes (``no_work_node_cost_ms``, what it uses) and from the 200-node null
graph (``profiler_node_cost_ms``, its fallback), each subtracted from every node. Prints the cost a
node and corrected total / unprofiled runs of the same pass for both: 1.0 means the breakdown adds
up to the inference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401  (puts the repository on sys.path)

from xcit_export.errors import XcitExportError  # noqa: E402
from xcit_export.export import seeded_inputs  # noqa: E402
from xcit_export.evaluate.profiling import subtract_node_cost  # noqa: E402
from xcit_export.targets.base import Artifact  # noqa: E402
from xcit_export.targets.onnxruntime import _profiled_runs, no_work_node_cost_ms, profiler_node_cost_ms  # noqa: E402

TARGETS = ("onnxruntime-fp32", "onnxruntime-int8")


def input_chw(path: Path) -> tuple[int, ...]:
    """The model input's (C, H, W), read from the ONNX graph (the batch dimension may be symbolic)."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[1:]
    return tuple(d.dim_value for d in dims)


def corrected_ratio(nodes, plain: list[float], cost_ms: float) -> float:
    """Median corrected total of the profiled runs / median of the unprofiled runs."""
    totals = [sum(subtract_node_cost([(op, ms) for _, op, ms in run], cost_ms).values()) for run in nodes]
    return float(np.median(totals) / np.median(plain))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="output folder of an xcit-export run with onnxruntime targets")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args(argv)
    try:
        artifacts = [Artifact.from_dir(args.out / name) for name in TARGETS]
    except XcitExportError as exc:
        print(f"error: {exc} (run the xcit-export command in this script's docstring first)", file=sys.stderr)
        return 2
    record = common.machine(max(args.threads))
    print(f"{record['cpu']}, flags {' '.join(record['cpu_flags'])}; {args.runs} profiled runs a pass\n")
    print("| model | threads | unprofiled (ms) | raw / unprofiled | null graph: us a node, ratio "
          "| no-work nodes: us a node (nodes), ratio |")
    print("|---|---:|---:|---:|---|---|")
    for threads in args.threads:
        for artifact in artifacts:
            x = seeded_inputs(input_chw(artifact.path), 1, seed=2)
            for _ in range(args.reps):
                with tempfile.TemporaryDirectory(prefix="ort-cost-") as tmp:
                    nodes, _, plain = _profiled_runs(str(artifact.path), x, threads, args.runs, tmp)
                    null = profiler_node_cost_ms(threads, tmp)
                own = no_work_node_cost_ms(nodes)
                own_cell = "-" if own is None else (f"{own[0] * 1e3:.2f} ({own[1]}), "
                                                    f"{corrected_ratio(nodes, plain, own[0]):.3f}")
                print(f"| {artifact.target} | {threads} | {np.median(plain):.2f} | "
                      f"{corrected_ratio(nodes, plain, 0.0):.2f} | {null * 1e3:.2f}, "
                      f"{corrected_ratio(nodes, plain, null):.3f} | {own_cell} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
