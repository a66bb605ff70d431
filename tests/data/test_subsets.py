"""Representative subsets (issue 22, item 5): every "N of these images" is a seeded draw, stratified by
class where labels exist, never the first N of a class-ordered set; the draw is recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xcit_export.data.sets import representative_subset
from xcit_export.errors import DataError

# An ImageFolder-like order: class 0's images first, then class 1's... with unequal class sizes.
SIZES = [40, 40, 20, 20, 40, 40, 40, 40, 40, 80]
LABELS = np.repeat(np.arange(10), SIZES)


def test_a_subset_of_a_class_ordered_set_covers_every_class_in_proportion():
    idx, record = representative_subset(len(LABELS), 40, LABELS, seed=3)
    assert len(idx) == 40 and len(set(idx.tolist())) == 40 and list(idx) == sorted(idx)
    counts = np.bincount(LABELS[idx], minlength=10)
    expected = 40 * np.array(SIZES) / len(LABELS)
    assert np.all(np.abs(counts - expected) < 1), counts  # each class within one image of its share
    assert record["method"] == "stratified" and record["seed"] == 3 and record["of"] == len(LABELS)
    assert record["classes"] == {"covered": 10, "of": 10}
    assert record["per_class"] == {str(c): int(n) for c, n in enumerate(counts)}
    # the first 40 would have been class 0 only
    assert set(LABELS[:40]) == {0}


def test_the_draw_is_reproducible_for_one_seed_and_differs_across_seeds():
    a, ra = representative_subset(len(LABELS), 40, LABELS, seed=3)
    b, rb = representative_subset(len(LABELS), 40, list(LABELS), seed=3)
    c, rc = representative_subset(len(LABELS), 40, LABELS, seed=4)
    assert np.array_equal(a, b) and ra == rb
    assert not np.array_equal(a, c) and ra["indices_sha256"] != rc["indices_sha256"]


def test_every_class_is_kept_when_the_size_allows_and_small_or_unlabelled_sets():
    labels = np.repeat(np.arange(5), [1000, 3, 3, 3, 3])
    idx, record = representative_subset(len(labels), 10, labels, seed=0)
    assert set(labels[idx]) == set(range(5)) and record["per_class"]["0"] == 6
    idx, record = representative_subset(1000, 16, None, seed=1)
    assert record["method"] == "random" and len(set(idx.tolist())) == 16 and idx.max() > 100
    idx, record = representative_subset(12, None, None)
    assert record["method"] == "all" and list(idx) == list(range(12))
    idx, record = representative_subset(12, 50, None)
    assert record["method"] == "all" and len(idx) == 12
    with pytest.raises(DataError):
        representative_subset(12, 0)


def _tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _class_ordered(n_per_class=20, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_per_class * classes, 3, 4, 4)).astype(np.float32)
    x += np.repeat(np.arange(classes), n_per_class)[:, None, None, None]  # a class shows in the values
    return x, np.repeat(np.arange(classes), n_per_class)


def test_tensorrt_golden_inputs_are_a_stratified_draw_recorded_in_onnx_check(tmp_path):
    from xcit_export.targets.base import BuildContext
    from xcit_export.targets.tensorrt.precision_onnx import GOLDEN_FILE, write_golden

    onnx_path = _tiny_onnx(tmp_path / "model.onnx")
    x, labels = _class_ordered()
    ctx = BuildContext(spec=None, onnx_path=onnx_path, out_dir=tmp_path, batch=None, input_shape=(3, 4, 4),
                       evaluation=(x, labels), seed=7)
    check = write_golden(ctx, onnx_path, 10)
    golden = np.load(tmp_path / GOLDEN_FILE)
    assert sorted(golden["labels"].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    idx, record = representative_subset(len(x), 10, labels, 7)
    assert np.array_equal(golden["x"], x[idx]) and check["selection"] == record


def test_openvino_subset_size_is_a_stratified_draw_recorded_in_the_settings(tmp_path):
    pytest.importorskip("nncf")
    from xcit_export.targets.base import BuildContext
    from xcit_export.targets import get_target
    from xcit_export.targets.openvino import _int8_settings

    x, labels = _class_ordered(n_per_class=100, classes=5)
    ctx = BuildContext(spec=None, onnx_path=tmp_path / "unused.onnx", out_dir=tmp_path, batch=None,
                       input_shape=(3, 4, 4), calibration=x, calibration_labels=labels, seed=2,
                       options=get_target("openvino-int8").parse_options({"subset_size": "300"}))
    settings = _int8_settings(ctx)
    assert settings["selection"]["per_class"] == {str(c): 60 for c in range(5)}
    idx, _ = representative_subset(len(x), 300, labels, 2)
    assert np.array_equal(settings["calib"], x[idx])


def test_fp16_reference_images_are_a_stratified_draw_recorded_in_the_summary(tmp_path):
    pytest.importorskip("modelopt")
    from xcit_export.quantize.precision import FP16_MAX_REFERENCE_IMAGES, to_fp16

    onnx_path = _tiny_onnx(tmp_path / "model.onnx")
    x, labels = _class_ordered(n_per_class=20, classes=4)
    summary = to_fp16(onnx_path, tmp_path / "model.fp16.onnx", x, reference_labels=labels, reference_seed=5)
    selection = summary["reference_selection"]
    assert summary["reference_images"] == FP16_MAX_REFERENCE_IMAGES == selection["size"]
    assert selection["method"] == "stratified" and selection["per_class"] == {str(c): 4 for c in range(4)}
