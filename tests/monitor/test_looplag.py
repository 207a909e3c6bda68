"""The event loop's lag: the sliding worst on an injected clock, a real loop that is blocked and
seen to be, and its export as a live family that never re-renders the cached /metrics body."""

from __future__ import annotations

import asyncio
import gzip
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from monitor.clock import FakeClock
from monitor.looplag import LoopLag
from monitor.metrics import Exposition, Family
from monitor.policy import PolicyBook
from tests.docs.live import live_daemon


def samples(body: bytes) -> dict[str, float]:
    """name{labels} -> value, labels sorted (enough to pick one series out of a small body)."""
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[s.name + str(sorted(s.labels.items()))] = s.value
    return out


def test_worst_is_the_worst_sample_within_the_window() -> None:
    clock = FakeClock(0.0)
    lag = LoopLag(window=60.0, clock=clock.monotonic)
    assert lag.worst() == 0.0
    lag.observe(0.05)
    clock.advance(10)
    lag.observe(0.4)
    clock.advance(20)
    lag.observe(0.01)
    assert lag.worst() == 0.4
    clock.advance(40.5)  # the 0.4 s stall is now 60.5 s old
    assert lag.worst() == 0.01
    clock.advance(60)
    assert lag.worst() == 0.0  # nothing sampled in the last minute: nothing to report


def test_an_early_wakeup_is_no_negative_lag() -> None:
    lag = LoopLag(clock=FakeClock(0.0).monotonic)
    lag.observe(-0.001)
    assert lag.worst() == 0.0


async def test_a_blocked_loop_shows_as_lag() -> None:
    lag = LoopLag(interval=0.05)
    lag.start()
    try:
        await asyncio.sleep(0)  # the sampler is now waiting on its timer
        time.sleep(0.3)  # a synchronous stretch on the loop, as a heavy rule evaluation would be  # noqa: ASYNC251
        await asyncio.sleep(0.12)  # the overdue timer fires, and one more after it
        assert lag.worst() >= 0.25  # due at most 0.05 s after the stall began, run 0.3 s after it
    finally:
        await lag.stop()
    await lag.stop()  # stopping twice is harmless (Daemon.stop after a failed start)


def test_live_families_are_fresh_at_every_scrape_without_a_re_render() -> None:
    clock = FakeClock(0.0)
    lag = LoopLag(clock=clock.monotonic)
    exp = Exposition(PolicyBook([]))
    renders = []

    def cached_source() -> list[Family]:
        renders.append(1)
        return [Family("keywatch_notifications_total", "counter", "n", [({"outcome": "sent"}, 1)])]

    exp.add_source(cached_source)
    exp.add_live_source(lag.families)
    lag.observe(0.02)
    first = exp.render()
    lag.observe(0.7)
    second, second_gz = exp.render(), exp.render_gzip()
    assert renders == [1]  # the per-poll body was built once and reused
    assert samples(first)["keywatch_event_loop_lag_seconds[]"] == 0.02
    assert samples(second)["keywatch_event_loop_lag_seconds[]"] == 0.7
    assert gzip.decompress(second_gz) == second  # one valid gzip stream, live tail included
    lag.observe(0.9)
    clock.advance(1)
    assert gzip.decompress(exp.render_gzip()) == exp.render()
    assert samples(exp.render())["keywatch_event_loop_lag_seconds[]"] == 0.9
    exp.invalidate()
    assert gzip.decompress(exp.render_gzip()) == exp.render()
    assert renders == [1, 1]


async def test_the_daemon_exports_its_loop_lag_and_the_rules_time_per_cycle(tmp_path: Path) -> None:
    async with live_daemon(tmp_path) as live:  # one poll, with the alert engine listening
        await asyncio.sleep(live.daemon.loop_lag.interval * 2)  # the sampler ran at least once
        async with live.client() as client:
            body = (await client.get("/metrics")).content
    parsed = samples(body)
    assert parsed["keywatch_rules_duration_seconds_count[('provider', 'lz')]"] == 1
    assert parsed["keywatch_rules_duration_seconds_sum[('provider', 'lz')]"] > 0
    assert "keywatch_event_loop_lag_seconds[]" in parsed
