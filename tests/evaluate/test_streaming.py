"""The single run streams its evaluation set (issue 22, item 6): same figures as the whole set at
once, memory flat in the set's size, parallel decoding in order, memory-mapped tensor sources."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from xcit_export.data import sets as data
from xcit_export.data.sets import ImageSet, LazyRows, calibration_set
from xcit_export.errors import DataError
from xcit_export.evaluate.reference_cache import REFERENCE_BATCH
from xcit_export.evaluate.validate import compare_outputs, run_in_batches, torch_infer
from xcit_export.models.deploy import DeployModel
from xcit_export.models.weights import load_model
from xcit_export.models.zoo import Preprocessing, get_spec
from xcit_export.options import Inputs, RunOptions
from xcit_export.pipeline import run
from xcit_export.targets import Artifact, get_target

FAST = dict(warmup=0, iterations=1)
CLASSES = ("a", "b", "c", "d")
SIZE = (64, 64)
PP32 = Preprocessing(input_size=(32, 32))


def _photos(root, per_class: int, bad: int = 0, size=(40, 30)):
    """An ImageFolder of noisy gradients (``bad`` files per class are not images)."""
    rng = np.random.default_rng(per_class)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
            arr[..., c % 3] //= 2
            Image.fromarray(arr).save(root / name / f"{j:04d}.png")
        for j in range(bad):
            (root / name / f"bad{j}.png").write_bytes(b"not an image")
    return root


def _config(out, eval_data=None, targets=("onnxruntime-fp32",), **kw) -> tuple[RunOptions, Inputs]:
    base = dict(weights="random", num_classes=len(CLASSES), input_size=SIZE, out=out, **FAST, profile=False,
                threads=2)
    return RunOptions("xcit_nano_12_p16_224", targets, **{**base, **kw}), Inputs(eval_data=eval_data)


ACCURACY_KEYS = ("count", "finite", "max_abs_error", "mean_abs_error", "cosine_mean", "cosine_min",
                 "top1_agreement", "top5_agreement", "top1", "top5", "labelled_count", "reference_top1",
                 "reference_top5")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One set (with unreadable files, skipped) three ways into one output folder: streamed from
    the folder, given as arrays loaded at once, and as an .npz (memory-mapped)."""
    tmp = tmp_path_factory.mktemp("stream")
    folder = _photos(tmp / "set", per_class=10, bad=1)
    out = tmp / "out"
    spec = get_spec("xcit_nano_12_p16_224").with_overrides(len(CLASSES), SIZE)
    with pytest.warns(UserWarning, match="skipped 4 unreadable"):
        x, y = ImageSet.from_source(folder, spec.preprocessing, "--eval", on_bad_image="skip").load()
    np.savez(tmp / "set.npz", x=x, y=y)
    with pytest.warns(UserWarning, match="skipped 4 unreadable"):
        streamed = run(*_config(out, eval=str(folder), on_bad_image="skip"))
    arrays = run(*_config(out, eval_data=(x, y)))
    npz = run(*_config(out, eval=str(tmp / "set.npz")))
    return {"streamed": streamed, "arrays": arrays, "npz": npz, "x": x, "y": y, "out": out, "spec": spec}


def test_streamed_figures_equal_the_whole_set_at_once(runs):
    got = runs["streamed"]["targets"][0]
    assert got["status"] == "ok" and got["accuracy"]["count"] == 40 == got["accuracy"]["labelled_count"]
    assert runs["streamed"]["evaluation"]["evaluation_set"]["skipped"] == 4
    assert runs["streamed"]["evaluation"]["count"] == 40
    for other in ("arrays", "npz"):
        entry = runs[other]["targets"][0]
        assert {k: entry["accuracy"][k] for k in ACCURACY_KEYS} == {k: got["accuracy"][k] for k in ACCURACY_KEYS}
        assert runs[other]["reference"]["accuracy"] == runs["streamed"]["reference"]["accuracy"]


def test_streamed_figures_match_compare_outputs_on_whole_arrays(runs):
    """Today's method (every output kept, compared at the end) on the same inputs: counts equal
    exactly; means are exact sums now, so they agree to rounding."""
    spec, x, y = runs["spec"], runs["x"], runs["y"]
    model = DeployModel(load_model(spec, "random", 0), spec.preprocessing, "logits", "nchw", seed=0)
    reference = run_in_batches(torch_infer(model, 2), x, REFERENCE_BATCH)[0]  # the reference's own batch
    runner = get_target("onnxruntime-fp32").load(Artifact.from_dir(runs["out"] / "onnxruntime-fp32"), threads=2)
    try:
        output = run_in_batches(runner.infer, x, 16)[0]
    finally:
        runner.close()
    want = compare_outputs(output, reference, y)
    got = runs["streamed"]["targets"][0]["accuracy"]
    for key in ACCURACY_KEYS:
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-15), key
    for key in ("top1", "top5", "top1_agreement", "top5_agreement", "reference_top1", "count"):
        assert got[key] == want[key], key


def test_report_records_each_stage_throughput(runs):
    tp = runs["streamed"]["evaluation"]["throughput"]
    assert tp["decode"]["images"] == 40 and 1 <= tp["decode"]["workers"] <= data.MAX_DECODE_WORKERS
    assert tp["decode"]["images_per_s_per_worker"] > 0 and tp["decode"]["wait_seconds"] >= 0
    assert tp["reference"]["images"] == 40 and tp["reference"]["images_per_s"] > 0
    assert tp["targets"]["onnxruntime-fp32"]["images"] == 40
    assert tp["pass"]["images_per_s"] > 0
    assert runs["npz"]["evaluation"]["throughput"]["decode"]["workers"] == 0  # tensors: no decoding


def test_the_evaluation_set_is_never_loaded_whole(runs, monkeypatch, tmp_path):
    """Only calibration sets are read at once; an evaluation set is streamed."""
    real_load = ImageSet.load

    def load(self):
        assert self.option != "--eval", "the evaluation set was loaded whole"
        return real_load(self)

    monkeypatch.setattr(ImageSet, "load", load)
    report = run(*_config(runs["out"], eval=str(runs["out"].parent / "set.npz"), eval_size=12))
    assert report["targets"][0]["status"] == "ok" and report["evaluation"]["count"] == 12


def _peak_during_run(config) -> tuple[int, dict]:
    tracemalloc.start()
    try:
        report = run(*config)
        return tracemalloc.get_traced_memory()[1], report
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_the_set(runs):
    """Artifacts reused, a run over 2.5x the images peaks no higher (numpy reports its buffers to
    tracemalloc). Loaded at once, the 192 more images alone would be 9 MiB of inputs. One thread
    (one decoding worker) keeps the peak's timing noise small (~0.2 MiB); both sets are larger
    than the decoding window (3 chunks of 32, the PyTorch reference's batch: evaluate/reference_cache.py),
    which is the same for both; the reference's outputs go to its disk cache as they come."""
    folder = runs["out"].parent / "big"
    _photos(folder, per_class=80)
    small, r1 = _peak_during_run(_config(runs["out"], eval=str(folder), eval_size=128, threads=1))
    big, r2 = _peak_during_run(_config(runs["out"], eval=str(folder), eval_size=320, threads=1))
    assert r1["targets"][0]["reused"] and r2["targets"][0]["accuracy"]["count"] == 320
    per_image = 3 * SIZE[0] * SIZE[1] * 4
    print(f"peak {small / 2**20:.2f} MiB at 128 images, {big / 2**20:.2f} MiB at 320")
    assert big - small < 192 * per_image / 4, (small, big)


# ---------------------------------------------------------------------------------------------
# decoding: parallel, in order, bounded
# ---------------------------------------------------------------------------------------------

def test_parallel_stream_is_in_order_and_skips_like_load(tmp_path):
    folder = _photos(tmp_path / "d", per_class=7, bad=1)
    images = ImageSet.from_source(folder, PP32, "--eval", on_bad_image="skip")
    sequential = [images._read(i)[0] for i in range(len(images))]
    want = np.stack([a for a in sequential if a is not None])
    with pytest.warns(UserWarning, match="skipped 4"):
        batches = list(images.stream(5, workers=4, prefetch=1))
    # index-aligned batches (positions 0-4, 5-9, ...) less their unreadable images: a shard starting on a
    # batch boundary sees the same batches as a pass over the whole set
    assert [len(b[0]) for b in batches] == [sum(a is not None for a in sequential[i:i + 5]) for i in range(0, len(sequential), 5)]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), want)
    assert np.concatenate([b[1] for b in batches]).tolist() == [c for c in range(4) for _ in range(7)]
    assert [s[0].rsplit("/", 2)[-2] for s in images.skipped] == list(CLASSES)  # in order


def test_parallel_stream_fails_on_the_first_bad_image_in_order(tmp_path):
    folder = _photos(tmp_path / "d", per_class=3)
    (folder / "b" / "0000.png").write_bytes(b"broken")
    (folder / "c" / "0000.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"b/0000\.png.*--on-bad-image skip"):
        list(ImageSet.from_source(folder, PP32, "--eval").stream(2, workers=4))


def test_decoding_runs_ahead_by_a_bounded_number_of_batches(tmp_path, monkeypatch):
    folder = _photos(tmp_path / "d", per_class=20)
    images = ImageSet.from_source(folder, PP32, "--eval")
    calls, threads = [], set()
    real = ImageSet._read

    def counted(self, i):
        calls.append(i)
        threads.add(threading.current_thread().name)
        return real(self, i)

    monkeypatch.setattr(ImageSet, "_read", counted)
    stream = images.stream(4, workers=3, prefetch=2)
    next(stream)
    assert len(calls) <= 4 * (2 + 1) + 4  # the window, refilled once per image taken
    stream.close()
    assert all(name.startswith("xcit-decode") for name in threads)


def test_head_gives_the_first_images(tmp_path):
    folder = _photos(tmp_path / "d", per_class=20)
    images = ImageSet.from_source(folder, PP32, "--eval")
    x = images.head(3)
    assert x.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(x, images.load()[0][:3])


# ---------------------------------------------------------------------------------------------
# tensor sources: memory-mapped, selections read only their rows
# ---------------------------------------------------------------------------------------------

def test_npy_and_uncompressed_npz_are_memory_mapped(tmp_path):
    x = np.random.default_rng(0).standard_normal((120, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "xy.npz", x=x, y=np.arange(120) % 4)
    for name in ("x.npy", "xy.npz"):
        images = calibration_set(tmp_path / name, PP32, size=100, seed=1)
        assert isinstance(images.array, np.memmap)
        got, _ = images.load()
        np.testing.assert_array_equal(got, x[images.indices])
        assert not isinstance(got, np.memmap) and got.flags.writeable


def test_compressed_npz_is_read_whole_and_says_so(tmp_path):
    x = np.zeros((4, 3, 32, 32), np.float32)
    np.savez_compressed(tmp_path / "c.npz", x=x, y=np.arange(4))
    with pytest.warns(UserWarning, match="'x' is compressed.*np.savez"):
        images = ImageSet.from_source(tmp_path / "c.npz", PP32, "--eval")
    assert images.warnings and images.load()[1].tolist() == [0, 1, 2, 3]


def test_lazy_rows_decode_only_the_rows_asked_for(tmp_path, monkeypatch):
    folder = _photos(tmp_path / "d", per_class=5)
    images = ImageSet.from_source(folder, PP32, "--eval").select(12, seed=2, size_option="--eval-size")
    whole, _ = images.load()
    calls = []
    real = ImageSet._read
    monkeypatch.setattr(ImageSet, "_read", lambda self, i: (calls.append(i), real(self, i))[1])
    rows = LazyRows(images, transform=lambda a: a * 2)
    np.testing.assert_array_equal(rows[:3], whole[:3] * 2)
    np.testing.assert_array_equal(rows[[5, 1]], whole[[5, 1]] * 2)
    assert len(calls) == 5 and len(rows) == 12
    np.testing.assert_array_equal(np.asarray(rows), whole * 2)
    (tmp_path / "d" / "a" / "0000.png").write_bytes(b"gone bad")
    bad = LazyRows(ImageSet.from_source(folder, PP32, "--eval", on_bad_image="skip"))
    with pytest.raises(DataError, match="0000.png.*a build needs it"):
        bad[:2]


def test_on_bad_image_skip_reaches_a_builds_subset(tmp_path):
    """--on-bad-image skip holds for the builds that read a few evaluation images (TensorRT's golden
    inputs, search_images): an unreadable one is replaced by the next readable one, label and all."""
    folder = _photos(tmp_path / "d", per_class=3)
    skip = ImageSet.from_source(folder, PP32, "--eval", on_bad_image="skip")
    order = skip._order()
    labels = [skip.labels[i] for i in order]
    bad = next(p for p, i in enumerate(order) if skip.paths[i].name == "0001.png")
    (skip.paths[order[bad]]).write_bytes(b"gone bad")
    with pytest.warns(UserWarning, match=r"skipped unreadable image .*0001\.png.*took another"):
        x, y, used = LazyRows(skip).take([0, bad, 5], labels)
    assert len(x) == 3 and bad not in used and used[0] == 0 and used[2] == 5
    assert y.tolist() == [labels[p] for p in used]
    fail = LazyRows(ImageSet.from_source(folder, PP32, "--eval", on_bad_image="fail"))
    with pytest.raises(DataError, match=r"0001\.png.*--on-bad-image skip"):
        fail.take([bad], labels)
    arrays = np.arange(24, dtype=np.float32).reshape(6, 4)
    got, got_y = data.take_rows(arrays, np.arange(6), [1, 4])
    assert got.tolist() == arrays[[1, 4]].tolist() and got_y.tolist() == [1, 4]
    # end to end: golden inputs for every readable image of a folder with unreadable ones
    (folder / "b" / "bad.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning):
        report = run(*_config(tmp_path / "out", eval=str(folder), on_bad_image="skip", targets=["tensorrt-fp32"],
                             target_options={"tensorrt-fp32": {"engine": "skip", "golden_count": 11}}))
    (entry,) = report["targets"]
    assert entry["status"] == "built" and entry["passed"] is True, entry.get("error")
    assert len(np.load(tmp_path / "out" / "tensorrt-fp32" / "golden.npz")["x"]) == 11  # 13 files, 2 unreadable
