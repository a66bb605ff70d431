"""Small file-system helpers: atomic writes, writable-folder checks, content hashes.

Atomic writers build the file or folder under a temporary sibling name (``.<name>.XXXXXXXX.xcit-export.tmp``)
and rename it into place, after ``fsync`` of the file(s) and before an ``fsync`` of the folder that
holds the new name (what git and SQLite do), so after a power loss a name holds either the old
content or the whole new content, never an empty or torn file.

:func:`atomic_dir` replaces an existing folder only when this tool made it (it holds the marker file
the caller names, e.g. ``artifact.json``) or when it is empty: ``--out .`` next to a user's own
``onnx/`` folder stops with an error naming that folder instead of deleting it. ``mkstemp``/``mkdtemp`` create those owner-only (0600/0700) and a rename
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


_TMP_SUFFIX = ".xcit-export.tmp"
# What mkstemp/mkdtemp make of prefix ".<name>." and our suffix: 8 characters from tempfile's
# alphabet (lower-case letters, digits, underscore) between them. The suffix names this tool, so a
# user's own ``.x.abcdefgh.tmp`` is never taken for one of ours (outdir.remove_dead_temps).
_ATOMIC_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.xcit-export\.tmp$")
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
    """Whether ``name`` is the temporary name :func:`atomic_path` / :func:`atomic_dir` build under
    (``.<name>.XXXXXXXX.xcit-export.tmp``: only this tool's writers make such names)."""
    return bool(_ATOMIC_TEMP.match(name))


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file or a folder) to stable storage; folders where the OS allows."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        fd = os.open(str(path), flags)
    except OSError:
        if Path(path).is_dir():  # e.g. Windows cannot open a folder: nothing to flush there
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not Path(path).is_dir():  # some file systems refuse fsync on a folder; a file must flush
            raise
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file below ``folder``, then each folder (deepest first), then ``folder``."""
    dirs = []
    for root, _subdirs, files in os.walk(folder):
        for name in files:
            p = Path(root) / name
            if not p.is_symlink():
                fsync_path(p)
        dirs.append(Path(root))
    for d in reversed(dirs):
        fsync_path(d)


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
        fsync_path(tmp_path)  # the content is on disk before the name points at it
        os.replace(tmp_path, path)
        fsync_path(path.parent)  # and the rename itself survives a power loss
    finally:
        tmp_path.unlink(missing_ok=True)


def check_replaceable(path: Path, marker: str | None, option: str = "--out") -> None:
    """Raise unless the folder at ``path`` may be replaced: absent, empty, or holding ``marker``
    (the file this tool writes into every folder it makes). Anything else is the user's."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        kind = "a symbolic link" if path.is_symlink() else "a file"
        raise OutputDirError(f"'{path}' is {kind}, not a folder this tool made; xcit-export will not replace it: "
                             f"move it away, or choose another folder with {option}")
    if marker is not None and (path / marker).is_file():
        return
    if not any(path.iterdir()):
        return
    made = f"it holds no {marker}" if marker else "it is not empty"
    raise OutputDirError(f"'{path}' already exists and was not made by xcit-export ({made}); xcit-export "
                         f"replaces only its own folders, so it stops rather than delete yours: move that "
                         f"folder away, or choose another folder with {option}")


@contextlib.contextmanager
def atomic_dir(path: Path, marker: str | None = None, option: str = "--out") -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder of files (an OpenVINO IR pair, a bundle).

    An existing folder at ``path`` is replaced only if it is empty or holds ``marker`` (the file
    the caller writes into every such folder, e.g. ``artifact.json``); anything else raises
    :class:`OutputDirError` naming it, before and after the block (nothing is deleted). The old
    folder is renamed aside and removed only after the new one is in place.

    The folder gets the mode ``mkdir`` would give it; files written into it with ``open()`` or
    the atomic writers get ordinary modes of their own. Every file is fsync'ed before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_replaceable(path, marker, option)  # fail before any work
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent))
    aside = None
    try:
        yield tmp
        os.chmod(tmp, dir_mode())
        _fsync_tree(tmp)
        check_replaceable(path, marker, option)  # the block may have taken long: check again
        if os.path.lexists(path):
            # Aside under an atomic-temp name: a crash here leaves a leftover the next run removes.
            aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent))
            os.replace(path, aside)
        try:
            os.replace(tmp, path)
        except OSError:
            if aside is not None:
                os.replace(aside, path)  # put the old folder back rather than lose both
                aside = None
            raise
        fsync_path(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None and aside.exists():
            shutil.rmtree(aside, ignore_errors=True)


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
