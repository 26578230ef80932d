"""One cancel / heartbeat hook for the engine's long loops: ``checkpoint()``.

A caller that runs the engine in the background (the Slicer panel's job) must be able
to stop it within about a second and see that it is alive, even inside one method's
inner loop (Score-CAM's masked forwards, Ablation-CAM's ablations, occlusion's windows,
RISE's masks, KWC's kernels, CRM's channels, the samples of SmoothGrad, GradientSHAP and
Integrated Gradients, the sanity cascade, the engine's batches of slices or windows and
the phases of ``explain_image``). Those loops call
``checkpoint()`` once per chunk; it calls the callback installed with
``checkpoints(callback)`` in the current thread (a context variable, so two runs in two
threads never see each other's callback). The callback raises to cancel; without one,
``checkpoint()`` does nothing.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator

_CALLBACK: contextvars.ContextVar = contextvars.ContextVar("xaiexplain_checkpoint", default=None)


_PART: contextvars.ContextVar = contextvars.ContextVar("xaiexplain_part_progress", default=None)


def checkpoint(done: float | None = None, total: float | None = None) -> None:
    """Give the installed callback a chance to report progress or cancel (by raising).

    ``done`` of ``total``: how far a long method is inside the current batch (RISE's masks);
    the engine's batch loop turns it into progress of the whole run (:func:`part_progress`),
    so a run whose batches take minutes still reports every few seconds.
    """
    callback = _CALLBACK.get()
    if callback is not None:
        callback()
    if done is not None and total:
        part = _PART.get()
        if part is not None:
            part(min(max(float(done) / float(total), 0.0), 1.0))


@contextlib.contextmanager
def part_progress(report: Callable[[float], None] | None) -> Iterator[None]:
    """Install ``report(fraction of the current batch)`` for ``checkpoint(done, total)`` calls in this context."""
    token = _PART.set(report)
    try:
        yield
    finally:
        _PART.reset(token)


@contextlib.contextmanager
def checkpoints(callback: Callable[[], None] | None) -> Iterator[None]:
    """Install ``callback`` for ``checkpoint()`` calls made in this context; the previous one afterwards."""
    if callback is not None and not callable(callback):
        raise TypeError("the checkpoint callback must be callable with no arguments")
    token = _CALLBACK.set(callback)
    try:
        yield
    finally:
        _CALLBACK.reset(token)
