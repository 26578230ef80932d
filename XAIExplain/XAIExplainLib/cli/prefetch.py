"""Read the next inputs in background threads while the current one computes.

Reading a compressed NIfTI or a DICOM series of hundreds of slices takes
seconds; a GPU that waits for it sits idle.  ``prefetch`` keeps up to ``jobs``
reads in flight ahead of the consumer (SimpleITK releases the GIL while it
decodes), and yields results strictly in input order.  Computation stays in
the caller's thread: only IO runs in the pool, so there is never more than one
model call at a time and memory holds at most ``jobs`` volumes in waiting.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

Item = TypeVar("Item")
Loaded = TypeVar("Loaded")


def prefetch(items: Sequence[Item], read: Callable[[Item], Loaded],
             jobs: int = 1) -> Iterator[tuple[Item, Loaded | None, BaseException | None]]:
    """Yield ``(item, read(item), None)`` or ``(item, None, error)`` for each item, in order.

    ``jobs`` = 0 reads in the calling thread, one item at a time.  A failed
    read is handed over as the error, never raised here, so one bad file does
    not stop the others.  Leaving the loop early cancels reads not yet started.
    """
    if jobs < 0:
        raise ValueError(f"jobs must be >= 0, got {jobs}")
    if jobs == 0:
        for item in items:
            yield (item, *_attempt(read, item))
        return
    pending: deque[tuple[Item, Future]] = deque()
    upcoming = iter(items)

    def submit_next(pool: ThreadPoolExecutor) -> None:
        for item in upcoming:
            pending.append((item, pool.submit(_attempt, read, item)))
            return

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="xaiexplain-read") as pool:
        try:
            for _ in range(jobs + 1):  # the first input plus ``jobs`` ahead
                submit_next(pool)
            while pending:
                item, future = pending.popleft()
                yield (item, *future.result())
                submit_next(pool)  # only now: while the caller computed, ``jobs`` were ahead
        finally:
            for _, future in pending:
                future.cancel()

def _attempt(read: Callable[[Item], Loaded],
             item: Item) -> tuple[Loaded | None, BaseException | None]:
    try:
        return read(item), None
    except Exception as exc:  # noqa: BLE001 - handed to the consumer, which reports it
        return None, exc
