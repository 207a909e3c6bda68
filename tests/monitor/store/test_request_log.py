"""Request-log rows through ingest and the store: stored once however often they are fetched,
counted once (requests for every token, cost for tokens whose spend comes from logs), kept for
the raw retention, and the resume point of log polling after a restart."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from monitor.ingest import ingest
from monitor.model import Observation, PollResult, RequestRecord
from monitor.settings import Retention
from monitor.store import PollRun, UsageReader, UsageWriter, open_engine, prune
from monitor.store.db import MIGRATIONS
from monitor.tokens import TokenState

UTC = ZoneInfo("UTC")
T0 = 1_794_300_000.0


def rec(name: str, rid: str, ts: float, cost: float = 0.5, token_id: str | None = None) -> RequestRecord:
    return RequestRecord(token_id, name, ts, "gpt-4o-mini", "192.0.2.1", 100, 20, cost, 900, rid)


def tokens(unlimited: bool = True) -> list[Observation]:
    return [
        Observation(
            "1", "dev-a-x-2026-01", "active", total_usd=None if unlimited else 10.0, spend_from_logs=unlimited
        ),
        Observation("2", "dev-b-x-2026-01", "active", total_usd=3.0),
    ]


class Store:
    def __init__(self, url: str) -> None:
        self.engine = open_engine(url)
        self.writer, self.reader = UsageWriter(self.engine), UsageReader(self.engine)
        self.states: dict[str, TokenState] = {}
        self.watching: float | None = None

    def cycle(self, now: float, requests: list[RequestRecord], observations: list[Observation] | None = None):  # type: ignore[no-untyped-def]
        result = PollResult(observations or tokens(), requests=requests)
        cycle = ingest(self.states, result, provider="p", now=now, tz=UTC, watching_since=self.watching)
        self.states = self.writer.write_cycle(cycle, PollRun("p", "oneapi", now, now, True, True), {})
        self.watching = self.watching or now
        return cycle


def test_the_migration_is_appended_not_edited() -> None:
    assert [m.name for m in MIGRATIONS][:2] == ["0001_initial", "0002_request_log"]


def test_rows_before_watching_began_are_a_baseline(store_url: str) -> None:
    s = Store(store_url)
    cycle = s.cycle(T0, [rec("dev-a-x-2026-01", "r1", T0 - 30), rec("dev-b-x-2026-01", "r2", T0 - 20)])
    assert not cycle.spend and s.reader.count_rows("request_log") == 2
    assert s.states["1"].spend_total_usd == 0 and s.states["1"].usage_known


@pytest.mark.parametrize("by_key", [True, False])
def test_a_row_fetched_again_is_stored_and_counted_once(
    store_url: str, by_key: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not by_key:  # the path many candidates take: one time range read
        monkeypatch.setattr("monitor.store.requestlog._BY_KEY", 0)
    s = Store(store_url)
    s.cycle(T0, [])
    rows = [
        rec("dev-a-x-2026-01", "r1", T0 + 10),
        rec("dev-a-x-2026-01", "r2", T0 + 20),
        rec("dev-b-x-2026-01", "r3", T0 + 30),
    ]
    first = s.cycle(T0 + 60, rows)
    again = s.cycle(T0 + 120, [*rows, rows[0], rec("dev-a-x-2026-01", "r4", T0 + 90, cost=0.25)])
    assert s.reader.count_rows("request_log") == 4
    a, b = s.states["1"], s.states["2"]
    assert a.spend_total_usd == pytest.approx(1.25) and a.requests_total == 3
    # the other token's money comes from its counter; its rows add requests only
    assert b.spend_total_usd == pytest.approx(3.0) and b.requests_total == 1
    assert {x.token_id: x.cost_usd for x in first.spend} == {"1": 1.0, "2": 0.0}
    assert [(x.token_id, x.cost_usd, x.requests) for x in again.spend] == [("1", 0.25, 1)]
    loaded = s.reader.token_states("p")["p"]
    assert loaded["1"].spend_total_usd == pytest.approx(1.25) and loaded["1"].requests_total == 3


def test_rows_name_their_token_by_id_or_by_a_unique_name(store_url: str) -> None:
    s = Store(store_url)
    s.cycle(T0, [])
    cycle = s.cycle(T0 + 60, [rec("", "r1", T0 + 5, token_id="1"), rec("nobody", "r2", T0 + 6)])
    assert cycle.unresolved == 1 and s.states["1"].requests_total == 1


def test_new_tokens_count_their_first_rows(store_url: str) -> None:
    s = Store(store_url)
    s.cycle(T0, [])
    new = Observation("3", "dev-c-x-2026-01", "active", spend_from_logs=True)
    s.cycle(T0 + 60, [rec("dev-c-x-2026-01", "r9", T0 + 30, cost=2.0)], [*tokens(), new])
    assert s.reader.token_states("p")["p"]["3"].spend_total_usd == pytest.approx(2.0)


def test_log_cursor_and_retention(store_url: str) -> None:
    s = Store(store_url)
    assert s.reader.log_cursor("p") is None
    s.cycle(T0, [rec("dev-a-x-2026-01", "r1", T0 - 30), rec("dev-a-x-2026-01", "r2", T0 - 10)])
    assert s.reader.log_cursor("p") == T0 - 10 and s.reader.log_cursor("other") is None
    pruned = prune(s.engine, Retention(raw=20, hourly=400 * 86400), now=T0)
    assert pruned.requests == 1 and s.reader.count_rows("request_log") == 1
    (kept,) = s.reader.requests(s.states["1"].pk or 0, 0)
    assert kept.request_id == "r2" and kept.ip == "192.0.2.1" and kept.elapsed_ms == 900


def test_a_log_spend_token_missing_from_one_list_still_counts_its_rows(store_url: str) -> None:
    """A paging shift or a skipped entry leaves a log-spend token out of one poll's list: its
    rows are stored that cycle, so they must be costed that cycle (the store has seen them after)."""
    s = Store(store_url)
    s.cycle(T0, [], tokens(unlimited=True))
    s.cycle(T0 + 60, [rec("dev-a-x-2026-01", "r1", T0 + 30, cost=1.0)], tokens(unlimited=True))
    only_b = [o for o in tokens(unlimited=True) if o.token_id == "2"]
    s.cycle(T0 + 120, [rec("", "r2", T0 + 90, cost=0.5, token_id="1")], only_b)
    assert s.reader.token_states("p")["p"]["1"].spend_total_usd == pytest.approx(1.5)


def test_a_row_dated_in_the_future_is_dropped_and_never_becomes_the_resume_point(store_url: str) -> None:
    s = Store(store_url)
    s.cycle(T0, [])
    cycle = s.cycle(
        T0 + 60, [rec("dev-a-x-2026-01", "r1", T0 + 30), rec("dev-a-x-2026-01", "r2", 253402300799.0)]
    )
    assert s.reader.count_rows("request_log") == 1
    assert any("future" in note for _, note in cycle.notes)
    cursor = s.reader.log_cursor("p")
    assert cursor is not None and cursor <= T0 + 60
