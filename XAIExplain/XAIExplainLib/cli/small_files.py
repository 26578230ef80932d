"""Read the small text files a run is given or finds (list files, manifests, journals) safely.

Such a file may be anything its name says it is not: a symbolic link to
``/dev/zero`` (an endless read that ends in ``MemoryError``), a FIFO (a read
that blocks for ever), a socket, or a text file of gigabytes.  Each is refused
by what it is, before it is opened for reading, and a regular file is read
only up to a limit.  The file is opened without blocking and checked again on
the open handle, so a file swapped for a FIFO between the check and the open
cannot hang the run either.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ..imaging.reading import file_kind

#: Largest list file read (a list of 100,000 paths is a few MB).
LIST_LIMIT = 16 << 20
#: Largest manifest or journal read (one input's files and its summary row).
MANIFEST_LIMIT = 4 << 20


class NotAFileError(ValueError):
    """``path`` is not a regular file of a sensible size; ``problem`` says what it is instead."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def regular_file_problem(path: str | os.PathLike) -> str:
    """Why ``path`` is not a readable regular file (links followed), or ``""`` when it is one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return ""
    return f"is {file_kind(path)}, not a regular file"


def read_small_text(path: str | os.PathLike, limit: int, encoding: str = "utf-8") -> str:
    """The text of the regular file ``path``, at most ``limit`` bytes; else :class:`NotAFileError`.

    A decoding error is left to the caller (``UnicodeDecodeError``), which knows
    what kind of text the file should hold.
    """
    problem = regular_file_problem(path)
    if problem:
        raise NotAFileError(path, problem)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise NotAFileError(path, f"cannot be read ({exc.strerror or exc})") from exc
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise NotAFileError(path, "is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise NotAFileError(path, f"is larger than {limit >> 20} MB, more than a file of this "
                                  "kind holds")
    return data.decode(encoding)


def plain_name(name: object) -> bool:
    """``name`` is a file name and nothing else: no folder part, not ``.``/``..``, no NUL."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\\" not in name and "\0" not in name and Path(name).name == name
            and not Path(name).is_absolute())
