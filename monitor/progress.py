"""A progress line for long offline jobs (`keywatch backtest`, `keywatch export`).

Only a person at a terminal wants it: when stderr is not a TTY (a pipe, a log file, a test
capturing output) nothing is written at all. The line is rewritten in place every few seconds
and erased when the job ends, so the job's own output starts on a clean line."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TextIO, TypeVar

__all__ = ["Progress"]

T = TypeVar("T")
_ERASE = "\x1b[K"  # clear to the end of the line: a shorter line leaves no tail of the last one


class Progress:
    """`update(done)` as the job advances; a line goes out at most once per `every` seconds."""

    def __init__(
        self,
        what: str,
        *,
        unit: str = "lines",
        total: int | None = None,
        stream: TextIO | None = None,
        every: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.unit, self.total = what, unit, total
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = _is_terminal(self._stream)
        self._every, self._clock = every, clock
        self._started = clock()
        self._due = self._started + every
        self._shown = False

    def update(self, done: int, total: int | None = None) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if now < self._due:
            return
        self._due = now + self._every
        if total is not None:
            self.total = total
        self._stream.write(f"\r{self.line(done, now - self._started)}{_ERASE}")
        self._stream.flush()
        self._shown = True

    def line(self, done: int, elapsed: float) -> str:
        """'backtest: 120,000 of 278,000 lines (43%), 9,800 lines/s, ~16 s left'."""
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{self.what}: {done:,}"
        if self.total:
            text += f" of {self.total:,} {self.unit} ({done / self.total:.0%})"
        else:
            text += f" {self.unit}"
        text += f", {rate:,.0f} {self.unit}/s"
        if self.total and rate > 0 and done < self.total:
            text += f", ~{(self.total - done) / rate:,.0f} s left"
        return text

    def counted(self, items: Iterable[T]) -> Iterator[T]:
        """`items`, advancing the count with each; the line is erased when they run out."""
        try:
            for done, item in enumerate(items, 1):
                self.update(done)
                yield item
        finally:
            self.close()

    def close(self) -> None:
        if self._shown:
            self._stream.write(f"\r{_ERASE}")
            self._stream.flush()
            self._shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or exotic stream: nobody is watching it
        return False
