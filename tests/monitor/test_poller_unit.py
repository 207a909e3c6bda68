"""The poller's cycle on an in-process relay (tests/monitor/scripted_provider.py) and a real SQLite
store: complete and incomplete polls, a relay's errors and their reasons, the poll deadline, and
what the cycle's listeners hear. No HTTP: the relay's answers are hand-built monitor.model values."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from monitor.clock import FakeClock
from monitor.metrics import Exposition
from monitor.model import PollResult, Skip
from monitor.policy import PolicyBook
from monitor.poller import CycleReport, Poller
from monitor.providers.base import AuthError, ProviderError
from monitor.redact import MASK, Redactor
from monitor.store import UsageReader, UsageWriter, open_engine
from tests.monitor.scripted_provider import ScriptedProvider, Stall, active

T0 = 1_767_268_800.0  # 2026-01-01 12:00 UTC
POLL = 60.0
ADMIN_TOKEN = "sk-admin-0123456789abcdef"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    yield engine
    engine.dispose()


class Rig:
    """A Poller wired as the daemon wires it, with its listeners' reports kept."""

    def __init__(self, db: Engine, provider: ScriptedProvider, *, deadline: float = 30.0) -> None:
        self.clock = FakeClock(T0)
        self.provider = provider
        self.exposition = Exposition(PolicyBook(()))
        self.reader = UsageReader(db)
        self.poller = Poller(
            provider,
            timezone="UTC",
            writer=UsageWriter(db),
            exposition=self.exposition,
            clock=self.clock,
            states={},
            watching_since=None,
            reader=self.reader,
            deadline=deadline,
            redactor=Redactor([ADMIN_TOKEN]),
        )
        self.heard: list[CycleReport] = []
        self.poller.listeners.append(self._hear)
        self.db = db

    async def _hear(self, report: CycleReport) -> None:
        self.heard.append(report)

    async def poll(self) -> CycleReport:
        report = await self.poller.run_once()
        self.clock.advance(POLL)
        return report

    def runs(self) -> list[tuple[bool, bool, int, str | None, str | None]]:
        with self.db.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT ok, complete, tokens_seen, error_reason, error FROM poll_runs ORDER BY id"
            ).all()
        return [(bool(r[0]), bool(r[1]), int(r[2]), r[3], r[4]) for r in rows]


def two_tokens(web_month: float = 4.0, *, complete: bool = True) -> PollResult:
    return PollResult(
        [
            active("1", "prod-web-api-2026-01", today=1.0, month=web_month, requests=10),
            active("2", "dev-batch-job-2026-01", today=0.5, month=2.0, requests=5),
        ],
        complete=complete,
    )


async def test_a_complete_poll_is_stored_adopted_and_heard(db: Engine) -> None:
    rig = Rig(db, ScriptedProvider(answers=[two_tokens()]))
    report = await rig.poll()
    assert (report.provider, report.at, report.ok, report.complete) == ("lz", T0, True, True)
    assert (report.error_reason, report.failures) == (None, 0)
    assert report.cycle is not None and sorted(report.cycle.new) == ["1", "2"]
    assert rig.heard == [report]
    assert report.states is rig.poller.states
    assert {s.name: s.spend_total_usd for s in report.states.values()} == {
        "prod-web-api-2026-01": 4.0,  # first sight: the month-to-date figure is where the counter starts
        "dev-batch-job-2026-01": 2.0,
    }
    assert all(s.pk is not None for s in report.states.values())  # stored, with their database ids
    stored = rig.reader.token_states("lz")["lz"]
    assert {k: s.spend_total_usd for k, s in stored.items()} == {"1": 4.0, "2": 2.0}
    assert rig.runs() == [(True, True, 2, None, None)]
    assert rig.poller.watching_since == T0  # tokens that appear from now on are new tokens
    assert rig.reader.providers()["lz"].first_complete_poll_at == T0
    health = rig.exposition.health("lz")
    assert (health.up, health.last_success, health.errors) == (True, T0, {})
    assert b'keywatch_token_spend_usd_total{provider="lz",token="prod-web-api-2026-01"} 4' in (
        rig.exposition.render()
    )


async def test_the_next_poll_hears_only_what_was_spent_since(db: Engine) -> None:
    rig = Rig(db, ScriptedProvider(answers=[two_tokens(4.0), two_tokens(4.75)]))
    await rig.poll()
    report = await rig.poll()
    assert report.cycle is not None
    assert [(s.token_id, s.cost_usd) for s in report.cycle.spend] == [("1", 0.75)]
    assert report.states["1"].spend_total_usd == 4.75
    pk = report.states["1"].pk
    assert pk is not None
    assert [(p.ts, p.cost_usd) for p in rig.reader.deltas(pk, T0)] == [(T0 + POLL, 0.75)]


async def test_an_incomplete_poll_is_used_but_proves_nothing_about_missing_tokens(db: Engine) -> None:
    partial = PollResult([active("1", "prod-web-api-2026-01", today=1.0, month=4.5)], complete=False)
    rig = Rig(
        db, ScriptedProvider(answers=[two_tokens(), partial, PollResult([two_tokens().observations[0]])])
    )
    await rig.poll()
    report = await rig.poll()
    assert (report.ok, report.complete) == (True, False)
    assert report.states["1"].spend_total_usd == 4.5  # what came is used
    assert report.states["2"].status == "active" and report.states["2"].missing_since is None
    assert rig.runs()[-1][:2] == (True, False)
    gone = await rig.poll()  # a complete list without token 2: now it is gone
    assert gone.cycle is not None and gone.cycle.vanished == ["2"]
    assert gone.states["2"].status == "deleted"


async def test_watching_begins_with_the_first_complete_poll_not_a_partial_one(db: Engine) -> None:
    rig = Rig(db, ScriptedProvider(answers=[two_tokens(complete=False), two_tokens()]))
    await rig.poll()
    assert rig.poller.watching_since is None
    assert rig.reader.providers()["lz"].first_complete_poll_at is None
    await rig.poll()
    assert rig.poller.watching_since == T0 + POLL


@pytest.mark.parametrize(
    ("error", "reason", "message"),
    [
        (ProviderError("http_5xx", "HTTP 502 from the relay"), "http_5xx", "HTTP 502 from the relay"),
        (ProviderError("malformed", "the answer is not JSON"), "malformed", "the answer is not JSON"),
        (AuthError(), "auth", "admin token rejected"),
        (RuntimeError("a bug"), "internal", "RuntimeError: a bug"),
    ],
)
async def test_a_failed_poll_says_why_keeps_the_last_known_values_and_counts(
    db: Engine, error: Exception, reason: str, message: str
) -> None:
    rig = Rig(db, ScriptedProvider(answers=[two_tokens(), error, error]))
    ok = await rig.poll()
    first = await rig.poll()
    assert (first.ok, first.complete, first.cycle) == (False, False, None)
    assert (first.error_reason, first.error, first.failures) == (reason, message, 1)
    assert first.states == ok.states  # no data is not zero: the tokens keep their last figures
    assert rig.heard[-1] is first  # the listeners hear of the failure too
    second = await rig.poll()
    assert second.failures == 2
    health = rig.exposition.health("lz")
    assert (health.up, health.last_success, health.errors) == (False, T0, {reason: 2})
    assert rig.runs()[1:] == [(False, False, 0, reason, message)] * 2
    assert rig.reader.consecutive_failures("lz") == 2


async def test_a_success_ends_the_run_of_failures(db: Engine) -> None:
    down = ProviderError("timeout", "read timed out")
    rig = Rig(db, ScriptedProvider(answers=[down, down, two_tokens()]))
    assert [(await rig.poll()).failures for _ in range(2)] == [1, 2]
    back = await rig.poll()
    assert (back.ok, back.failures, rig.poller.consecutive_failures) == (True, 0, 0)
    assert rig.exposition.health("lz").up
    assert rig.reader.consecutive_failures("lz") == 0


async def test_a_relays_error_text_is_stored_and_heard_without_the_admin_token(db: Engine) -> None:
    echo = ProviderError("http_4xx", f"bad request: Authorization: Bearer {ADMIN_TOKEN}\nFAKE LOG LINE")
    rig = Rig(db, ScriptedProvider(answers=[echo]))
    report = await rig.poll()
    assert report.error is not None
    assert report.error.startswith(f"bad request: Authorization: Bearer {MASK}\\nFAKE LOG LINE")
    (run,) = rig.runs()
    assert run[4] == report.error and ADMIN_TOKEN not in repr(report)


async def test_a_short_error_with_a_masked_secret_is_not_marked_as_cut(db: Engine) -> None:
    rig = Rig(db, ScriptedProvider(answers=[ProviderError("http_4xx", f"token {ADMIN_TOKEN} refused")]))
    report = await rig.poll()
    assert report.error == f"token {MASK} refused"


async def test_a_poll_past_its_deadline_is_cancelled_and_counted_as_timeout(db: Engine) -> None:
    rig = Rig(db, ScriptedProvider(answers=[Stall(), two_tokens()]), deadline=0.05)
    report = await asyncio.wait_for(rig.poll(), timeout=10)  # a poller without a deadline fails, not hangs
    assert (report.ok, report.error_reason, report.failures) == (False, "timeout", 1)
    assert report.error == "the poll took longer than 0.05s"
    assert rig.exposition.health("lz").errors == {"timeout": 1}
    assert (await rig.poll()).ok  # the next poll is a fresh one


async def test_skipped_entries_are_counted_by_reason_and_leave_the_poll_complete(db: Engine) -> None:
    skipped = [
        Skip("x", "absurd_value", "'today_usage' is over 1e9", token_id="3"),
        Skip("y", "absurd_value", "'month_usage' is not finite", token_id="4"),
        Skip("z", "negative_usage", "'today_usage' is negative", token_id="5"),
    ]
    rig = Rig(db, ScriptedProvider(answers=[PollResult(two_tokens().observations, skipped)]))
    report = await rig.poll()
    assert (report.ok, report.complete) == (True, True)
    assert set(report.states) == {"1", "2"}
    assert rig.exposition.health("lz").errors == {"absurd_value": 2, "negative_usage": 1}
    assert UsageReader(db).poll_error_counts() == {("lz", "absurd_value"): 2, ("lz", "negative_usage"): 1}


async def test_the_adapters_commit_hook_runs_once_the_cycle_is_stored(db: Engine) -> None:
    told: list[int] = []

    def committed() -> None:
        told.append(UsageReader(db).count_rows("tokens"))  # stored before the adapter hears it

    result = PollResult(two_tokens().observations, committed=committed)
    rig = Rig(db, ScriptedProvider(answers=[result, ProviderError("timeout", "slow")]))
    await rig.poll()
    await rig.poll()
    assert told == [2]


async def test_a_failing_listener_neither_stops_the_others_nor_the_cycle(db: Engine) -> None:
    rig = Rig(db, ScriptedProvider(answers=[two_tokens()]))

    async def broken(report: CycleReport) -> None:
        raise RuntimeError("listener bug")

    rig.poller.listeners.insert(0, broken)
    report = await rig.poll()
    assert report.ok and rig.heard == [report]


async def test_repeated_names_get_distinct_token_labels_in_the_report(db: Engine) -> None:
    twins = PollResult([active("1", "ci", today=1.0, month=1.0), active("2", "ci", today=2.0, month=2.0)])
    rig = Rig(db, ScriptedProvider(answers=[twins]))
    report = await rig.poll()
    assert {t: s.series for t, s in report.states.items()} == {"1": "ci", "2": "ci#2"}
