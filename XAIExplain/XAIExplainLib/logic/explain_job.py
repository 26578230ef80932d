"""A background explanation run: compute on a worker thread, publish on the main thread.

Slicer's panel must stay responsive during a run of minutes, so the compute phase
(model + engine on arrays already copied out of the scene) runs on a worker thread,
while everything that touches MRML stays on the thread that calls :meth:`ExplainJob.finish`
(Slicer's main thread)::

    job = logic.startExplainVolume(volumeNode, "ct-phase-2d", methods=["gradcam"])
    job.progress      # (fraction, message), updated by the worker
    job.done          # True once the compute phase ended (finished, failed or cancelled)
    job.cancel()      # the worker stops at its next checkpoint (well under a second)
    nodes = job.finish()   # publishes into the scene and returns the output nodes,
                           # or raises ExplainCancelled / the run's own error

Cancel and progress reach inside the engine's long loops through
``engine.interrupt.checkpoint``: the worker installs a callback that raises
:class:`ExplainCancelled` once :meth:`ExplainJob.cancel` was called and records a
heartbeat, so the progress changes at least once per chunk of work.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable


class ExplainCancelled(Exception):
    """Raised by ``explainVolume`` / ``ExplainJob.finish`` when the run was cancelled."""


CANCELLED_MESSAGE = "Cancelled: the scene was left unchanged"
#: a heartbeat from inside a loop is recorded at most this often (seconds)
HEARTBEAT_INTERVAL = 0.2


def out_of_memory_message(error: BaseException) -> str | None:
    """A clear message for a CUDA out-of-memory error (after the engine's smaller batches failed too)."""
    if "torch" not in sys.modules:  # no engine ran, so no GPU memory was asked for
        return None
    from ..engine.devices import is_out_of_memory

    if not is_out_of_memory(error):
        return None
    text = str(error)
    return ("The GPU ran out of memory even with the smallest batch. Choose the CPU as device, a layer "
            "nearer the output (smaller activations), or close other programs using the GPU. "
            f"({text.splitlines()[0] if text else type(error).__name__})")


class ExplainJob:
    """One run: ``compute()`` on a worker thread, then ``publish(report)`` in :meth:`finish`.

    ``compute(report)`` must not touch the scene; ``report(fraction, message)`` records
    progress and raises :class:`ExplainCancelled` after :meth:`cancel`. ``publish(report)``
    runs on the caller's thread inside :meth:`finish`. ``on_end()`` is called once, when
    :meth:`finish` has published or raised (the logic frees its one-run slot there).
    """

    def __init__(self, compute: Callable, publish: Callable, on_end: Callable | None = None,
                 description: str = "Explaining", progress: Callable | None = None):
        self._compute, self._publish, self._on_end = compute, publish, on_end
        self._progress = progress
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._updates: list = []
        self._result = None
        self._error: BaseException | None = None
        self._finished = False
        self._started = time.perf_counter()
        self._beats = 0
        self._record(0.0, description)
        self._thread = threading.Thread(target=self._run, name="XAIExplain run", daemon=True)

    def start(self) -> "ExplainJob":
        self._thread.start()
        return self

    # ------------------------------------------------------------- state

    @property
    def progress(self) -> tuple:
        """``(fraction, message)`` of the latest update."""
        with self._lock:
            return self._updates[-1][1:]

    @property
    def updates(self) -> list:
        """Every update so far as ``(seconds since start, fraction, message)``."""
        with self._lock:
            return list(self._updates)

    @property
    def done(self) -> bool:
        """True once the compute phase ended: finished, failed or cancelled."""
        return self._done.is_set()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        """True once :meth:`finish` published or raised; the job cannot publish again."""
        return self._finished

    @property
    def elapsed(self) -> float:
        """Seconds since the job started."""
        return time.perf_counter() - self._started

    def cancel(self) -> None:
        """Ask the run to stop; the worker stops at its next checkpoint and :meth:`finish` raises ExplainCancelled."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the compute phase ended (or ``timeout`` seconds passed); returns :attr:`done`."""
        return self._done.wait(timeout)

    # ------------------------------------------------------------ phases

    def report(self, fraction: float, message: str) -> None:
        """Record progress (any thread); raises ExplainCancelled once cancel was asked for."""
        self.check_cancelled()
        self._record(float(min(max(fraction, 0.0), 1.0)), message)

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise ExplainCancelled(CANCELLED_MESSAGE)

    def _record(self, fraction: float, message: str) -> None:
        with self._lock:
            if self._updates:
                fraction = max(fraction, self._updates[-1][1])  # progress never goes back
            self._updates.append((time.perf_counter() - self._started, fraction, message))
            self._beats = 0

    def _heartbeat(self) -> None:
        """The engine's checkpoint callback: cancel, and show that work goes on inside a long step."""
        self.check_cancelled()
        with self._lock:
            seconds, fraction, message = self._updates[-1]
            if time.perf_counter() - self._started - seconds < HEARTBEAT_INTERVAL:
                return
            self._beats += 1
            base = message.split(" [step ")[0]
            self._updates.append((time.perf_counter() - self._started, fraction, f"{base} [step {self._beats}]"))

    def _run(self) -> None:
        from ..engine.interrupt import checkpoints

        try:
            with checkpoints(self._heartbeat):
                self._result = self._compute(self.report)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread by finish()
            self._error = error
        finally:
            self._done.set()

    def finish(self, progress: Callable | None = None):
        """Main thread: publish the outputs and return them, or raise ExplainCancelled / the run's error.

        ``progress(fraction, message)`` (default: the one given at start) sees the publish
        phase's updates; raising from it cancels the publish (the scene transaction rolls back). Raises RuntimeError
        while the compute phase still runs, and on a second call.
        """
        if self._finished:
            raise RuntimeError("this run has already been finished (its outputs were published or it raised); "
                               "start a new run")
        if not self._done.is_set():
            raise RuntimeError("the run is still computing: wait until job.done is True (or cancel it)")
        self._finished = True
        progress = self._progress if progress is None else progress
        try:
            if self._cancel.is_set():
                raise ExplainCancelled(CANCELLED_MESSAGE)
            if self._error is not None:
                message = out_of_memory_message(self._error)
                if message is not None:
                    raise RuntimeError(message) from self._error
                raise self._error

            def report(fraction, message):
                self.report(fraction, message)
                if progress is not None:
                    progress(*self.progress)
                self.check_cancelled()

            return self._publish(self._result, report)
        finally:
            self._result = None
            if self._on_end is not None:
                self._on_end(self)
