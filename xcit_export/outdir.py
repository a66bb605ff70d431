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
left behind: the ``.<name>.XXXXXXXX.xcit-export.tmp`` files and folders of the atomic writers (a run killed
while exporting leaves ``.onnx.*.xcit-export.tmp/``). ``report merge``, ``bundle`` and ``gate`` only read a
run folder and take no lock.

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


@contextlib.contextmanager
def locked_output_dir(path: Path, *, wait: bool = True, progress: Callable[[str], None] = lambda msg: None,
                      option: str = "--out") -> Iterator[Path]:
    """Hold ``path``'s lock for the block, creating the folder if needed; yield the folder.

    Another run holding it: with ``wait``, report that through ``progress`` and block until it
    ends (Ctrl-C stops waiting); without, raise :class:`OutputDirBusyError` naming the folder and
    that run's pid. Once held, leftovers of dead runs are removed (:func:`remove_dead_temps`).
    """
    folder = ensure_writable_dir(Path(path), option=option)
    try:
        import fcntl
    except ImportError:  # Windows: no flock; say so rather than pretend
        progress(f"Output: '{folder}' is not locked against other runs (no fcntl on this platform)")
        yield folder
        return
    lock_path = folder / LOCK_FILE
    fd = _open_lock(lock_path, folder, option)
    held = False
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
        held = True
        _write_pid(fd, str(os.getpid()))
        removed = remove_dead_temps(folder)
        if removed:
            progress(f"Output: removed {len(removed)} leftover(s) of an interrupted run: {', '.join(removed)}")
        yield folder
    finally:
        if held:
            with contextlib.suppress(OSError):
                _write_pid(fd, "")  # a pid read later is then never a finished run's
        os.close(fd)  # releases the lock
