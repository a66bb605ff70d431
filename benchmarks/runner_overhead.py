"""Per-call overhead of our runners on a near-empty model: what our side of the call costs.

    .venv/bin/python benchmarks/runner_overhead.py [--threads 2] [--calls 3000]

The model reads a (1, 3, 224, 224) input and writes (1, 1000), like XCiT at 224, but computes
almost nothing, so the time per call is the runtime's own dispatch plus whatever the runner adds.
Compared, alternately, in one process:

* OpenVINO: ``OpenVINORunner.infer`` vs a bare ``InferRequest.infer()`` with the input tensor set
  once (the floor: what ``benchmark_app``'s C++ loop pays), and the dict-based
  ``request.infer({0: x}, share_inputs=True, share_outputs=True)`` call the runner used before;
* onnxruntime: ``OnnxRuntimeRunner.infer`` vs a bare ``session.run`` and an I/O-binding loop
  (bound input, pre-allocated output).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401

from xcit_export.targets.onnxruntime import OnnxRuntimeRunner  # noqa: E402
from xcit_export.targets.openvino import OpenVINORunner  # noqa: E402


def tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("ReduceMean", ["input", "axes"], ["r"], keepdims=0),
         helper.make_node("Tile", ["r", "reps"], ["t"]),
         helper.make_node("Slice", ["t", "st", "en"], ["logits"])], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
         helper.make_tensor("reps", TensorProto.INT64, [2], [1, 334]),
         helper.make_tensor("st", TensorProto.INT64, [2], [0, 0]),
         helper.make_tensor("en", TensorProto.INT64, [2], [1, 1000])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    import openvino as ov
    import onnxruntime as ort

    folder = Path(tempfile.mkdtemp(prefix="overhead-"))
    onnx_path = tiny_onnx(folder / "tiny.onnx")
    xml = folder / "tiny.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)

    ovr = OpenVINORunner(xml, threads=args.threads)
    bare_req = ovr.compiled.create_infer_request()
    bare_req.set_input_tensor(ov.Tensor(x, shared_memory=True))
    dict_req = ovr.compiled.create_infer_request()
    port = ovr.compiled.output(0)
    ortr = OnnxRuntimeRunner(onnx_path, threads=args.threads)
    sess = ortr.session
    binding = sess.io_binding()
    out = np.empty((1, 1000), np.float32)
    binding.bind_output("logits", "cpu", 0, np.float32, out.shape, out.ctypes.data)

    def io_binding():
        binding.bind_cpu_input("input", x)
        sess.run_with_iobinding(binding)
        return [out.copy()]

    calls = {
        "openvino: bare InferRequest.infer()": lambda: bare_req.infer(),
        "openvino: OpenVINORunner.infer (ours)": lambda: ovr.infer(x),
        "openvino: infer({0: x}, share_*) + copy (before)":
            lambda: [np.array(dict_req.infer({0: x}, share_inputs=True, share_outputs=True)[port], copy=True)],
        "onnxruntime: bare session.run": lambda: sess.run(None, {"input": x}),
        "onnxruntime: OnnxRuntimeRunner.infer (ours)": lambda: ortr.infer(x),
        "onnxruntime: I/O binding + copy": io_binding,
    }
    res: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(args.rounds):
        for name, f in calls.items():
            for _ in range(100):
                f()
            t = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                f()
                t.append(time.perf_counter() - t0)
            res[name].append(float(np.median(t)) * 1e6)
    print(f"{args.threads} threads, {args.rounds} alternating rounds x {args.calls} calls; median of round medians\n")
    print("| call | us per call |")
    print("|---|---:|")
    for name, v in res.items():
        print(f"| {name} | {np.median(v):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
