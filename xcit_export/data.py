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
* ``demo``: the bundled procedurally rendered set (:mod:`xcit_export.demo_data`), generated into a
  cache folder on first use.

Every problem with the data is a :class:`~xcit_export.errors.DataError` whose message names the
file or option at fault and the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError
from .zoo import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEFAULT_CALIB_SIZE = 300
MIN_RECOMMENDED_CALIB = 100  # below this, activation ranges are noisy: warn, do not fail
ON_BAD_IMAGE = ("skip", "fail")

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
