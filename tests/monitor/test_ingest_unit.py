"""Ingest turning a relay's observations into spend deltas, each cycle persisted to a real SQLite
store and read back: first sight, rises, a refund dip (a correction, not a reset), a new day and a
new month, a token created while watched, a relay id reused by a new token, and names that repeat."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from monitor.ingest import REUSED_NOTE, Cycle, ingest
from monitor.model import Observation, PollResult, RequestRecord
from monitor.spend import CORRECTION_NOTE
from monitor.store import PollRun, UsageReader, UsageWriter, open_engine
from monitor.tokens import TokenState
from tests.monitor.scripted_provider import active

UTC = ZoneInfo("UTC")
DAY = 86400.0
T0 = 1_768_478_400.0  # 2026-01-15 12:00 UTC
JAN_31_2359 = 1_769_903_940.0  # 2026-01-31 23:59 UTC


@dataclass
class History:
    """What the poller does around ingest, without the poller: ingest, write, adopt."""

    engine: Engine
    states: dict[str, TokenState] = field(default_factory=dict)
    watching_since: float | None = None

    def poll(
        self,
        observations: Sequence[Observation],
        *,
        at: float,
        complete: bool = True,
        requests: Sequence[RequestRecord] = (),
        relay_time: float | None = None,
    ) -> Cycle:
        result = PollResult(observations, complete=complete, requests=requests)
        cycle = ingest(
            self.states,
            result,
            provider="lz",
            now=at,
            tz=UTC,
            watching_since=self.watching_since,
            period_now=relay_time if relay_time is not None else at,
            relay_clock=relay_time is not None,
        )
        run = PollRun("lz", "newapi", at, at, ok=True, complete=complete, seen=cycle.seen)
        self.states = UsageWriter(self.engine).write_cycle(cycle, run, {})
        if complete and self.watching_since is None:
            self.watching_since = at
        return cycle

    def stored(self) -> dict[str, TokenState]:
        return UsageReader(self.engine).token_states("lz").get("lz", {})

    def deltas(self, token_id: str) -> list[tuple[float, float, int, bool]]:
        """(ts, cost, requests, gap) stored for the token now holding `token_id`."""
        pk = self.stored()[token_id].pk
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT ts, cost_usd, requests, gap FROM usage_deltas WHERE token_pk = ? ORDER BY ts", (pk,)
            ).all()
        return [(float(r[0]), float(r[1]), int(r[2]), bool(r[3])) for r in rows]


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    engine = open_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    yield History(engine)
    engine.dispose()


def web(today: float | None, month: float | None, requests: int | None = None) -> Observation:
    return active("1", "prod-web-api-2026-01", today=today, month=month, requests=requests)


def spent(cycle: Cycle) -> list[tuple[str, float, int, bool]]:
    return [(s.token_id, round(s.cost_usd, 9), s.requests, s.gap) for s in cycle.spend]


# --- first sight and plain rises ---------------------------------------------------------------------


def test_the_first_poll_is_a_starting_point_not_spend(history: History) -> None:
    cycle = history.poll([web(3.0, 40.0, 30)], at=T0)
    assert cycle.new == ["1"] and cycle.spend == []
    (state,) = history.stored().values()
    assert (state.spend_total_usd, state.requests_total, state.usage_known) == (40.0, 30, True)
    assert (state.day_usd, state.month_usd) == (3.0, 40.0)
    assert history.deltas("1") == []


def test_a_rise_is_spend_since_the_last_poll(history: History) -> None:
    history.poll([web(3.0, 40.0, 30)], at=T0)
    cycle = history.poll([web(3.25, 40.25, 33)], at=T0 + 60)
    assert spent(cycle) == [("1", 0.25, 3, False)]
    assert cycle.changed == ["1"]
    assert history.deltas("1") == [(T0 + 60, 0.25, 3, False)]
    assert history.stored()["1"].spend_total_usd == 40.25


def test_an_idle_token_writes_nothing(history: History) -> None:
    history.poll([web(3.0, 40.0, 30)], at=T0)
    cycle = history.poll([web(3.0, 40.0, 30)], at=T0 + 60)
    assert (cycle.spend, cycle.changed, cycle.new) == ([], [], [])


def test_a_token_created_while_watched_spent_all_it_shows(history: History) -> None:
    history.poll([web(3.0, 40.0)], at=T0)
    newcomer = active("2", "dev-new-job-2026-01", today=1.5, month=1.5, requests=4)
    cycle = history.poll([web(3.0, 40.0), newcomer], at=T0 + 60)
    assert cycle.new == ["2"] and spent(cycle) == [("2", 1.5, 4, False)]
    assert history.deltas("2") == [(T0 + 60, 1.5, 4, False)]


def test_a_token_whose_usage_the_relay_does_not_report_has_no_spend_not_zero_spend(history: History) -> None:
    history.poll([web(None, None)], at=T0)
    cycle = history.poll([web(None, None)], at=T0 + 60)
    assert cycle.spend == []
    state = history.stored()["1"]
    assert (state.usage_known, state.mark, state.day_usd, state.month_usd) == (False, None, None, None)


# --- a refund dip is a correction ------------------------------------------------------------------


def test_a_refund_dip_is_a_correction_and_climbing_back_is_not_spent_twice(history: History) -> None:
    history.poll([web(5.0, 50.0, 100)], at=T0)
    dip = history.poll([web(4.2, 49.2, 100)], at=T0 + 60)  # the relay refunded $0.80 of pre-consumed quota
    assert dip.spend == [] and dip.notes == [("prod-web-api-2026-01", CORRECTION_NOTE)]
    state = history.stored()["1"]
    assert state.spend_total_usd == 50.0 and state.corrections_usd_total == pytest.approx(0.8)
    back = history.poll([web(5.0, 50.0, 104)], at=T0 + 120)  # back to the old high-water mark
    assert [(s.token_id, s.cost_usd) for s in back.spend] == [("1", 0.0)]  # requests only
    assert back.spend[0].requests == 4
    beyond = history.poll([web(5.5, 50.5, 110)], at=T0 + 180)
    assert spent(beyond) == [("1", 0.5, 6, False)]  # only what rose above the mark
    assert history.stored()["1"].spend_total_usd == pytest.approx(50.5)


@pytest.mark.parametrize(
    ("month_before", "month_after"), [(50.0, 49.0), (None, None)], ids=["day-and-month", "day-only"]
)
def test_a_dip_over_our_midnight_is_still_a_correction_when_the_relays_requests_did_not_fall(
    history: History, month_before: float | None, month_after: float | None
) -> None:
    """On keywatch's own clock a boundary is believed only when the relay shows a reset (the day's
    request count fell): a refund that happens to come just after our midnight resets nothing. With
    both windows the figures tell (they moved alike); with only the day's, the request count does."""
    before = T0 + 11.9 * 3600  # 23:54
    history.poll([web(5.0, month_before, 100)], at=before)
    cycle = history.poll([web(4.0, month_after, 100)], at=before + 600)  # 00:04, dollars down, requests not
    assert cycle.spend == [] and cycle.notes == [("prod-web-api-2026-01", CORRECTION_NOTE)]
    state = history.stored()["1"]
    assert state.spend_total_usd == (month_before or 5.0)
    assert state.corrections_usd_total == pytest.approx(1.0)


# --- new periods -----------------------------------------------------------------------------------


def test_a_new_day_inside_the_month_is_counted_on_the_month_figure(history: History) -> None:
    before = T0 + 11.9 * 3600  # 23:54 UTC
    history.poll([web(5.0, 50.0, 100)], at=before)
    cycle = history.poll([web(0.25, 50.5, 3)], at=before + 600)  # the day reset; the month did not
    assert spent(cycle) == [("1", 0.5, 3, False)]  # 23:54-00:00 included: nothing is lost
    state = history.stored()["1"]
    assert (state.day_usd, state.month_usd, state.spend_total_usd) == (0.25, 50.5, 50.5)


def test_a_new_month_on_the_relays_clock_starts_the_windows_afresh(history: History) -> None:
    history.poll([web(3.0, 90.0, 60)], at=JAN_31_2359, relay_time=JAN_31_2359)
    after = JAN_31_2359 + 120  # 2026-02-01 00:01
    cycle = history.poll([web(0.2, 0.2, 2)], at=after, relay_time=after)
    # all of February's figure is new; what January spent in its last minute may be unseen
    assert spent(cycle) == [("1", 0.2, 2, True)]
    assert history.deltas("1") == [(after, 0.2, 2, True)]
    state = history.stored()["1"]
    assert state.spend_total_usd == pytest.approx(90.2) and state.corrections_usd_total == 0.0
    again = history.poll([web(0.7, 0.7, 5)], at=after + 60, relay_time=after + 60)
    assert spent(again) == [("1", 0.5, 3, False)]  # the new month's mark holds


# --- identity: reused ids and repeated names ---------------------------------------------------------


def test_a_reused_relay_id_keeps_the_old_tokens_history_and_starts_the_new_one_fresh(
    history: History,
) -> None:
    old = active("7", "ci-old", today=1.0, month=40.0, created_at=T0 - 90 * DAY)
    history.poll([old], at=T0)
    history.poll([active("7", "ci-old", today=2.0, month=41.0, created_at=T0 - 90 * DAY)], at=T0 + 60)
    old_pk = history.states["7"].pk
    reused = active("7", "ci-new", today=0.5, month=0.5, created_at=T0 + 100)
    cycle = history.poll([reused], at=T0 + 120)
    assert cycle.retired == {"7": f"7~{old_pk}"} and cycle.new == ["7"]
    assert ("ci-old", REUSED_NOTE) in cycle.notes
    stored = history.stored()
    kept, fresh = stored[f"7~{old_pk}"], stored["7"]
    assert (kept.name, kept.status, kept.spend_total_usd, kept.pk) == ("ci-old", "deleted", 41.0, old_pk)
    assert (fresh.name, fresh.status, fresh.spend_total_usd) == ("ci-new", "active", 0.5)
    assert fresh.pk != old_pk
    assert history.deltas(f"7~{old_pk}") == [
        (T0 + 60, 1.0, 0, False)
    ]  # the old token's history stays its own
    assert history.deltas("7") == [(T0 + 120, 0.5, 0, False)]


def test_a_renamed_token_keeps_its_history(history: History) -> None:
    history.poll([active("7", "ci-old", today=1.0, month=40.0, created_at=T0 - 90 * DAY)], at=T0)
    cycle = history.poll(
        [active("7", "ci-renamed", today=1.5, month=40.5, created_at=T0 - 90 * DAY)], at=T0 + 60
    )
    assert cycle.retired == {} and spent(cycle) == [("7", 0.5, 0, False)]
    assert [s.name for s in history.stored().values()] == ["ci-renamed"]


def test_tokens_that_share_a_name_keep_separate_counters_and_unattributable_log_rows_stay_unattributed(
    history: History,
) -> None:
    twins = [
        active("1", "ci", today=1.0, month=10.0),
        active("2", "ci", today=2.0, month=20.0),
        active("3", "web", today=0.0, month=0.0),
    ]
    history.poll(twins, at=T0)
    rows = [  # a relay that names tokens only by name in its log (one-api)
        RequestRecord(None, "ci", T0 + 30, "gpt-4o-mini", "203.0.113.5", 10, 20, 0.01, 100, "r1"),
        RequestRecord(None, "web", T0 + 31, "gpt-4o-mini", "203.0.113.6", 10, 20, 0.02, 100, "r2"),
    ]
    later = [
        active("1", "ci", today=1.5, month=10.5),
        active("2", "ci", today=2.0, month=20.0),
        active("3", "web", today=0.02, month=0.02),
    ]
    cycle = history.poll(later, at=T0 + 60, requests=rows)
    assert cycle.unresolved == 1  # "ci" could be either: never guessed
    assert [(r.token_id, r.request_id) for r in cycle.requests] == [("3", "r2")]
    assert spent(cycle) == [("1", 0.5, 0, False), ("3", 0.02, 1, False)]
    stored = history.stored()
    assert {t: s.spend_total_usd for t, s in stored.items()} == {"1": 10.5, "2": 20.0, "3": 0.02}
    with history.engine.connect() as conn:
        logged = conn.exec_driver_sql("SELECT request_id FROM request_log").scalars().all()
    assert logged == ["r2"]


# --- vanished tokens ---------------------------------------------------------------------------------


def test_only_a_complete_poll_marks_a_missing_token_deleted(history: History) -> None:
    other = active("2", "dev-batch-job-2026-01", today=0.0, month=1.0)
    history.poll([web(1.0, 10.0), other], at=T0)
    partial = history.poll([web(1.0, 10.0)], at=T0 + 60, complete=False)
    assert partial.vanished == [] and history.stored()["2"].status == "active"
    full = history.poll([web(1.0, 10.0)], at=T0 + 120)
    assert full.vanished == ["2"]
    gone = history.stored()["2"]
    assert (gone.status, gone.missing_since, gone.spend_total_usd) == ("deleted", T0 + 120, 1.0)
