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
inode) and a newcomer (creating a new one) both believe they hold the lock.

Holding the lock makes a run the folder's only writer, so it may remove what runs that died there
left behind: the ``.<name>.XXXXXXXX.tmp`` files and folders of the atomic writers (a run killed
while exporting leaves ``.onnx.*.tmp/``). ``report merge``, ``bundle`` and ``gate`` only read a
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
    try:
        fd = os.open(str(lock_path), os.O_RDWR | os.O_CREAT, 0o666)  # 0o666 & ~umask, like open()
    except OSError as exc:
        raise OutputDirError(f"cannot open the lock file '{lock_path}' ({exc.strerror or exc}); choose another "
                             f"folder with {option}") from None
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
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        removed = remove_dead_temps(folder)
        if removed:
            progress(f"Output: removed {len(removed)} leftover(s) of an interrupted run: {', '.join(removed)}")
        yield folder
    finally:
        if held:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # a pid read later is then never a finished run's
        os.close(fd)  # releases the lock
