"""A small, procedurally rendered, labelled image set: the bundled demo data (no downloads).

Ten classes, each a kind of object or texture drawn on a cluttered background:

====  ==============  =========================================================
 id   class           what identifies it
====  ==============  =========================================================
 0    blobs           a patch of many random overlapping ellipses (no order)
 1    checker         a patch of checkerboard, randomly rotated
 2    cross           one plus-shaped cross, randomly rotated
 3    disk            one filled circle
 4    dots            a patch of a regular grid of small dots
 5    hstripes        a patch of near-horizontal stripes (within 20 degrees)
 6    ring            one thick annulus (a circle with a hole)
 7    square          one filled square, randomly rotated
 8    triangle        one filled triangle, randomly rotated
 9    vstripes        a patch of near-vertical stripes
====  ==============  =========================================================

The ids are the positions of the folder names in sorted order, so an ImageFolder reader that
sorts class folders (torchvision, timm, :class:`xcit_export.data.sets.ImageSet`) gets these labels.

Everything else is nuisance, drawn at random so that the label is the only constant: the
foreground and background colours (kept apart in brightness so the object is visible), a
two-colour gradient background, the object's position, scale and rotation, a few thin random
"scribble" lines, Gaussian pixel noise, the image size and aspect ratio (160 to 320 pixels a
side, so the resize/crop path of :func:`xcit_export.data.sets.preprocess` is exercised) and the file
format (JPEG or PNG). Objects stay inside the central square of each image, so a centre crop
keeps them.

Rendering is a pure function of ``(seed, split, index)``: the same seed gives byte-identical
files on every machine with the same Pillow and NumPy versions. ``python -m
xcit_export.data.demo OUT`` writes ``OUT/{train,calib,eval}/<class>/*.{png,jpg}``, each split
with a ``split.json`` manifest written last (a split without one is incomplete).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Sorted, so that sorted folder names give the same ids as this tuple.
CLASSES = ("blobs", "checker", "cross", "disk", "dots", "hstripes", "ring", "square", "triangle",
           "vstripes")
# Default split sizes: enough to train the fixture, >= 256 for calibration, >= 1000 to measure
# top-1 to about +-1%.
SPLITS = {"train": 3000, "calib": 300, "eval": 1000}
# Distinct per-split stream ids so splits never share a random stream (and so never an image).
_SPLIT_IDS = {"train": 1, "calib": 2, "eval": 3}
SPLIT_MANIFEST = "split.json"  # written last into each split folder
RENDER_LOCK = ".render.lock"  # in the set's root: one renderer at a time (render_lock)
FORMAT_VERSION = 1  # bump when rendering changes, so caches keyed on it are rebuilt


def _colour(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """A random saturated-ish RGB colour whose mean brightness lies in [lo, hi]."""
    c = rng.uniform(0, 255, 3)
    target = rng.uniform(lo, hi)
    c = np.clip(c + (target - c.mean()), 0, 255)
    return c


def _background(rng: np.random.Generator, w: int, h: int, dark_fg: bool) -> np.ndarray:
    """A linear gradient between two colours on the opposite side of mid-grey from the object."""
    lo, hi = (130, 235) if dark_fg else (20, 125)
    c0, c1 = _colour(rng, lo, hi), _colour(rng, lo, hi)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * math.cos(angle) + yy * math.sin(angle))
    t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    return c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]


def _rotated(points: np.ndarray, angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    rot = points @ np.array([[c, s], [-s, c]])
    return [(float(x + cx), float(y + cy)) for x, y in rot]


def _pattern_mask(kind: str, rng: np.random.Generator, w: int, h: int, scale: float) -> np.ndarray:
    """A boolean (h, w) texture for the texture classes, with random period, phase and angle."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(0.07, 0.13) * scale
    phase = rng.uniform(0, period)
    if kind in ("hstripes", "vstripes"):
        base = 0.0 if kind == "hstripes" else math.pi / 2
        a = base + math.radians(rng.uniform(-20, 20))
        # Distance along the stripe normal; stripes run along direction a.
        u = -xx * math.sin(a) + yy * math.cos(a)
        return ((u + phase) % period) < period * rng.uniform(0.4, 0.6)
    if kind == "checker":
        a = rng.uniform(0, math.pi / 2)
        u = xx * math.cos(a) + yy * math.sin(a) + phase
        v = -xx * math.sin(a) + yy * math.cos(a) + phase
        return ((np.floor(u / period) + np.floor(v / period)) % 2) == 0
    if kind == "dots":
        u = (xx + phase) % period - period / 2
        v = (yy + phase) % period - period / 2
        return (u * u + v * v) < (period * rng.uniform(0.22, 0.32)) ** 2
    raise ValueError(kind)


def render(label: int, rng: np.random.Generator) -> Image.Image:
    """Render one RGB image of class ``label`` using (and advancing) ``rng``."""
    kind = CLASSES[label]
    w, h = int(rng.integers(160, 321)), int(rng.integers(160, 321))
    side = min(w, h)  # objects live in the central side x side square
    ox, oy = (w - side) / 2, (h - side) / 2
    dark_fg = bool(rng.integers(0, 2))
    img = _background(rng, w, h, dark_fg)
    fg = _colour(rng, *((20, 110) if dark_fg else (145, 235)))

    scale = side * rng.uniform(0.45, 0.8)  # object diameter
    cx = ox + side / 2 + rng.uniform(-1, 1) * (side - scale) / 2
    cy = oy + side / 2 + rng.uniform(-1, 1) * (side - scale) / 2
    r = scale / 2
    mask_img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask_img)
    angle = rng.uniform(0, 2 * math.pi)
    if kind == "disk":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif kind == "square":
        q = r / math.sqrt(2) * 1.15
        draw.polygon(_rotated(np.array([[-q, -q], [q, -q], [q, q], [-q, q]]), angle, cx, cy), fill=255)
    elif kind == "triangle":
        pts = np.array([[r * math.cos(t), r * math.sin(t)] for t in (0, 2 * math.pi / 3, 4 * math.pi / 3)])
        draw.polygon(_rotated(pts, angle, cx, cy), fill=255)
    elif kind == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        ri = r * rng.uniform(0.45, 0.65)
        draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=0)
    elif kind == "cross":
        t = r * rng.uniform(0.25, 0.4)
        bars = (np.array([[-r, -t], [r, -t], [r, t], [-r, t]]), np.array([[-t, -r], [t, -r], [t, r], [-t, r]]))
        for pts in bars:
            draw.polygon(_rotated(pts, angle, cx, cy), fill=255)
    elif kind == "blobs":
        for _ in range(int(rng.integers(10, 18))):
            bx, by = cx + rng.uniform(-r, r) * 0.8, cy + rng.uniform(-r, r) * 0.8
            rx, ry = rng.uniform(0.05, 0.2) * scale, rng.uniform(0.05, 0.2) * scale
            draw.ellipse((bx - rx, by - ry, bx + rx, by + ry), fill=255)
    else:
        # Texture classes: the pattern fills a rectangle or an ellipse region around (cx, cy).
        region = Image.new("L", (w, h), 0)
        rdraw = ImageDraw.Draw(region)
        box = (cx - r, cy - r, cx + r, cy + r)
        (rdraw.ellipse if rng.integers(0, 2) else rdraw.rectangle)(box, fill=255)
        pattern = _pattern_mask(kind, rng, w, h, side)
        mask_img = Image.fromarray((np.asarray(region) > 0) & pattern)
    mask = (np.asarray(mask_img, dtype=np.float32) / 255.0) if mask_img.mode == "L" else \
        np.asarray(mask_img, dtype=np.float32)
    img = img * (1 - mask[..., None]) + fg[None, None, :] * mask[..., None]

    # Clutter: a few thin lines in random colours, then sensor-like noise.
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for _ in range(int(rng.integers(0, 4))):
        x0, y0, x1, y1 = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, h)
        draw.line((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                  width=int(rng.integers(1, 4)))
    arr = np.asarray(out, dtype=np.float32) + rng.normal(0, rng.uniform(2, 12), (h, w, 3))
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def split_is_complete(root: str | Path, split: str, seed: int, count: int) -> bool:
    """True if ``root/split`` holds a finished render of this split, seed, size and renderer."""
    try:
        meta = json.loads((Path(root) / split / SPLIT_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta == _split_meta(split, seed, count)


def _split_meta(split: str, seed: int, count: int) -> dict:
    return {"format_version": FORMAT_VERSION, "seed": seed, "split": split, "count": count,
            "classes": list(CLASSES), "generator": "xcit_export.data.demo.make_demo_dataset"}


def make_split(root: str | Path, split: str, count: int, seed: int = 0) -> Path:
    """Render ``count`` images of ``split`` (classes balanced round-robin) into ``root/split``.

    The folder is built under a temporary name and renamed when complete, with a
    ``split.json`` manifest inside, so a reader never sees half a split.
    """
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown split '{split}'; choose from {sorted(_SPLIT_IDS)}")
    from ..io import atomic_dir

    final = Path(root) / split
    with atomic_dir(final, marker=SPLIT_MANIFEST, option="XCIT_EXPORT_CACHE") as out:
        for i in range(count):
            # One independent stream per image: any image can be re-rendered on its own.
            rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
            label = i % len(CLASSES)
            img = render(label, rng)
            folder = out / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            if rng.integers(0, 4) == 0:
                img.save(folder / f"{split}_{i:05d}.png", format="PNG")
            else:
                img.save(folder / f"{split}_{i:05d}.jpg", format="JPEG", quality=int(rng.integers(80, 96)))
        (out / SPLIT_MANIFEST).write_text(json.dumps(_split_meta(split, seed, count), indent=2) + "\n",
                                          encoding="utf-8")
    return final


@contextlib.contextmanager
def render_lock(root: str | Path):
    """Hold an exclusive ``flock`` on ``root/.render.lock`` for the block (the cache is shared by
    every run of every ``--out``): a run renders a split only while no other run renders there, so
    none replaces a split another is reading. Callers check again for a finished split once they
    hold it. The kernel drops the lock when its holder dies; the file is never followed if a link."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        yield
        return
    path = root / RENDER_LOCK
    try:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot open the demo set's render lock '{path}' ({exc.strerror}); remove it "
                                 f"or set XCIT_EXPORT_CACHE to another folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def make_demo_dataset(root: str | Path, seed: int = 0, splits: dict[str, int] | None = None) -> Path:
    """Render the demo set into ``root`` (one ImageFolder tree per split) and return ``root``."""
    root = Path(root)
    with render_lock(root):
        for split, count in (SPLITS if splits is None else splits).items():
            make_split(root, split, count, seed)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xcit_export.data.demo",
                                     description="Render the bundled demo image set.")
    parser.add_argument("out", help="output folder (gets train/, calib/, eval/)")
    parser.add_argument("--seed", type=int, default=0)
    for split, count in SPLITS.items():
        parser.add_argument(f"--{split}", type=int, default=count, help=f"images in {split} (default {count})")
    args = parser.parse_args(argv)
    make_demo_dataset(args.out, args.seed, {s: getattr(args, s) for s in SPLITS})
    print(f"wrote {sum(getattr(args, s) for s in SPLITS)} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
