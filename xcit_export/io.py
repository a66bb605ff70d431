"""Small file-system helpers: atomic writes, writable-folder checks, content hashes.

Atomic writers build the file or folder under a temporary sibling name (``.<name>.XXXXXXXX.tmp``)
and rename it into place. ``mkstemp``/``mkdtemp`` create those owner-only (0600/0700) and a rename
keeps the mode, so before the rename the result is given the mode an ordinary ``open()``/``mkdir()``
would have given under the current umask: 0644/0755 under umask 0022, still private under 0077.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from .errors import OutputDirError


_TMP_SUFFIX = ".tmp"
# What mkstemp/mkdtemp make of prefix ".<name>." and suffix ".tmp": 8 characters from
# tempfile's alphabet (lower-case letters, digits, underscore) between them.
_ATOMIC_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    Linux (4.7+) reports it in ``/proc/self/status``; elsewhere the only API is ``os.umask``,
    which sets while it reads, so it is set back at once (under a lock against our own threads).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file under the current umask (0644 under 0022)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new folder under the current umask (0755 under 0022)."""
    return 0o777 & ~current_umask()


def is_atomic_temp(name: str) -> bool:
    """Whether ``name`` is the temporary name :func:`atomic_path` / :func:`atomic_dir` build under."""
    return bool(_ATOMIC_TEMP.match(name))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; it replaces ``path`` only if the block succeeds.

    A failure (or Ctrl-C) leaves no half-written file behind under the final name. The file gets
    the mode a new file would get from ``open()`` under the current umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder of files (an OpenVINO IR pair, a bundle).

    The folder gets the mode ``mkdir`` would give it; files written into it with ``open()`` or
    the atomic writers get ordinary modes of their own.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, dir_mode())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json_atomic(path: Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def ensure_writable_dir(path: Path, what: str = "output folder", option: str = "--out") -> Path:
    """Create ``path`` if needed and prove it is writable, or raise naming the folder and the fix."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise OutputDirError(f"{what} '{path}' is not writable ({exc.strerror or exc}); choose another "
                             f"folder with {option}") from None
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def dir_size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.exists())
