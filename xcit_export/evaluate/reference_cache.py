"""The PyTorch reference's outputs, computed once at the reference's own batch and kept on disk.

The reference depends only on the model (weights, classes, the deployed wrapper's output kind and
input format), the preprocessing (input size included) and the images, never on the targets or
their batch. So :class:`CachedReference` runs PyTorch at :data:`REFERENCE_BATCH` (the targets may
run at batch 1: the reference need not), writes its outputs to disk as they come, and a rerun, or
a run with another target list over the same set, reads them back instead of recomputing them.

Layout: ``<root>/<key>/`` holds one raw file per output (``<i>.bin``, rows of the output's dtype
and shape) and ``reference.json`` (the key's inputs, the count, each file's shape, dtype, size and
sha256). ``<root>`` is ``$XCIT_EXPORT_CACHE/reference`` when that variable is set (shared between
runs and output folders), else ``<out>/reference-cache``.

Memory stays flat both ways: a miss appends each batch's outputs to the files (hashing the bytes as
they go); a hit memory-maps the files and copies out one batch of rows at a time. The folder is
written under a temporary name and renamed into place only when the pass finished
(:func:`xcit_export.io.atomic_dir`), so an interrupted run leaves nothing under the key. A cached
folder is trusted only when every file has the recorded size and sha256 (checked by streaming it,
before the pass): a torn or edited file is recomputed, never read. A pass that needs more rows
than are cached (an image that became unreadable and is skipped differently) stops reading the
cache and computes the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import XcitExportError
from ..io import atomic_dir, sha256_file

REFERENCE_BATCH = 32  # PyTorch's batch for the reference, whatever the targets' batch
META = "reference.json"
FORMAT = 2  # 2: every batch whole (padded), as run_in_batches


def cache_root(out_dir: Path) -> Path:
    """``$XCIT_EXPORT_CACHE/reference`` if the variable is set, else ``<out_dir>/reference-cache``."""
    env = os.environ.get("XCIT_EXPORT_CACHE")
    return Path(env) / "reference" if env else Path(out_dir) / "reference-cache"


def reference_key(*, model: str, weights_id: str, seed: int, num_classes: int, preprocessing: dict, output: str,
                  input_format: str, dynamic_size: bool, images: str, batch: int = REFERENCE_BATCH) -> str:
    """What the reference's outputs depend on: the model and its weights (by content), the output
    kind and input format of the deployed wrapper, the preprocessing (input size included), the
    image set's content hash, PyTorch's version and the reference batch."""
    import torch

    from ..version import __version__

    blob = json.dumps({"format": FORMAT, "xcit_export": __version__, "torch": torch.__version__, "model": model,
                       "weights": weights_id, "seed": seed, "num_classes": num_classes,
                       "preprocessing": preprocessing, "output": output, "input_format": input_format,
                       "dynamic_size": bool(dynamic_size), "images": images, "batch": int(batch)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _valid(folder: Path, key: str) -> tuple[dict | None, str | None]:
    """The cached folder's metadata when every file checks out, else ``(None, why not)``."""
    meta_path = folder / META
    if not meta_path.is_file():
        return None, None
    try:
        meta = json.loads(meta_path.read_text())
        files = meta["files"]
        count = int(meta["count"])
    except (ValueError, KeyError, TypeError, OSError):
        return None, f"its {META} does not load"
    if meta.get("key") != key or meta.get("format") != FORMAT:
        return None, "it was written for another key"
    for f in files:
        path = folder / f["file"]
        row = int(np.prod(f["shape"], dtype=np.int64)) * np.dtype(f["dtype"]).itemsize
        if not path.is_file() or path.stat().st_size != row * count:
            return None, f"{f['file']} is missing or has the wrong size (a torn write?)"
        if sha256_file(path) != f["sha256"]:
            return None, f"{f['file']} does not match the sha256 recorded when it was written"
    return meta, None


class CachedReference:
    """The reference as ``evaluate_stream`` calls it (``reference(x) -> outputs``, inputs in order),
    read from the cache on a hit and computed (and recorded) on a miss.

    ``compute`` is PyTorch (``validate.torch_infer``), run on at most ``batch`` inputs at a time.
    Call :meth:`finish` after the pass (writes the cache on a miss) or :meth:`abort` on failure.
    """

    def __init__(self, root: Path, key: str, compute: Callable[[np.ndarray], list], names: list[str],
                 batch: int = REFERENCE_BATCH, progress: Callable[[str], None] = lambda m: None):
        self.folder = Path(root) / key
        self.key, self.compute, self.names, self.batch = key, compute, list(names), int(batch)
        self.cursor = 0
        self.maps: list[np.ndarray] | None = None
        self.count = 0
        self._writer: Any = None
        self._files: list = []
        self._hashes: list = []
        self._shapes: list = []
        meta, why = _valid(self.folder, key)
        if meta is not None:
            self.count = int(meta["count"])
            self.maps = [np.memmap(self.folder / f["file"], dtype=np.dtype(f["dtype"]), mode="r",
                                   shape=(self.count, *f["shape"])) for f in meta["files"]]
            progress(f"Reference: reading PyTorch's outputs for these {self.count} inputs from the cache ({self.folder})")
        elif why:
            progress(f"Reference: recomputing the cached outputs in {self.folder}: {why}")

    @property
    def hit(self) -> bool:
        return self.maps is not None

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        # Always whole batches (the last padded, then cut): PyTorch's figures for a row depend on the
        # batch's size, so a set read in short chunks (skipped images) gives the same outputs as in one piece.
        from .validate import run_in_batches

        return run_in_batches(self.compute, x, self.batch)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        n = len(x)
        if self.maps is not None:
            if self.cursor + n <= self.count:
                rows = [np.array(m[self.cursor:self.cursor + n]) for m in self.maps]
                self.cursor += n
                return rows
            self.maps = None  # more rows than cached: compute from here on, and record nothing
            self._writer = False
        outs = self._run(x)
        if self._writer is None:
            self._open(outs)
        if self._writer:
            for fh, h, o in zip(self._files, self._hashes, outs):
                data = np.ascontiguousarray(o).tobytes()
                fh.write(data)
                h.update(data)
        self.cursor += n
        return outs

    def _open(self, first: list[np.ndarray]) -> None:
        """Start writing a fresh cache folder under a temporary name (renamed in by :meth:`finish`)."""
        self._stack = contextlib.ExitStack()
        try:
            tmp = self._stack.enter_context(atomic_dir(self.folder, marker=META, option="XCIT_EXPORT_CACHE"))
        except (OSError, XcitExportError):  # OutputDirError: a folder of someone else's under the key
            self._writer = False  # a cache that cannot be written costs the next run the recomputation only
            return
        self._tmp = tmp
        self._shapes = [(o.shape[1:], o.dtype) for o in first]
        for i, _ in enumerate(first):
            self._files.append(open(tmp / f"{i}.bin", "wb"))
            self._hashes.append(hashlib.sha256())
        self._writer = True

    def finish(self) -> dict:
        """After the pass: write the cache (a miss) and say what happened, for the report."""
        info = {"hit": self.hit, "folder": str(self.folder), "rows": self.cursor}
        if self._writer:
            for fh in self._files:
                fh.close()
            files = [{"file": f"{i}.bin", "name": name, "shape": list(shape), "dtype": str(dtype),
                      "sha256": h.hexdigest()}
                     for i, (name, (shape, dtype), h) in enumerate(zip(self.names, self._shapes, self._hashes))]
            (self._tmp / META).write_text(json.dumps({"format": FORMAT, "key": self.key, "count": self.cursor,
                                                      "batch": self.batch, "files": files}, indent=1))
            self._stack.close()  # fsync, rename into place
            self._writer = None
            info["written"] = True
        self.maps = None
        return info

    def abort(self) -> None:
        if self._writer:
            for fh in self._files:
                fh.close()
            self._stack.__exit__(RuntimeError, RuntimeError("evaluation pass failed"), None)
            self._writer = None
        self.maps = None
