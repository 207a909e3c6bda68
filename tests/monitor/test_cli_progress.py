"""The progress line of long `backtest` and `export` runs: on a terminal, every few seconds, with
what is done, the total and the rate; nothing at all when stderr is not a terminal."""

from __future__ import annotations

import asyncio
import io
import os
import pty
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import pytest

from alerts.offline.backtest import read_input, run_backtest
from monitor.cli import main
from monitor.clock import FakeClock
from monitor.progress import Progress
from monitor.settings import Settings


@contextmanager
def terminal() -> Iterator[tuple[TextIO, FakeClock, list[str]]]:
    """A real pseudo-terminal to write to, what reached it, and a clock to move."""
    leader, follower = pty.openpty()
    seen: list[str] = []
    with os.fdopen(follower, "w") as stream:
        yield stream, FakeClock(100.0), seen
    chunks = []
    while True:  # everything written, until the closed follower ends the stream (EIO on Linux)
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    seen.append(b"".join(chunks).decode())
    os.close(leader)


def test_nothing_is_written_when_stderr_is_not_a_terminal() -> None:
    stream, clock = io.StringIO(), FakeClock(100.0)
    progress = Progress("backtest", total=1000, stream=stream, clock=clock.monotonic)
    for done in range(0, 1001, 100):
        clock.advance(5)
        progress.update(done)
    progress.close()
    assert not progress.enabled and stream.getvalue() == ""


def test_on_a_terminal_a_line_every_few_seconds_then_erased() -> None:
    with terminal() as (stream, clock, seen):
        progress = Progress("backtest", total=1000, stream=stream, clock=clock.monotonic, every=2.0)
        assert progress.enabled
        clock.advance(1)
        progress.update(50)  # too soon: nothing yet
        clock.advance(1)
        progress.update(100)
        clock.advance(1)
        progress.update(150)  # a second after the last line: nothing
        clock.advance(1)
        progress.update(200)
        progress.close()
    out = seen[0]
    assert out.count("\r") == 3  # two lines and the erasing
    assert "backtest: 100 of 1,000 lines (10%), 50 lines/s, ~18 s left" in out
    assert "backtest: 200 of 1,000 lines (20%), 50 lines/s, ~16 s left" in out
    assert "150" not in out and out.endswith("\r\x1b[K")


def test_without_a_total_it_counts_and_gives_the_rate() -> None:
    assert Progress("export", stream=io.StringIO()).line(12_000, 4.0) == "export: 12,000 lines, 3,000 lines/s"


def test_counted_passes_everything_through_and_erases_the_line_at_the_end() -> None:
    with terminal() as (stream, clock, seen):
        progress = Progress("export", stream=stream, clock=clock.monotonic, every=2.0)

        def lines() -> Iterator[int]:
            for n in range(10):
                clock.advance(1)
                yield n

        assert list(progress.counted(lines())) == list(range(10))
    out = seen[0]
    assert "export: 2 lines" in out and out.endswith("\r\x1b[K")


def _history(tmp_path: Path, hours: int = 6) -> Path:
    lines = [
        f'{{"ts": {1_780_000_000 + 60 * i}, "provider": "p", "token": "t", "requests": 1, "cost_usd": 0.01}}'
        for i in range(hours * 60)
    ]
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_backtest_reports_how_far_it_is(tmp_path: Path) -> None:
    with _history(tmp_path).open("rb") as f:
        data = read_input(f)
    heard: list[tuple[int, int]] = []
    asyncio.run(run_backtest(data, Settings(), progress=lambda done, total: heard.append((done, total))))
    done = [d for d, _ in heard]
    assert done == sorted(done) and done[-1] == len(data.usage) == 360
    assert {total for _, total in heard} == {360}


def test_a_captured_backtest_and_export_write_no_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["backtest", "--input", str(_history(tmp_path)), "--output", str(tmp_path / "out.jsonl")]) == 0
    )
    err = capsys.readouterr().err
    assert "backtest (signals: all): 360 usage lines replayed" in err
    assert "\r" not in err and " lines (" not in err
    cfg = tmp_path / "kw.yaml"
    cfg.write_text(
        f"database: sqlite:///{tmp_path / 'kw.db'}\nproviders:\n  - name: lz\n    kind: laozhang\n"
        "    base_url: http://127.0.0.1:9\n    admin_token: sim-admin-token\n"
    )
    assert main(["-c", str(cfg), "export", "--output", str(tmp_path / "export.jsonl")]) == 0
    assert capsys.readouterr().err == ""
