"""Tests for xcit_export.data.sets: preprocessing against an independent reference, and the loaders'
handling of malformed and awkward inputs. Images are tiny and live in tmp_path."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xcit_export.data import demo as demo_data
from xcit_export.data.sets import (ImageSet, calibration_set, check_disjoint, demo_root, evaluation_set,
                              load_class_index, preprocess)
from xcit_export.errors import DataError
from xcit_export.models.zoo import Preprocessing

PP = Preprocessing(input_size=(32, 32), crop_pct=0.875, interpolation="bicubic")
MEAN = np.array(PP.mean, dtype=np.float32)
STD = np.array(PP.std, dtype=np.float32)


def reference_preprocess(img: Image.Image, size: int, crop_pct: float, interpolation: str,
                         mean, std) -> np.ndarray:
    """Straight from timm's eval transform, for square sizes: convert('RGB'), Resize(shorter side),
    CenterCrop, ToTensor, Normalize, spelled out with PIL and numpy."""
    img = img.convert("RGB")
    scale = int(math.floor(size / crop_pct))
    w, h = img.size
    if w < h:
        ow, oh = scale, int(scale * h / w)
    else:
        ow, oh = int(scale * w / h), scale
    filt = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[interpolation]
    if (ow, oh) != (w, h):
        img = img.resize((ow, oh), filt)
    a = np.array(img).astype(np.float32)
    top = int(round((oh - size) / 2.0))
    left = int(round((ow - size) / 2.0))
    a = a[top:top + size, left:left + size] / 255.0
    a = (a - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return a.transpose(2, 0, 1)


def random_rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def normalised(rgb) -> np.ndarray:
    """The expected (3,) output for a uniform image of colour ``rgb`` (0..255)."""
    return (np.asarray(rgb, dtype=np.float32) / np.float32(255.0) - MEAN) / STD


def write_folder(root, classes=("a", "b"), per_class=3, size=(20, 16), fmt="png", seed=0):
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            random_rgb(*size, seed=seed * 1000 + ci * 100 + j).save(root / name / f"{j}.{fmt}")
    return root


# ---------------------------------------------------------------------------------------------
# preprocess
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("wh", [(48, 40), (40, 64), (36, 36), (37, 91), (10, 7)])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("crop_pct", [1.0, 0.875])
def test_preprocess_matches_reference(wh, interpolation, crop_pct):
    img = random_rgb(*wh, seed=wh[0])
    pp = Preprocessing(input_size=(32, 32), crop_pct=crop_pct, interpolation=interpolation)
    got = preprocess(img, pp)
    want = reference_preprocess(img, 32, crop_pct, interpolation, pp.mean, pp.std)
    assert got.dtype == np.float32 and got.shape == (3, 32, 32)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_image_smaller_than_crop_is_upscaled():
    img = random_rgb(8, 6)
    got = preprocess(img, PP)
    assert got.shape == (3, 32, 32)
    np.testing.assert_allclose(got, reference_preprocess(img, 32, 0.875, "bicubic", PP.mean, PP.std),
                               atol=1e-6)


def test_non_square_input_size_resizes_both_sides():
    pp = Preprocessing(input_size=(16, 32), crop_pct=1.0, interpolation="bilinear")
    img = random_rgb(50, 50)
    got = preprocess(img, pp)
    want = np.asarray(img.resize((32, 16), Image.BILINEAR), dtype=np.float32) / 255.0
    np.testing.assert_allclose(got, ((want - np.array(pp.mean, dtype=np.float32))
                                     / np.array(pp.std, dtype=np.float32)).transpose(2, 0, 1), atol=1e-6)


def test_unknown_interpolation_is_a_data_error():
    with pytest.raises(DataError, match="interpolation 'cubic'"):
        preprocess(random_rgb(8, 8), Preprocessing(input_size=(16, 16), interpolation="cubic"))


@pytest.mark.parametrize("mode, value, rgb", [
    ("L", 100, (100, 100, 100)),
    ("RGBA", (10, 20, 30, 0), (10, 20, 30)),  # alpha dropped, not composited (timm semantics)
    ("LA", (77, 0), (77, 77, 77)),
    ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ("I;16", 257 * 100, (100, 100, 100)),  # 16-bit scaled to 8-bit, not clipped to white
    ("I;16", 65535, (255, 255, 255)),
    ("I", 257 * 200, (200, 200, 200)),
])
def test_modes_convert_to_rgb(mode, value, rgb):
    img = Image.new(mode, (40, 40), value)
    got = preprocess(img, PP)
    np.testing.assert_allclose(got, np.broadcast_to(normalised(rgb)[:, None, None], got.shape), atol=1e-6)


def test_palette_image_uses_its_palette():
    img = Image.new("P", (40, 40), 1)
    img.putpalette([0, 0, 0, 12, 34, 56] + [0] * 762)
    got = preprocess(img, PP)
    np.testing.assert_allclose(got[:, 5, 5], normalised((12, 34, 56)), atol=1e-6)


def test_sixteen_bit_png_roundtrip(tmp_path):
    arr = np.full((40, 40), 257 * 30, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        got = preprocess(img, PP)
    np.testing.assert_allclose(got[:, 0, 0], normalised((30, 30, 30)), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# sources and malformed inputs
# ---------------------------------------------------------------------------------------------

def test_image_folder_labels_follow_sorted_folders(tmp_path):
    write_folder(tmp_path / "d", classes=("zebra", "ant"), per_class=2)
    images = ImageSet.from_source(tmp_path / "d", PP, option="--eval")
    x, y = images.load()
    assert images.classes == ["ant", "zebra"]
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 1, 1]


def test_class_index_files(tmp_path):
    write_folder(tmp_path / "d", classes=("n02", "n01"), per_class=1)
    imagenet = tmp_path / "imagenet_class_index.json"
    imagenet.write_text(json.dumps({"0": ["n01", "tench"], "1": ["n02", "goldfish"], "2": ["n03", "shark"]}))
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("n03 shark\nn02 goldfish\nn01 tench\n")
    assert load_class_index(imagenet) == {"n01": 0, "n02": 1, "n03": 2}
    assert load_class_index(synsets) == {"n03": 0, "n02": 1, "n01": 2}
    _, y = ImageSet.from_source(tmp_path / "d", PP, "--eval", class_index=synsets).load()
    assert y.tolist() == [2, 1]  # n01 then n02, sorted folder order
    (tmp_path / "d" / "stray").mkdir()
    random_rgb(8, 8).save(tmp_path / "d" / "stray" / "x.png")
    with pytest.raises(DataError, match="stray.*class-index"):
        ImageSet.from_source(tmp_path / "d", PP, "--eval", class_index=synsets)


def test_flat_folder_and_text_list_are_unlabelled(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        random_rgb(12, 12, seed=i).save(flat / f"{i}.jpg")
    x, y = ImageSet.from_source(flat, PP).load()
    assert x.shape == (3, 3, 32, 32) and y is None
    listing = tmp_path / "list.txt"
    listing.write_text("# calibration images\nflat/0.jpg\n\nflat/2.jpg\n")
    x2, _ = ImageSet.from_source(listing, PP).load()
    np.testing.assert_array_equal(x2, x[[0, 2]])


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        ImageSet.from_source(tmp_path / "empty", PP)
    (tmp_path / "classes" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        ImageSet.from_source(tmp_path / "classes", PP)


def test_missing_source(tmp_path):
    with pytest.raises(DataError, match="--calib .*does not exist"):
        ImageSet.from_source(tmp_path / "nope", PP)


@pytest.fixture
def folder_with_bad_images(tmp_path):
    root = write_folder(tmp_path / "d", per_class=3, fmt="jpg")
    good = (root / "a" / "0.jpg").read_bytes()
    (root / "a" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "b" / "noise.png").write_bytes(np.random.default_rng(0).bytes(300))
    return root


def test_bad_image_fail_names_the_file(folder_with_bad_images):
    with pytest.raises(DataError, match=r"truncated\.jpg.*--on-bad-image skip"):
        ImageSet.from_source(folder_with_bad_images, PP, "--eval", on_bad_image="fail").load()


def test_bad_image_skip_counts(folder_with_bad_images):
    images = ImageSet.from_source(folder_with_bad_images, PP, "--eval", on_bad_image="skip")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        x, y = images.load()
    assert len(images.skipped) == 2 and x.shape[0] == 6 and len(y) == 6
    assert {p.split("/")[-1] for p, _ in images.skipped} == {"truncated.jpg", "noise.png"}


def test_bad_on_bad_image_value(tmp_path):
    with pytest.raises(DataError, match="--on-bad-image"):
        ImageSet.from_source(write_folder(tmp_path / "d"), PP, on_bad_image="ignore")


def test_class_folders_must_match_num_classes(tmp_path):
    root = write_folder(tmp_path / "d", classes=("a", "b", "c"), per_class=1)
    with pytest.raises(DataError, match="3 class folder.*10 classes"):
        evaluation_set(root, PP, num_classes=10)
    assert len(evaluation_set(root, PP, num_classes=3)) == 3


def test_eval_needs_labels(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    random_rgb(8, 8).save(flat / "a.png")
    with pytest.raises(DataError, match="no labels"):
        evaluation_set(flat, PP)


def test_calibration_set_smaller_than_asked(tmp_path):
    root = write_folder(tmp_path / "d", per_class=3)
    with pytest.raises(DataError, match=r"only 6 image.*--calib-size"):
        calibration_set(root, PP, size=10)


def test_small_calibration_size_warns(tmp_path):
    root = write_folder(tmp_path / "d", per_class=3)
    with pytest.warns(UserWarning, match="--calib-size 4 is small"):
        images = calibration_set(root, PP, size=4)
    assert len(images) == 4 and images.warnings


def test_overlap_detection_by_content(tmp_path):
    calib = write_folder(tmp_path / "calib", per_class=2, seed=1)
    evaluation = write_folder(tmp_path / "eval", per_class=2, seed=2)
    c, e = ImageSet.from_source(calib, PP), ImageSet.from_source(evaluation, PP, "--eval")
    check_disjoint(c, e)
    # Same bytes under another name still counts as overlap.
    shutil.copy(evaluation / "b" / "1.png", calib / "a" / "copy.png")
    with pytest.raises(DataError, match=r"1 calibration image.*copy\.png"):
        check_disjoint(ImageSet.from_source(calib, PP), e)


def test_npy_and_npz_sources(tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "xy.npz", x=x, y=np.arange(5))
    got, labels = ImageSet.from_source(tmp_path / "x.npy", PP).load()
    np.testing.assert_array_equal(got, x)
    assert labels is None
    got, labels = ImageSet.from_source(tmp_path / "xy.npz", PP, "--eval").load()
    assert labels.tolist() == [0, 1, 2, 3, 4]


def test_npy_shape_mismatch(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 224, 224), dtype=np.float32))
    with pytest.raises(DataError, match=r"\(2, 3, 224, 224\).*\(N, 3, 32, 32\)"):
        ImageSet.from_source(tmp_path / "x.npy", PP)
    np.save(tmp_path / "hwc.npy", np.zeros((2, 32, 32, 3), dtype=np.float32))
    with pytest.raises(DataError, match="NCHW"):
        ImageSet.from_source(tmp_path / "hwc.npy", PP)
    np.savez(tmp_path / "nox.npz", images=np.zeros((2, 3, 32, 32), dtype=np.float32))
    with pytest.raises(DataError, match="no 'x'"):
        ImageSet.from_source(tmp_path / "nox.npz", PP)


# ---------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------

def test_subset_selection_is_deterministic(tmp_path):
    root = write_folder(tmp_path / "d", classes=("a", "b", "c", "d"), per_class=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small calibration sizes warn
        a = calibration_set(root, PP, size=7, seed=3)
        b = calibration_set(root, PP, size=7, seed=3)
        c = calibration_set(root, PP, size=7, seed=4)
    assert a.indices == b.indices and a.indices != c.indices
    assert a.indices == sorted(a.indices) and len(set(a.indices)) == 7
    np.testing.assert_array_equal(a.load()[0], b.load()[0])


def test_content_hash(tmp_path):
    root = write_folder(tmp_path / "d", per_class=3)
    base = ImageSet.from_source(root, PP).select(4, seed=0).content_hash()
    assert ImageSet.from_source(root, PP).select(4, seed=0).content_hash() == base
    # Independent of where the set lives...
    shutil.copytree(root, tmp_path / "moved")
    assert ImageSet.from_source(tmp_path / "moved", PP).select(4, seed=0).content_hash() == base
    # ...but not of the selection, the preprocessing, or the bytes.
    assert ImageSet.from_source(root, PP).select(4, seed=1).content_hash() != base
    other_pp = Preprocessing(input_size=(32, 32), crop_pct=1.0)
    assert ImageSet.from_source(root, other_pp).select(4, seed=0).content_hash() != base
    images = ImageSet.from_source(root, PP)
    for path in images.paths:
        random_rgb(20, 16, seed=99).save(path)
    assert images.select(4, seed=0).content_hash() != base


def test_demo_rendering_is_deterministic(tmp_path):
    a = demo_data.render(3, np.random.default_rng([0, 1, 5]))
    b = demo_data.render(3, np.random.default_rng([0, 1, 5]))
    assert a.tobytes() == b.tobytes() and a.mode == "RGB"
    demo_data.make_demo_dataset(tmp_path / "x", seed=0, splits={"calib": 12})
    assert demo_data.split_is_complete(tmp_path / "x", "calib", 0, 12)
    images = ImageSet.from_source(tmp_path / "x" / "calib", PP, "--eval")
    assert images.classes == list(demo_data.CLASSES) and len(images) == 12


def test_demo_root_unknown_split(tmp_path):
    with pytest.raises(DataError, match="unknown demo split 'test'"):
        demo_root(0, tmp_path, splits=("test",))


def test_calibration_manifest_matches_the_generator():
    root = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())  # the repository
    manifest = json.loads((root / "calibration" / "demo.json").read_text())
    assert manifest["classes"] == list(demo_data.CLASSES)
    assert manifest["format_version"] == demo_data.FORMAT_VERSION
    assert {k: v["images"] for k, v in manifest["splits"].items()} == demo_data.SPLITS
