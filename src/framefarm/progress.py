"""The progress display: a live bar on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_BAR_WIDTH = 28


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressDisplay:
    """Shows frames done of total, frames per second and time left.

    On a terminal the bar is redrawn in place at most `tty_interval` seconds apart; otherwise a
    plain line is written at most every `log_interval` seconds, so CI logs stay short.
    """

    def __init__(self, total: int, *, stream: TextIO | None = None, tty: bool | None = None,
                 tty_interval: float = 0.1, log_interval: float = 5.0) -> None:
        self.total = max(total, 0)
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._interval = tty_interval if self.tty else log_interval
        self._began = time.monotonic()
        self._last_draw = float("-inf")
        self._done = 0
        self._drawn = -1

    def line(self, done: int, elapsed: float) -> str:
        """The progress text for `done` frames after `elapsed` seconds."""
        rate = done / elapsed if elapsed > 0 and done else 0.0
        eta = (self.total - done) / rate if rate else None
        fraction = done / self.total if self.total else 1.0
        left = _clock(eta) if eta is not None else "?:??"
        if not self.tty:
            return (f"framefarm: {done}/{self.total} frames, {rate:.1f} fps, ETA {left} "
                    f"({fraction:.0%})")
        stats = f"{done}/{self.total} frames  {rate:5.1f} fps  ETA {left}"
        filled = int(_BAR_WIDTH * fraction)
        return f"[{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] {stats}"

    def update(self, done: int, *, elapsed: float | None = None) -> None:
        """Frames done so far, `elapsed` seconds into the work (default: since this display was
        made); draws when enough time has passed since the last drawing."""
        self._done = max(self._done, min(done, self.total))
        now = time.monotonic()
        if elapsed is not None:
            self._began = now - elapsed
        if now - self._last_draw >= self._interval and self._done != self._drawn:
            self._draw(now)

    def _draw(self, now: float) -> None:
        text = self.line(self._done, now - self._began)
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._last_draw = now
        self._drawn = self._done

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if self._done != self._drawn:
            self._draw(time.monotonic())
        if self.tty and self._drawn >= 0:
            self.stream.write("\n")
            self.stream.flush()
