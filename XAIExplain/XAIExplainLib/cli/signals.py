"""SIGTERM ends a run the way Ctrl-C does: staged and temporary files are removed first.

Job schedulers and ``kill`` stop a process with SIGTERM, whose default action
ends Python at once, without running the ``finally`` blocks that remove a
half-written ``.<name>.partial.nrrd`` or an input's staging folder.  While
a run is in progress SIGTERM is turned into :class:`Terminated`, a
``KeyboardInterrupt``, so the same clean-up runs and the exit status is the
interrupted one.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated(f"received signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
