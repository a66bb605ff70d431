"""The same template for every target: each output kind and input convention goes through every
registered target (at a small input) and agrees with PyTorch. Adding a target adds it here."""

from __future__ import annotations

import numpy as np
import pytest

from xcit_export.options import Inputs, RunOptions
from xcit_export.pipeline import run
from xcit_export.targets import all_targets

# TensorRT (proper) targets run on the host exactly like the TensorRT-RTX ones (the precision-ready
# ONNX on onnxruntime); one family is enough here, the RTX engine builds are in test_tensorrt_rtx.
TARGETS = sorted(n for n, t in all_targets().items() if not n.startswith("tensorrt-rtx") and not t.missing_requirements())
# Cosine with PyTorch per output, by precision: INT8 on random weights is the loosest.
MIN_COSINE = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.95}


def test_every_registered_target_is_in_this_template():
    assert {"onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-fp16", "openvino-int8",
            "tensorrt-fp32", "tensorrt-fp16", "tensorrt-int8"} <= set(TARGETS)


@pytest.mark.parametrize("output, fmt", [("features", "nhwc-uint8"), ("embedding", "nhwc-pm1")])
def test_every_target_every_output(tmp_path, output, fmt):
    calib = np.random.default_rng(0).standard_normal((32, 3, 64, 64)).astype(np.float32).clip(-2, 2)
    report = run(RunOptions("xcit_nano_12_p16_224", TARGETS, out=tmp_path, input_size=(64, 64), batch=1,
                            eval_count=4, warmup=1, iterations=2, output=output, input_format=fmt),
                 Inputs(calib_data=calib))
    names = report["export"]["output_names"]
    for entry in report["targets"]:
        # TensorRT on a host: the precision-ready ONNX ran on a stand-in, no engine: 'built', judged all the same
        want = "built" if entry["target"].startswith("tensorrt") else "ok"
        assert entry["status"] == want and entry["passed"] is True, f"{entry['target']}: {entry.get('error')}"
        per_output = entry.get("outputs", {names[0]: entry["accuracy"]})
        assert list(per_output) == names
        for name, metrics in per_output.items():
            assert metrics["cosine_min"] >= MIN_COSINE[entry["precision"]], (entry["target"], name, metrics)
