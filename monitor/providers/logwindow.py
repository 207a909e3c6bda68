"""Closed, overlapping time windows over a relay's request log.

Offset paging of a newest-first log shifts while rows arrive, and a row may be written a little
after its timestamp. So each poll reads a closed window that ends `lag` seconds in the relay's
past and starts `overlap` seconds before the previous window's end: a late row is read by the
next window, a shifted page repeats rows rather than skipping them, and the store keeps each row
once (by request id). A long gap (a restart, an outage) is caught up `max_span` at a time.

The cursor (the last window's end) lives in memory; after a restart it resumes from the store
(`UsageReader.log_cursor`, the newest stored row) when the daemon passes it in, else the first
window reaches `initial_lookback` back and the store drops what it already has."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LogWindow"]


@dataclass(slots=True)
class LogWindow:
    lag: float
    overlap: float
    max_span: float
    initial_lookback: float
    cursor: float | None = None  # the end of the last window read completely
    align: int = 1  # window edges on this grid (OpenAI buckets: 60 s)

    def next(self, relay_now: float) -> tuple[int, int] | None:
        """(start, end) of the window to read now, or None when there is nothing new yet."""
        end = self._floor(relay_now - self.lag)
        start = self._floor(
            end - self.initial_lookback if self.cursor is None else self.cursor - self.overlap
        )
        if end - start > self.max_span:
            end = self._floor(start + self.max_span)
        if end <= start or (self.cursor is not None and end <= self.cursor):
            return None
        return start, end

    def advance(self, end: float) -> None:
        """The window ending at `end` was read completely."""
        self.cursor = end if self.cursor is None else max(self.cursor, end)

    def _floor(self, ts: float) -> int:
        return int(math.floor(ts / self.align) * self.align)
