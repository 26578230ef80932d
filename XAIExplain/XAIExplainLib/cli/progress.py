"""A small progress display on stderr: a redrawn bar on a terminal, plain lines otherwise.

Cohort runs take minutes to hours, so the user needs to see which input is
being worked on and how far it is.  On a terminal one line is redrawn in place
(the batch position plus a bar for the current input); when stderr is a file or
a pipe (a job scheduler's log, a test) every event is one plain line and the
fine-grained per-input updates are dropped, so logs stay short and readable.
``--quiet`` turns the whole display off.  stdout is left to results.

Each finished input's line ends with the cohort's tally (done, failed,
skipped as complete), the rate of the inputs computed in this run and the
time left at that rate, the same for an in-process run and a Dask cluster,
where inputs finish in any order.
"""
from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

_BAR_WIDTH = 24
#: Without a terminal, a progress line at this interval while an input runs.
LINE_INTERVAL_S = 5.0


class Progress:
    """Progress of a batch of ``total`` inputs, and of the input being computed."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True,
                 interactive: bool | None = None):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        if interactive is None:
            isatty = getattr(self.stream, "isatty", None)
            interactive = bool(isatty and isatty())
        self.interactive = interactive
        self.index = 0
        self.name = ""
        self._drawn = False
        self._last_draw = 0.0
        # Never wider than the terminal: a wrapped line cannot be redrawn in place.
        self._width = max(20, min(shutil.get_terminal_size((120, 24)).columns - 1, 119))
        self.done = self.failed = self.skipped = 0
        self._began = self._input_began = self._last_line = time.monotonic()

    def start(self, index: int, name: str) -> None:
        """Input number ``index`` (1-based) named ``name`` begins."""
        self.index, self.name = index, name
        self._input_began = self._last_line = time.monotonic()
        if not self.enabled:
            return
        if self.interactive:
            self._draw(0.0, "starting")
        else:
            self._line(f"[{index}/{self.total}] {name}")

    def step(self, fraction: float, what: str = "") -> None:
        """The current input is ``fraction`` (0..1) done, with an estimate of the time left.

        Redrawn in place on a terminal (throttled to 10 per second); elsewhere (a log) a
        line every ``LINE_INTERVAL_S`` seconds while the input runs.
        """
        if not self.enabled:
            return
        now = time.monotonic()
        fraction = min(max(fraction, 0.0), 1.0)
        if not self.interactive:
            if fraction < 1.0 and now - self._last_line >= LINE_INTERVAL_S:
                self._last_line = now
                self._line(f"[{self.index}/{self.total}] {self.name}: {fraction * 100:3.0f}% {what}"
                           f"{self._estimate(fraction, now)}".rstrip())
            return
        if fraction < 1.0 and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        self._draw(fraction, what + self._estimate(fraction, now))

    def _estimate(self, fraction: float, now: float) -> str:
        """``, ETA 1:05`` for the current input once it is measurable (linear in the fraction done)."""
        elapsed = now - self._input_began
        if fraction <= 0.0 or fraction >= 1.0 or elapsed < 0.5:
            return ""
        return f", ETA {_clock(elapsed * (1.0 - fraction) / fraction)}"

    def finish(self, ok: bool, detail: str) -> None:
        """The current input ended: ``detail`` is its timing or its error."""
        if ok:
            self.done += 1
        else:
            self.failed += 1
        if not self.enabled:
            return
        status = "ok" if ok else "FAILED"
        self._clear()
        self._line(f"[{self.index}/{self.total}] {self.name}: {status} {detail}".rstrip()
                   + f" | {self.tally()}")

    def report(self, index: int, name: str, ok: bool, detail: str) -> None:
        """An input finished elsewhere (a cluster worker): its line and the tally."""
        self.index, self.name = index, name
        self.finish(ok, detail)

    def skip(self, index: int, name: str) -> None:
        """Input ``index`` is complete from an earlier run and is not computed again."""
        self.skipped += 1
        if self.enabled:
            self._clear()
            self._line(f"[{index}/{self.total}] {name}: skipped (complete from an earlier run)")

    def tally(self) -> str:
        """``3 done, 1 failed, 2 skipped; 2.5/min, ETA 0:48`` over the whole cohort."""
        text = f"{self.done} done, {self.failed} failed, {self.skipped} skipped"
        computed = self.done + self.failed
        elapsed = time.monotonic() - self._began
        left = self.total - computed - self.skipped
        if computed and elapsed > 0:
            rate = computed / elapsed * 60.0
            text += f"; {rate:.3g}/min"
            if left > 0:
                text += f", ETA {_clock(left / rate * 60.0)}"
        return text

    def message(self, text: str) -> None:
        """A line that must appear even mid-bar (a warning about the current input)."""
        if not self.enabled:
            return
        self._clear()
        self._line(text)

    def close(self) -> None:
        self._clear()

    def _draw(self, fraction: float, what: str) -> None:
        filled = int(round(fraction * _BAR_WIDTH))
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        text = f"[{self.index}/{self.total}] {self.name} [{bar}] {fraction * 100:3.0f}% {what}"
        self.stream.write("\r" + text[: self._width].ljust(self._width))
        self.stream.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._drawn = False

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
