"""The one progress bar of the long-running commands (getstream, send)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

REDRAW_INTERVAL = 0.1
"""Seconds between two redraws on a terminal (the last state is always drawn)."""


class ProgressBar:
    """`[####......] <status>` redrawn on one terminal line; elsewhere `on_tenth(bar)` is called
    at each tenth of the way (to log a line), or nothing happens.

    `done` and `total` count whatever the command counts (bytes, blobs); `bytes` counts bytes
    moved, for the rate. `status(bar)` writes the text after the bar.
    """

    def __init__(
        self,
        status: Callable[[ProgressBar], str],
        *,
        total: int = 0,
        stream: TextIO | None = None,
        tty: bool | None = None,
        on_tenth: Callable[[ProgressBar], None] | None = None,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.status = status
        self.total = total
        self.done = 0
        self.bytes = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.on_tenth = on_tenth
        self.width = width
        self.clock = clock
        self.started = clock()
        self._last_draw: float | None = None
        self._last_decile = -1
        self._pending = False  # a state not drawn yet
        self._on_line = False  # the cursor is after a drawn bar

    @property
    def rate(self) -> float:
        """Bytes per second since the start."""
        return self.bytes / max(self.clock() - self.started, 1e-6)

    @property
    def eta(self) -> float:
        """Seconds left at the current rate (bytes and done counted alike)."""
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else 0.0

    def update(self, done: int, total: int) -> None:
        """Absolute progress where `done` counts bytes (a download)."""
        self.done, self.total, self.bytes = done, total, done
        self._show()

    def advance(self, items: int, nbytes: int) -> None:
        """`items` more done, `nbytes` more bytes moved (an upload, counted in blobs)."""
        self.done += items
        self.bytes += nbytes
        self._show()

    def _show(self) -> None:
        if self.tty:
            now = self.clock()
            complete = self.done >= self.total
            if not complete and self._last_draw is not None and now - self._last_draw < REDRAW_INTERVAL:
                self._pending = True
                return
            self._last_draw = now
            self._draw()
            if complete:
                self.finish()  # end the line before anything else is logged
        elif self.on_tenth is not None:
            decile = 10 if not self.total else int(10 * self.done / self.total)
            if decile != self._last_decile:
                self._last_decile = decile
                self.on_tenth(self)

    def _draw(self) -> None:
        frac = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(frac * self.width)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.status(self)}")
        self.stream.flush()
        self._pending = False
        self._on_line = True

    def finish(self) -> None:
        """Draw the last state if it was skipped, and end the line."""
        if not self.tty:
            return
        if self._pending:
            self._draw()
        if self._on_line:
            self.stream.write("\n")
            self.stream.flush()
            self._on_line = False


def megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    return f"{seconds // 60}m{seconds % 60:02d}s"
