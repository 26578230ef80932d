"""Reading a progress report as a fraction: the one parser for the engine's callbacks.

The engine (``explain_volume``, ``predict_volume``) and the pipeline call ``progress(done, total)``;
older callers and wrappers call ``progress(fraction)`` or ``progress(done, total, message)``.
The command line's bar and the Slicer job both turn such a call into a fraction here.
"""
from __future__ import annotations


def progress_fraction(*args) -> float:
    """``(done, total[, message])`` -> done / total; ``(fraction[, message])`` -> fraction; in [0, 1].

    Booleans and text are ignored; a total of 0 (nothing to do) reads as the first number.
    """
    numbers = [float(a) for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    if len(numbers) >= 2 and numbers[1] > 0:
        fraction = numbers[0] / numbers[1]
    else:
        fraction = numbers[0] if numbers else 0.0
    return min(max(fraction, 0.0), 1.0)
