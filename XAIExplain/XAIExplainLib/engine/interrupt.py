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


def checkpoint() -> None:
    """Give the installed callback a chance to report progress or cancel (by raising)."""
    callback = _CALLBACK.get()
    if callback is not None:
        callback()


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
