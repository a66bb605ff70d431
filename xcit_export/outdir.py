"""One writer per output folder: a lock held for the length of a run, and the leftovers of dead
runs removed by the next one.

Two runs into one ``--out`` would otherwise interleave: the folder would end up holding whichever
report and artifacts were renamed into place last, possibly from different runs. As cargo does
for its build directory, a run takes an exclusive ``flock`` on ``<out>/.xcit-export.lock`` (Linux,
macOS) before it writes anything there and holds it until its report is written. A second run
waits, saying which folder and which process it waits for, or fails at once when asked not to wait.

Why ``flock``: the kernel releases it when the holder's last descriptor closes, which includes the
process dying of SIGKILL or a crash, so a lock never outlives its run and no stale-lock guessing
(pid files, timeouts) is needed (flock(2)). The pid written into the file is only for messages.
The lock file is never deleted: a run that unlinked it on exit could let a waiter (locking the old
inode) and a newcomer (creating a new one) both believe they hold the lock. Nor is it ever
truncated or followed: it is opened with ``O_NOFOLLOW`` and must be a regular file with one link,
so in a shared ``--out`` a symbolic (or hard) link planted under its name cannot make a run write
into another file; the pid is written over a fixed-width field at its start.

Holding the lock makes a run the folder's only writer, so it may remove what runs that died there
left behind: the ``.<name>.XXXXXXXX.xcit-export.tmp`` files and folders of the atomic writers (a
run killed while exporting leaves ``.onnx.*.xcit-export.tmp/``), and nothing else: the suffix names
this tool, so a user's own ``.x.abcdefgh.tmp`` stays. ``report merge``, ``bundle`` and ``gate``
only read a run folder and take no lock.

A run that fails before it wrote anything leaves the folder as it found it: a lock file it created
in an otherwise empty folder is removed (while still held), and so are the folders it created. A
waiter that was blocked on such a removed lock file sees, once it holds the lock, that the name no
longer points at the file it locked, and starts over on the new one, so removing it cannot let two
runs hold the lock at once.

Device-side rules apply (Python 3.8, no torch/onnx/click imports).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, List

from .errors import OutputDirBusyError, OutputDirError
from .io import ensure_writable_dir, is_atomic_temp

LOCK_FILE = ".xcit-export.lock"
_PID_FIELD = 20  # the pid, space-padded, then a newline: written in place, never truncated
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


def _holder(fd: int) -> str:
    """'pid N' of the run that holds the lock, from the lock file (best effort: for messages)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown"


def remove_dead_temps(folder: Path) -> List[str]:
    """Remove the atomic writers' temporaries directly inside ``folder``; return their names.

    Only for the holder of the folder's lock: every run writes its stage folders and reports
    there through :mod:`xcit_export.io`, so with no other run alive such names are leftovers.
    """
    removed = []
    for entry in sorted(Path(folder).iterdir()):
        name = entry.name
        # Not io.ensure_writable_dir's ".write-test-*" probe: a run about to wait for the lock
        # makes one, and deleting it under that run would fail its check.
        if not is_atomic_temp(name):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise OutputDirError(f"cannot remove '{entry}', left by an interrupted run ({exc.strerror or exc}); "
                                 f"remove it by hand or choose another folder with --out") from None
        removed.append(name)
    return removed


def _open_lock(lock_path: Path, folder: Path, option: str) -> int:
    """Open (or create) the lock file without following a link there, and check it is ours to use:
    a regular file with one link. Its content is never truncated."""
    import stat

    nofollow = getattr(os, "O_NOFOLLOW", 0)
    refuse = (f"the lock file '{lock_path}' is {{what}}, not a plain file: xcit-export will not write through it "
              f"(in a shared folder, a link there could make it overwrite another file); remove it, or choose "
              f"another folder with {option}")
    try:
        fd = os.open(str(lock_path), os.O_RDWR | os.O_CREAT | nofollow, 0o666)  # 0o666 & ~umask, like open()
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(lock_path):
            raise OutputDirError(refuse.format(what="a symbolic link")) from None
        raise OutputDirError(f"cannot open the lock file '{lock_path}' ({exc.strerror or exc}); choose another "
                             f"folder with {option}") from None
    st = os.fstat(fd)
    what = None if stat.S_ISREG(st.st_mode) else "not a regular file"
    if what is None and st.st_nlink != 1:
        what = f"a file with {st.st_nlink} hard links"
    if what is not None:
        os.close(fd)
        raise OutputDirError(refuse.format(what=what))
    return fd


def _write_pid(fd: int, text: str) -> None:
    """Write ``text`` (a pid, or "" when done) over the fixed-width field at the file's start."""
    os.pwrite(fd, (text[:_PID_FIELD].ljust(_PID_FIELD) + "\n").encode("ascii"), 0)


def _missing_dirs(path: Path) -> List[Path]:
    """The folders of ``path`` (it included) that do not exist yet, outermost first."""
    out: List[Path] = []
    for p in [path, *path.parents]:
        if os.path.lexists(p):
            break
        out.append(p)
    return out[::-1]


def _still_named(fd: int, lock_path: Path) -> bool:
    """Whether ``lock_path`` still names the file ``fd`` holds (not removed or replaced meanwhile)."""
    try:
        named = os.stat(str(lock_path), follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)


def _lock(folder: Path, wait: bool, progress: Callable[[str], None], option: str) -> int:
    """Open and ``flock`` the folder's lock file, waiting (or not) for its holder; the descriptor."""
    import fcntl

    lock_path = folder / LOCK_FILE
    while True:
        fd = _open_lock(lock_path, folder, option)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in _BUSY:
                    raise OutputDirError(f"cannot lock the output folder '{folder}' ({exc.strerror or exc}); its file "
                                         f"system may not support locks: choose another folder with {option}") from None
                busy = f"output folder '{folder}' is in use by another xcit-export run ({_holder(fd)})"
                if not wait:
                    raise OutputDirBusyError(f"{busy}; wait for it to finish, or choose another folder with "
                                             f"{option}") from None
                progress(f"{busy}; waiting for it to finish (--no-wait fails at once instead)")
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        if _still_named(fd, lock_path):
            return fd
        os.close(fd)  # its holder removed it (a run that wrote nothing): lock the new one
        ensure_writable_dir(folder, option=option)


def _leave_as_found(folder: Path, fd: int, created: List[Path], lock_was_there: bool) -> None:
    """After a run that failed: if the folder holds nothing but a lock file this run created, remove
    it (still held) and the folders this run created, so a failed run leaves no lone lock file."""
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return
    if lock_was_there or names != [LOCK_FILE]:
        return
    with contextlib.suppress(OSError):
        (folder / LOCK_FILE).unlink()
        for d in reversed(created):
            d.rmdir()


@contextlib.contextmanager
def locked_output_dir(path: Path, *, wait: bool = True, progress: Callable[[str], None] = lambda msg: None,
                      option: str = "--out") -> Iterator[Path]:
    """Hold ``path``'s lock for the block, creating the folder if needed; yield the folder.

    Another run holding it: with ``wait``, report that through ``progress`` and block until it
    ends (Ctrl-C stops waiting); without, raise :class:`OutputDirBusyError` naming the folder and
    that run's pid. Once held, leftovers of dead runs are removed (:func:`remove_dead_temps`). A
    block that raises having written nothing leaves the folder as it was found (no lone lock file,
    no folder this run created).
    """
    created = _missing_dirs(Path(path).absolute())
    folder = ensure_writable_dir(Path(path), option=option)
    try:
        import fcntl  # noqa: F401 - only to know whether this platform has flock
    except ImportError:  # Windows: no flock; say so rather than pretend
        progress(f"Output: '{folder}' is not locked against other runs (no fcntl on this platform)")
        yield folder
        return
    lock_was_there = os.path.lexists(folder / LOCK_FILE)
    fd = _lock(folder, wait, progress, option)
    try:
        _write_pid(fd, str(os.getpid()))
        removed = remove_dead_temps(folder)
        if removed:
            progress(f"Output: removed {len(removed)} leftover(s) of an interrupted run: {', '.join(removed)}")
        try:
            yield folder
        except BaseException:
            _leave_as_found(folder, fd, created, lock_was_there)
            raise
        finally:
            with contextlib.suppress(OSError):
                _write_pid(fd, "")  # a pid read later is then never a finished run's
    finally:
        os.close(fd)  # releases the lock
