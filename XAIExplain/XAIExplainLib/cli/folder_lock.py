"""One run per output folder: an exclusive lock held for the whole run.

Two runs writing into one folder would each write a ``summary.json`` of their
own inputs, and the second rename would silently drop the first run's rows;
they could also clean up each other's staged files.  A run therefore takes an
exclusive, non-blocking lock on ``.xaiexplain.lock`` in the folder and a second
run is refused with a message naming the process that holds it.  The
operating system releases the lock when the holder dies, also after SIGKILL,
so a killed run never leaves the folder locked.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".xaiexplain.lock"


class FolderLock:
    """``with FolderLock(folder):`` -- refuses a folder another run is writing into."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                holder = _read_holder(fd)
                os.close(fd)
                raise UserError(self.path.parent, f"is in use by another xaiexplain run{holder}; "
                                                  "wait for it to finish or choose another "
                                                  "--output-dir")
            # The previous holder may have removed the file between our open and our lock:
            # then we hold a lock on a file nobody else can see; take the one on disk instead.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)  # closing releases the lock
        self._fd = None


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except (OSError, AttributeError):
        return ""
    return f" (process {text})" if text.isdigit() else ""
