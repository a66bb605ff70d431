"""Image sets for calibration and accuracy checks: one preprocessing function and the loaders.

:func:`preprocess` is the only place an image becomes a model input; the training fixture, the
calibration and the evaluation all go through it, so they cannot drift apart.

Sources understood by :class:`ImageSet` (see :meth:`ImageSet.from_source`):

* an ImageFolder tree (``root/<class>/<image>``): labelled; labels are the sorted folder names'
  positions, or come from a class-index file (folder name -> index; ImageNet synset JSON/txt);
* a flat folder of images, or a text file listing image paths one per line: unlabelled (enough
  for calibration);
* ``.npy`` of already-preprocessed ``(N, 3, H, W)`` tensors, or ``.npz`` holding ``x`` and an
  optional ``y`` (labels);
* ``demo``: the bundled procedurally rendered set (:mod:`xcit_export.data.demo`), generated into a
  cache folder on first use.

Every problem with the data is a :class:`~xcit_export.errors.DataError` whose message names the
file or option at fault and the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
import zipfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..models.zoo import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEFAULT_CALIB_SIZE = 300
MIN_RECOMMENDED_CALIB = 100  # below this, activation ranges are noisy: warn, do not fail
ON_BAD_IMAGE = ("skip", "fail")
MAX_DECODE_WORKERS = 8  # decoding threads by default: min(this, CPU cores)
DEFAULT_PREFETCH = 2  # batches decoded ahead of the one being consumed
# What PIL raises for a missing, truncated, corrupt or absurdly large image file.
_UNREADABLE = (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError)

_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
            "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------

def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, with timm's ``Image.convert('RGB')`` semantics where they hold.

    * ``L``, ``P`` (palette), ``CMYK``, ``YCbCr``, ``RGB``: ``convert('RGB')`` as timm's loader does.
    * ``RGBA``, ``LA``, ``PA`` and palettes with transparency: the alpha channel is dropped, not
      composited (again ``convert('RGB')``): the colour stored under a transparent pixel is what
      the model sees, exactly as in timm's training and evaluation.
    * 16-bit grayscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``) and 32-bit ``I`` (what Pillow
      gives for 16-bit PNG/TIFF): scaled from 0..65535 to 0..255 (value / 257, rounded).
      ``convert('RGB')`` would clip every value above 255 to white instead.
    * ``F`` (32-bit float): values taken as already in 0..255 and clipped there (PIL's rule).
    """
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(image, dtype=np.float64)
        arr = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "F":
        arr = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


def resize_size(pp: Preprocessing) -> int | tuple[int, int]:
    """timm's eval scale size: ``floor(size / crop_pct)``.

    An ``int`` means "resize the shorter side to this, keeping the aspect ratio" (square input);
    a ``(h, w)`` pair (non-square input) means "resize to exactly this", as timm does.
    """
    h, w = (math.floor(s / pp.crop_pct) for s in pp.input_size)
    return h if h == w else (h, w)


def preprocess(image: Image.Image, pp: Preprocessing) -> np.ndarray:
    """One image -> the model's input ``(3, H, W)`` float32 (timm's eval transform).

    Steps: :func:`to_rgb`; resize (shorter side to ``floor(size / crop_pct)``, aspect kept, with
    the filter named by ``pp.interpolation``; for a non-square input size both sides are set);
    centre crop to ``pp.input_size``; scale to 0..1; subtract ``mean`` and divide by ``std``.

    An image smaller than the crop is upscaled by that same resize, so it is never padded. EXIF
    orientation is not applied (timm does not either).
    """
    try:
        resample = _FILTERS[pp.interpolation]
    except KeyError:
        raise DataError(f"unknown interpolation '{pp.interpolation}' in the preprocessing metadata; "
                        f"use one of {', '.join(_FILTERS)}") from None
    img = to_rgb(image)
    size = resize_size(pp)
    w, h = img.size
    if isinstance(size, int):
        # torchvision's Resize(int) rule: the shorter side becomes `size`, the longer is truncated.
        new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    else:
        new_h, new_w = size
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample=resample)
    crop_h, crop_w = pp.input_size
    # torchvision CenterCrop: offsets rounded half to even, as Python's round() does.
    top, left = int(round((new_h - crop_h) / 2.0)), int(round((new_w - crop_w) / 2.0))
    img = img.crop((left, top, left + crop_w, top + crop_h))
    arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    arr = (arr - np.asarray(pp.mean, dtype=np.float32)) / np.asarray(pp.std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


# --------------------------------------------------------------------------------------------
# The bundled demo set
# --------------------------------------------------------------------------------------------

def demo_root(seed: int = 0, root: str | os.PathLike | None = None,
              splits: Sequence[str] = ("train", "calib", "eval"), sizes: dict[str, int] | None = None) -> Path:
    """The folder holding the rendered demo set for ``seed``, rendering missing ``splits`` first.

    Default location: ``$XCIT_EXPORT_CACHE/demo-data/<seed>`` (``~/.cache/xcit-export/...`` when
    the variable is unset). Rendering is deterministic, so the cache is only a speed-up; a split
    without its manifest (an interrupted render) or from another renderer version is rendered
    again. Only the splits asked for are rendered, so tests needing ``eval`` skip ``train``.
    ``sizes`` overrides split sizes (``{"calib": 20}``; small sets for tests). Rendering happens
    under the set's render lock (:func:`xcit_export.data.demo.render_lock`), so two runs rendering
    at once never replace a split the other has just finished and is reading.
    """
    from . import demo as demo_data

    if root is None:
        base = Path(os.environ.get("XCIT_EXPORT_CACHE", Path.home() / ".cache" / "xcit-export"))
        root = base / "demo-data" / str(seed)
    root = Path(root)
    counts = {**demo_data.SPLITS, **(sizes or {})}
    for split in splits:
        if split not in demo_data.SPLITS:
            raise DataError(f"unknown demo split '{split}'; use one of {', '.join(demo_data.SPLITS)} "
                            f"(e.g. demo:eval)")
        if demo_data.split_is_complete(root, split, seed, counts[split]):
            continue
        with demo_data.render_lock(root):
            # Another run may have rendered it while this one waited for the lock.
            if not demo_data.split_is_complete(root, split, seed, counts[split]):
                demo_data.make_split(root, split, counts[split], seed)
    return root


# --------------------------------------------------------------------------------------------
# Finding images
# --------------------------------------------------------------------------------------------

def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_image_folder(root: str | os.PathLike, class_index: dict[str, int] | None = None,
                      option: str = "--eval") -> tuple[list[Path], list[int], list[str]]:
    """An ImageFolder tree -> (image paths, labels, class names by label).

    Labels are the positions of the sorted class-folder names, or ``class_index[folder]`` when a
    class-index mapping is given (then every folder must be in it). Images are sorted by path
    within each class, so the order never depends on the file system.
    """
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{option} '{root}' has no class sub-folders; an ImageFolder tree is "
                        f"'{root}/<class>/<image>.jpg' (or pass a flat folder for unlabelled data)")
    if class_index is None:
        names = [p.name for p in folders]
        mapping = {name: i for i, name in enumerate(names)}
    else:
        unknown = [p.name for p in folders if p.name not in class_index]
        if unknown:
            raise DataError(f"{option} '{root}' has class folder(s) {', '.join(unknown[:5])} that the "
                            f"class-index file does not list; fix the folder names or the --class-index file")
        mapping = dict(class_index)
        names = [""] * (max(mapping.values()) + 1)
        for name, idx in mapping.items():
            names[idx] = name
    paths, labels = [], []
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if _is_image(p))
        paths += files
        labels += [mapping[folder.name]] * len(files)
    if not paths:
        raise DataError(f"{option} '{root}' has class folders but no images "
                        f"(looked for {', '.join(IMAGE_SUFFIXES)}); add images or point at another folder")
    return paths, labels, names


def load_class_index(path: str | os.PathLike) -> dict[str, int]:
    """A class-index file -> ``{folder name: label}``.

    Accepted layouts:

    * JSON object ``{"n01440764": 0, ...}`` (folder -> index);
    * JSON object ``{"0": ["n01440764", "tench"], ...}`` (index -> [folder, human name], the
      ImageNet ``imagenet_class_index.json`` layout);
    * JSON list ``["n01440764", ...]`` (position = index);
    * text, one class per line, position = index; only the first word of each line counts, so
      ImageNet's ``synsets.txt`` / ``LOC_synset_mapping.txt`` (``n01440764 tench, ...``) work as is.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"--class-index '{path}' cannot be read ({exc}); pass a JSON or text file "
                        f"mapping class folder names to indices") from None
    bad = DataError(f"--class-index '{path}' is not a class index: expected a JSON object "
                    f"{{folder: index}} or {{index: [folder, name]}}, a JSON list of folder names, or "
                    f"a text file with one folder name per line")
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except ValueError:
            raise bad from None
        if isinstance(obj, list) and all(isinstance(v, str) for v in obj):
            mapping = {name: i for i, name in enumerate(obj)}
        elif isinstance(obj, dict) and all(isinstance(v, int) for v in obj.values()):
            mapping = {str(k): int(v) for k, v in obj.items()}
        elif isinstance(obj, dict) and all(isinstance(v, list) and v and isinstance(v[0], str)
                                           and str(k).isdigit() for k, v in obj.items()):
            mapping = {v[0]: int(k) for k, v in obj.items()}
        else:
            raise bad
    else:
        names = [line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")]
        mapping = {name: i for i, name in enumerate(names)}
    if not mapping:
        raise bad
    if len(set(mapping.values())) != len(mapping) or min(mapping.values()) < 0:
        raise DataError(f"--class-index '{path}' gives two classes the same index, or a negative one; "
                        f"each folder needs its own index 0..N-1")
    return mapping


# --------------------------------------------------------------------------------------------
# Image sets
# --------------------------------------------------------------------------------------------

def default_decode_workers() -> int:
    """Decoding threads when none are asked for: one per core, at most ``MAX_DECODE_WORKERS``."""
    return max(1, min(MAX_DECODE_WORKERS, os.cpu_count() or 1))


@dataclass
class DecodeStats:
    """What a pass of :meth:`ImageSet.stream` spent decoding.

    ``busy_seconds`` adds up every image's decode-and-preprocess time over all workers;
    ``wait_seconds`` is how long the consumer sat waiting for a decoded image: near zero means
    decoding kept ahead of inference (it is not the bottleneck).
    """

    images: int = 0
    workers: int = 0
    busy_seconds: float = 0.0
    wait_seconds: float = 0.0

    def to_dict(self) -> dict:
        per_worker = self.images / self.busy_seconds if self.busy_seconds > 0 else None
        return {"images": self.images, "workers": self.workers, "busy_seconds": round(self.busy_seconds, 3),
                "wait_seconds": round(self.wait_seconds, 3),
                "images_per_s_per_worker": None if per_worker is None else round(per_worker, 1)}


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class ImageSet:
    """A selection of images (or preprocessed tensors) plus the preprocessing that feeds a model.

    Build one with :meth:`from_source` (or :func:`calibration_set` / :func:`evaluation_set` /
    :func:`demo_dataset`), narrow it with :meth:`select`, then :meth:`load` it. Files are read
    only by :meth:`load`, :meth:`content_hash` and :meth:`item_hashes`.
    """

    source: str
    pp: Preprocessing
    option: str = "--calib"  # the CLI option that named the source, for error messages
    paths: list[Path] | None = None  # image sources
    array: np.ndarray | None = None  # tensor sources: (N, 3, H, W), already preprocessed
    labels: list[int] | None = None
    classes: list[str] | None = None
    on_bad_image: str = "fail"
    indices: list[int] | None = None  # the selection, None = everything
    seed: int | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) from the last load
    warnings: list[str] = field(default_factory=list)
    _root: Path | None = None  # paths are hashed relative to this, so moving the set keeps its hash
    _file_hashes: dict[int, str] = field(default_factory=dict, repr=False)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_source(cls, source: str | os.PathLike, pp: Preprocessing, option: str = "--calib",
                    class_index: str | os.PathLike | None = None, on_bad_image: str = "fail") -> "ImageSet":
        """Open ``source``: ``demo[:split]``, an ImageFolder tree, a flat folder, a ``.txt`` list
        of image paths, or a ``.npy`` / ``.npz`` of preprocessed tensors."""
        if on_bad_image not in ON_BAD_IMAGE:
            raise DataError(f"--on-bad-image must be one of {', '.join(ON_BAD_IMAGE)}, got '{on_bad_image}'")
        text = str(source)
        common = dict(pp=pp, option=option, on_bad_image=on_bad_image)
        if text == "demo" or text.startswith("demo:"):
            split = text.partition(":")[2] or ("calib" if option == "--calib" else "eval")
            return demo_dataset(split, pp=pp, option=option, on_bad_image=on_bad_image)
        path = Path(source)
        if not path.exists():
            raise DataError(f"{option} '{path}' does not exist; pass an image folder, a .txt list of "
                            f"images, a .npy/.npz of tensors, or 'demo'")
        index = load_class_index(class_index) if class_index is not None else None
        if path.is_dir():
            subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
            top_images = sorted(p for p in path.iterdir() if _is_image(p))
            if subdirs and top_images:
                raise DataError(f"{option} '{path}' mixes images ({top_images[0].name}, ...) with "
                                f"sub-folders ({subdirs[0].name}, ...); use either class sub-folders "
                                f"(labelled) or a flat folder of images (unlabelled)")
            if subdirs:
                paths, labels, classes = list_image_folder(path, index, option)
                return cls(source=text, paths=paths, labels=labels, classes=classes, _root=path, **common)
            if not top_images:
                raise DataError(f"{option} '{path}' is empty: it holds no images "
                                f"({', '.join(IMAGE_SUFFIXES)}) and no class sub-folders")
            return cls(source=text, paths=top_images, _root=path, **common)
        suffix = path.suffix.lower()
        if suffix in (".npy", ".npz"):
            x, y, note = _read_array(path, option)
            _check_array(x, y, pp, path, option)
            images = cls(source=text, array=x, labels=None if y is None else [int(v) for v in y], **common)
            if note:
                images._warn(note)
            return images
        if suffix == ".txt":
            return cls(source=text, paths=_read_list(path, option), _root=path.parent, **common)
        raise DataError(f"{option} '{path}' is a file of an unknown kind ('{suffix}'); pass a folder, "
                        f"a .txt list of image paths, or a .npy/.npz of preprocessed tensors")

    # -- selection ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._order())

    def _total(self) -> int:
        return len(self.array) if self.array is not None else len(self.paths or [])

    def _order(self) -> list[int]:
        return list(range(self._total())) if self.indices is None else self.indices

    def select(self, size: int | None, seed: int = 0, size_option: str = "--calib-size") -> "ImageSet":
        """A deterministic random subset of ``size`` items (``None``: all), the same for the same
        seed and set on every machine. Items keep their original order."""
        total = self._total()
        if size is None:
            return self
        if size <= 0:
            raise DataError(f"{size_option} must be a positive number of images, got {size}")
        if size > total:
            raise DataError(f"{self.option} '{self.source}' has only {total} image(s) but {size_option} "
                            f"asks for {size}; pass {size_option} {total} or fewer, or add images")
        chosen = sorted(np.random.default_rng(seed).permutation(total)[:size].tolist())
        return ImageSet(source=self.source, pp=self.pp, option=self.option, paths=self.paths,
                        array=self.array, labels=self.labels, classes=self.classes,
                        on_bad_image=self.on_bad_image, indices=chosen, seed=seed, _root=self._root,
                        _file_hashes=self._file_hashes)

    # -- checks -------------------------------------------------------------------------------

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def check_num_classes(self, num_classes: int) -> None:
        """Raise unless the labels fit a ``num_classes``-way classifier."""
        if not self.labelled:
            return
        if self.classes is not None and self.paths is not None and len(self.classes) != num_classes:
            raise DataError(
                f"{self.option} '{self.source}' has {len(self.classes)} class folder(s) but the model has "
                f"{num_classes} classes; labels come from the sorted folder names, so they only line up "
                f"when every class has a folder. Use a folder per class, pass --class-index FILE "
                f"mapping folder names to the model's indices, or set --num-classes {len(self.classes)}")
        top = max(self.labels) if self.labels else -1
        if top >= num_classes:
            raise DataError(f"{self.option} '{self.source}' has label {top} but the model has only "
                            f"{num_classes} classes (0..{num_classes - 1}); fix the labels or --num-classes")

    # -- reading ------------------------------------------------------------------------------

    def load(self, on_decoded: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Preprocess the selection: ``(x (N, 3, H, W) float32, labels (N,) int64 or None)``.

        The whole selection in one array: for calibration sets and builds that read every image.
        Evaluation streams instead (:meth:`stream`). With ``on_bad_image='skip'`` unreadable
        images are left out, listed in :attr:`skipped` and counted in a warning; with ``'fail'``
        the first one raises, naming the file. Decoding runs in parallel (:meth:`stream`).
        ``on_decoded(done, total)`` is called as images are decoded (progress display).
        """
        order = self._order()
        if self.array is not None:  # a memory-mapped .npy reads only the selected rows
            self.skipped = []
            x = np.array(self.array[np.asarray(order, dtype=np.intp)], dtype=np.float32)
            y = None if self.labels is None else np.asarray([self.labels[i] for i in order], dtype=np.int64)
            return x, y
        h, w = self.pp.input_size
        x = np.empty((len(order), 3, h, w), dtype=np.float32)
        ys: list[np.ndarray] = []
        n = 0
        if on_decoded is not None:
            on_decoded(0, len(order))
        for xb, yb in self.stream(16):
            x[n:n + len(xb)] = xb
            n += len(xb)
            if on_decoded is not None:  # counted per batch of 16 decoded images
                on_decoded(n, len(order))
            if yb is not None:
                ys.append(yb)
        if on_decoded is not None and n < len(order):  # unreadable ones skipped: every image was tried
            on_decoded(len(order), len(order))
        x = x[:n]
        y = None if self.labels is None else np.concatenate(ys).astype(np.int64, copy=False)
        return x, y

    def _read(self, i: int) -> tuple[np.ndarray | None, str | None]:
        """Item ``i`` preprocessed, or ``(None, reason)`` when it is unreadable and
        ``on_bad_image='skip'``; with ``'fail'`` an unreadable item raises, naming the file.
        No side effects, so decoding threads may call it."""
        if self.array is not None:
            return np.asarray(self.array[i], dtype=np.float32), None
        path = self.paths[i]
        try:
            with Image.open(path) as img:
                img.load()  # decode now, so truncated files fail here and not later
                return preprocess(img, self.pp), None
        except _UNREADABLE as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if self.on_bad_image == "fail":
                raise DataError(f"{self.option}: image '{path}' cannot be read ({reason}); remove or "
                                f"replace it, or pass --on-bad-image skip to leave it out") from None
            return None, reason

    def stream(self, batch: int, workers: int | None = None, prefetch: int = DEFAULT_PREFETCH,
               stats: "DecodeStats | None" = None, limit: int | None = None, record: bool = True,
               start: int = 0, stop: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Positions ``start..stop`` of the selection as ``(x, labels or None)`` batches, in order.

        Batches are the index-aligned groups ``[start + k*batch, start + (k+1)*batch)`` less their
        unreadable images: with ``start`` a multiple of ``batch`` (what
        :func:`xcit_export.scale.sharding.shard_ranges` gives), a shard sees exactly the batches of a
        pass over the whole set, so a runtime computes every input in the same company however the
        set is sharded, skipped images included. What :meth:`load` gives, cut into batches.

        Images are decoded by ``workers`` threads (default ``min(MAX_DECODE_WORKERS, cores)``;
        Pillow releases the GIL while it decodes and resizes) while the caller works on the
        previous batch. At most ``(prefetch + 1) * batch`` decoded images are in flight, so memory
        does not depend on the set's size. Rows of a tensor source are read batch by batch (a
        memory-mapped ``.npy`` reads only those rows). ``limit`` stops after that many readable
        items. ``stats`` (a :class:`DecodeStats`) receives the decoding time. With ``record``,
        :attr:`skipped` and the skip warning describe this pass (as :meth:`load` does).
        Unreadable images are skipped or raise as :attr:`on_bad_image` says; with ``'fail'`` the
        first bad one in order raises, naming the file.
        """
        if batch < 1:
            raise ValueError(f"batch must be positive, got {batch}")
        order = self._order()
        stop = len(order) if stop is None else min(stop, len(order))
        stats = stats if stats is not None else DecodeStats()
        wanted = stop - start if limit is None else min(limit, stop - start)
        if self.array is not None:
            yield from self._stream_rows(order, batch, start, start + wanted, stats, record)
            return
        skipped: list[tuple[str, str]] = []
        workers = workers or default_decode_workers()
        stats.workers = workers
        kept = 0
        for group in self._decoded_groups(order[start:stop], batch, workers, prefetch, stats, skipped):
            xs = [item for _, item in group][:wanted - kept]
            if xs:
                kept += len(xs)
                stats.images += len(xs)
                yield self._batch(xs, [i for i, _ in group][:len(xs)])
            if kept >= wanted:
                break
        if record:
            self.skipped = skipped
            if skipped:
                self._warn(f"{self.option} '{self.source}': skipped {len(skipped)} unreadable image(s) of "
                           f"{stop - start} (first: {skipped[0][0]}); {kept} used")
        if not kept and wanted and (start, stop) == (0, len(order)):
            raise DataError(f"{self.option} '{self.source}': none of the {stop - start} selected images "
                            f"could be read; check the files (--on-bad-image fail names the first bad one)")

    def _stream_rows(self, order: list[int], batch: int, lo: int, hi: int, stats: "DecodeStats",
                     record: bool) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Rows ``lo..hi`` of a tensor source, batch by batch."""
        stats.workers = 0
        for a in range(lo, hi, batch):
            idx = np.asarray(order[a:min(a + batch, hi)], dtype=np.intp)
            t0 = time.perf_counter()
            x = np.array(self.array[idx], dtype=np.float32)
            stats.busy_seconds += time.perf_counter() - t0
            stats.images += len(x)
            yield x, None if self.labels is None else np.asarray([self.labels[i] for i in idx], dtype=np.int64)
        if record:
            self.skipped = []

    def _decoded_groups(self, positions: list[int], batch: int, workers: int, prefetch: int,
                        stats: "DecodeStats", skipped: list) -> Iterator[list[tuple[int, np.ndarray]]]:
        """``positions`` decoded by ``workers`` threads, a few batches ahead, in index-aligned groups
        of ``batch`` positions: ``[(index, image), ...]`` with the unreadable ones left out (and added
        to ``skipped``)."""
        def task(i: int):
            t0 = time.perf_counter()
            item, reason = self._read(i)
            return item, reason, time.perf_counter() - t0

        window = max(1, batch * (prefetch + 1))
        pending: deque = deque()
        todo = iter(positions)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xcit-decode")
        try:
            def fill() -> None:
                while len(pending) < window:
                    i = next(todo, None)
                    if i is None:
                        return
                    pending.append((i, pool.submit(task, i)))

            fill()
            group: list[tuple[int, np.ndarray]] = []
            seen = 0
            while pending:
                i, future = pending.popleft()
                t0 = time.perf_counter()
                item, reason, busy = future.result()
                stats.wait_seconds += time.perf_counter() - t0
                stats.busy_seconds += busy
                fill()
                seen += 1
                if item is None:
                    skipped.append((str(self.paths[i]), reason))
                else:
                    group.append((i, item))
                if seen % batch == 0 or not pending:
                    yield group
                    group = []
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _batch(self, xs: list[np.ndarray], ids: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        y = None if self.labels is None else np.asarray([self.labels[i] for i in ids], dtype=np.int64)
        return np.stack(xs), y

    def head(self, count: int) -> np.ndarray:
        """The first ``count`` readable items (fewer if the selection is smaller): the inputs of
        latency and profile runs. Leaves :attr:`skipped` alone."""
        out = [x for x, _ in self.stream(count, limit=count, record=False)]
        return np.concatenate(out)[:count] if out else np.empty((0, 3, *self.pp.input_size), np.float32)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, stacklevel=3)

    # -- identity -----------------------------------------------------------------------------

    def item_hashes(self) -> list[str]:
        """sha256 of each selected item's content (file bytes, or the tensor's bytes)."""
        out = []
        for i in self._order():
            if i not in self._file_hashes:
                if self.array is not None:
                    self._file_hashes[i] = _sha256_bytes(np.ascontiguousarray(self.array[i]).tobytes())
                else:
                    try:
                        self._file_hashes[i] = _sha256_bytes(self.paths[i].read_bytes())
                    except OSError as exc:
                        raise DataError(f"{self.option}: '{self.paths[i]}' cannot be read "
                                        f"({exc.strerror or exc}); fix or remove it") from None
            out.append(self._file_hashes[i])
        return out

    def content_hash(self) -> str:
        """sha256 over the selected items' content, their names and labels, the preprocessing and
        the selection: equal hashes mean equal model inputs, so artifacts built from them can be
        reused. Independent of where the set lives on disk."""
        h = hashlib.sha256()
        meta = {"preprocessing": self.pp.to_dict(), "selection": {"seed": self.seed, "size": len(self)},
                "labelled": self.labelled}
        h.update(json.dumps(meta, sort_keys=True).encode())
        for i, digest in zip(self._order(), self.item_hashes()):
            if self.paths is not None:
                path = self.paths[i]
                try:
                    name = path.relative_to(self._root).as_posix() if self._root else path.name
                except ValueError:  # a .txt list may point outside its folder
                    name = path.as_posix()
                h.update(name.encode() + b"\0")
            h.update(digest.encode())
            h.update(b"\0" if self.labels is None else str(self.labels[i]).encode())
            h.update(b"\n")
        return h.hexdigest()


def representative_subset(count: int, size: int | None, labels: Sequence[int] | np.ndarray | None = None,
                          seed: int = 0) -> tuple[np.ndarray, dict]:
    """Positions of a seeded subset of ``size`` of ``count`` items, stratified by class when
    ``labels`` are given; returns ``(indices ascending, record)``.

    The one rule for every "use N of these images" (the golden inputs, ``search_images``, NNCF's
    ``subset_size``, the FP16 reference images): never the first N, since ImageFolder sets are in
    class order (ImageNet val's first 1,000 images are 20 classes). With labels each class gets
    its share of ``size`` (largest remainder; every class at least one when ``size`` allows),
    drawn at random within the class; without labels a uniform random draw. The same seed,
    ``count`` and labels give the same indices on every machine. ``size`` None or at least
    ``count`` keeps everything. ``record`` says how the subset was drawn, for artifact metadata:
    method, seed, size, of, classes covered, per-class counts (up to 50 classes) and the sha256
    of the indices.
    """
    if size is None or size >= count:
        idx = np.arange(count, dtype=np.int64)
        method = "all"
    elif size <= 0:
        raise DataError(f"a subset needs a positive size, got {size}")
    else:
        rng = np.random.default_rng(seed)
        if labels is None:
            idx = np.sort(rng.choice(count, size, replace=False)).astype(np.int64)
            method = "random"
        else:
            lab = np.asarray(labels).reshape(-1)
            if len(lab) != count:
                raise DataError(f"{len(lab)} labels for {count} items: cannot stratify the subset")
            classes, inverse = np.unique(lab, return_inverse=True)
            members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
            sizes = np.array([len(m) for m in members])
            # Hamilton apportionment in exact integers: floor of each class's share, then the
            # largest remainders (ties broken at random, seeded).
            total = int(sizes.sum())
            quota = (size * sizes) // total
            remainder = (size * sizes) % total
            left = size - int(quota.sum())
            order = np.lexsort((rng.random(len(classes)), -remainder))
            quota[order[:left]] += 1
            if size >= len(classes):  # every class represented: take from the largest shares
                for c in np.flatnonzero(quota == 0):
                    donor = int(np.argmax(quota))
                    quota[donor] -= 1
                    quota[c] += 1
            picks = [rng.choice(m, q, replace=False) for m, q in zip(members, quota) if q]
            idx = np.sort(np.concatenate(picks)).astype(np.int64)
            method = "stratified"
    record: dict = {"method": method, "seed": seed if method != "all" else None, "size": int(len(idx)),
                    "of": int(count), "indices_sha256": hashlib.sha256(idx.tobytes()).hexdigest()[:16]}
    if labels is not None:
        chosen = np.asarray(labels).reshape(-1)[idx]
        values, counts = np.unique(chosen, return_counts=True)
        record["classes"] = {"covered": int(len(values)), "of": int(len(np.unique(np.asarray(labels))))}
        if len(values) <= 50:
            record["per_class"] = {str(int(v)): int(c) for v, c in zip(values, counts)}
        else:
            record["per_class_range"] = [int(counts.min()), int(counts.max())]
    return idx, record


class LazyRows:
    """The selection of an :class:`ImageSet` as a read-only array-like whose rows are decoded when
    indexed: what a build gets as its evaluation images when it may read a few of them (TensorRT's
    golden inputs), so the set is never held whole. ``np.asarray(rows)`` reads every row.

    Rows are selection positions; an unreadable image among the rows asked for raises a
    :class:`~xcit_export.errors.DataError` naming it, whatever ``on_bad_image`` says (skipping it
    would misalign the rows with their labels). ``transform`` (e.g. the deployed input format)
    is applied to each decoded block.
    """

    ndim = 4

    def __init__(self, images: ImageSet, transform: Callable[[np.ndarray], np.ndarray] | None = None):
        self.images, self.transform = images, transform or (lambda x: x)
        self._row: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def _first(self) -> np.ndarray:
        if self._row is None:
            self._row = self[0:1][0]
        return self._row

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._first().shape)

    @property
    def dtype(self) -> np.dtype:
        return self._first().dtype

    def __getitem__(self, key):
        positions = np.arange(len(self))[key]
        if np.ndim(positions) == 0:
            return self[np.asarray([positions])][0]
        order = self.images._order()
        rows = []
        for p in np.asarray(positions).tolist():
            item, reason = self.images._read(order[p])
            if item is None:
                raise DataError(f"{self.images.option}: image '{self.images.paths[order[p]]}' cannot be read "
                                f"({reason}) and a build needs it; remove or replace it")
            rows.append(item)
        h, w = self.images.pp.input_size
        x = np.stack(rows) if rows else np.empty((0, 3, h, w), np.float32)
        return self.transform(x)

    def __array__(self, dtype=None, copy=None):
        x = self[:]
        return x if dtype is None else x.astype(dtype, copy=False)

    def take(self, positions, labels=None) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
        """Rows ``positions`` and their ``labels`` (indexed by position), honouring the set's
        ``on_bad_image``: with ``'skip'`` an unreadable row is replaced by the next readable
        position not asked for (its label with it), as the evaluation pass leaves it out; with
        ``'fail'`` it raises naming the file. Returns ``(x, labels or None, positions used)``."""
        order = self.images._order()
        wanted = [int(p) for p in np.asarray(positions).reshape(-1).tolist()]
        taken, rows, used = set(wanted), [], []
        spare = (q for q in range(len(order)) if q not in taken)  # substitutes, in selection order
        for p in wanted:
            item, reason = self.images._read(order[p])  # raises with on_bad_image='fail'
            while item is None:
                self.images._warn(f"{self.images.option}: skipped unreadable image '{self.images.paths[order[p]]}' "
                                  f"({reason}) for a build's subset; took another")
                p = next(spare, None)
                if p is None:
                    raise DataError(f"{self.images.option}: too few readable images in '{self.images.source}' for "
                                    f"the {len(wanted)} a build needs")
                item, reason = self.images._read(order[p])
            rows.append(item)
            used.append(p)
        h, w = self.images.pp.input_size
        x = self.transform(np.stack(rows) if rows else np.empty((0, 3, h, w), np.float32))
        return x, None if labels is None else np.asarray(labels)[used], used


def take_rows(x, labels, positions) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows ``positions`` of an evaluation set given to a build as ``(x, labels)``: arrays as they are,
    a streamed set's :class:`LazyRows` through :meth:`LazyRows.take` (``--on-bad-image skip`` then
    replaces an unreadable image instead of failing the build: TensorRT's golden inputs,
    ``search_images``)."""
    if isinstance(x, LazyRows):
        rows, y, _ = x.take(positions, labels)
        return rows, y
    return np.asarray(x[positions]), None if labels is None else np.asarray(labels)[positions]


def check_disjoint(calib: ImageSet, evaluation: ImageSet) -> None:
    """Raise if any calibration item has the same content as an evaluation item.

    Calibrating on evaluation images makes the quantised model's accuracy look better than it is.
    """
    eval_hashes = set(evaluation.item_hashes())
    shared = [i for i, d in zip(calib._order(), calib.item_hashes()) if d in eval_hashes]
    if shared:
        example = (str(calib.paths[shared[0]]) if calib.paths is not None else f"tensor #{shared[0]}")
        raise DataError(f"{len(shared)} calibration image(s) also appear in the evaluation set (same "
                        f"content; first: {example}); use disjoint sets for --calib and --eval, e.g. "
                        f"the calib and eval splits of the same dataset")


def calibration_set(source: str | os.PathLike, pp: Preprocessing, size: int = DEFAULT_CALIB_SIZE,
                    seed: int = 0, on_bad_image: str = "fail",
                    class_index: str | os.PathLike | None = None) -> ImageSet:
    """The ``size``-image calibration subset of ``source`` (``--calib``, ``--calib-size``)."""
    images = ImageSet.from_source(source, pp, "--calib", class_index, on_bad_image).select(size, seed)
    if size < MIN_RECOMMENDED_CALIB:
        images._warn(f"--calib-size {size} is small: INT8 activation ranges from fewer than "
                     f"{MIN_RECOMMENDED_CALIB} images are noisy; {DEFAULT_CALIB_SIZE} is the default")
    return images


def evaluation_set(source: str | os.PathLike, pp: Preprocessing, size: int | None = None,
                   seed: int = 0, on_bad_image: str = "fail", class_index: str | os.PathLike | None = None,
                   num_classes: int | None = None) -> ImageSet:
    """The labelled evaluation set (``--eval``, ``--eval-size``), checked against ``num_classes``."""
    images = ImageSet.from_source(source, pp, "--eval", class_index, on_bad_image)
    if not images.labelled:
        raise DataError(f"--eval '{source}' has no labels; accuracy needs an ImageFolder tree "
                        f"(one sub-folder per class) or an .npz with 'y'")
    if num_classes is not None:
        images.check_num_classes(num_classes)
    return images.select(size, seed, size_option="--eval-size")


def demo_dataset(split: str, root: str | os.PathLike | None = None, pp: Preprocessing | None = None,
                 seed: int = 0, option: str = "--eval", on_bad_image: str = "fail") -> ImageSet:
    """A split (``train``, ``calib``, ``eval``) of the bundled demo set as an :class:`ImageSet`.

    ``root`` is a folder holding the rendered set (rendered there if missing); by default the
    cache of :func:`demo_root`. ``pp`` defaults to the 224x224 ImageNet-style preprocessing the
    demo checkpoint was trained with.
    """
    base = demo_root(seed, root, splits=(split,))
    paths, labels, classes = list_image_folder(base / split, option=option)
    return ImageSet(source=f"demo:{split}", pp=pp or Preprocessing(), option=option, paths=paths,
                    labels=labels, classes=classes, on_bad_image=on_bad_image, _root=base / split)


def _read_array(path: Path, option: str) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """``(x, y or None, note or None)`` of a ``.npy`` / ``.npz``, with ``x`` memory-mapped read-only
    where the file allows it, so a selection reads only its rows.

    A ``.npy`` and the ``x`` of an uncompressed ``.npz`` (``np.savez``) are mapped; the ``x`` of
    a compressed one (``np.savez_compressed``) cannot be, so it is read whole and ``note`` says so.
    """
    def unreadable(exc) -> DataError:
        return DataError(f"{option} '{path}' cannot be read as NumPy data ({exc}); save it with "
                         f"np.save / np.savez")

    try:
        # allow_pickle=False: a data file must never run code.
        obj = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise unreadable(exc) from None
    if isinstance(obj, np.ndarray):
        return obj, None, None
    with obj:
        if "x" not in obj.files:
            raise DataError(f"{option} '{path}' has arrays {obj.files} but no 'x'; save it as "
                            f"np.savez(path, x=tensors, y=labels)")
        y = obj["y"] if "y" in obj.files else None
    try:
        x, why_not = _map_npz_member(path, "x.npy")
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise unreadable(exc) from None
    if x is not None:
        return x, y, None
    with np.load(path, allow_pickle=False) as obj:
        x = obj["x"]
    return x, y, (f"{option} '{path}': 'x' is {why_not}, so all {x.nbytes / 2**20:.0f} MiB of it were read "
                  f"into memory; save it with np.savez (uncompressed) or as a .npy to read only the rows used")


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _map_npz_member(path: Path, member: str) -> tuple[np.ndarray | None, str | None]:
    """A read-only memory map of ``member`` inside an uncompressed ``.npz``, or ``(None, why not)``."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return None, "compressed"
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)  # the local file header: name and extra lengths at bytes 26..29
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"bad zip local header for {member}")
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        fh.seek(start)
        version = np.lib.format.read_magic(fh)
        if version not in _NPY_HEADERS:
            return None, f"stored in .npy format version {version}"
        shape, fortran, dtype = _NPY_HEADERS[version](fh)
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError("object arrays are not data")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"), None


def _check_array(x: np.ndarray, y: np.ndarray | None, pp: Preprocessing, path: Path, option: str) -> None:
    h, w = pp.input_size
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (h, w):
        raise DataError(f"{option} '{path}' holds tensors of shape {tuple(x.shape)} but the model takes "
                        f"(N, 3, {h}, {w}); preprocess to {h}x{w} NCHW (or pass image files instead)")
    if x.shape[0] == 0:
        raise DataError(f"{option} '{path}' holds no samples (shape {tuple(x.shape)})")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{option} '{path}' holds {x.dtype} tensors; expected preprocessed floats "
                        f"(normalised with the model's mean/std), not raw pixels")
    if y is not None and (y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer)):
        raise DataError(f"{option} '{path}': 'y' must be {len(x)} integer labels, one per sample; got "
                        f"{y.dtype} of shape {tuple(y.shape)}")


def _read_list(path: Path, option: str) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{option} '{path}' cannot be read as a text list of image paths ({exc})") from None
    # Relative entries are relative to the list file, so a list travels with its images.
    paths = [(path.parent / line.strip()) for line in lines if line.strip() and not line.startswith("#")]
    if not paths:
        raise DataError(f"{option} '{path}' lists no images; write one image path per line")
    return paths
