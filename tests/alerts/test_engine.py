"""AlertEngine.on_cycle directly: a poll cycle in, findings, alert transitions, outbox rows out, on
a real SQLite store and an injected clock. Cycles are built as the poller builds them (ingest on
hand-built observations) and handed to the engine; group timers are ticked by hand, and nothing
is sent (the one target is a loopback port nobody listens on, and the sender is never started)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from alerts.detection.detectors import StoredHour
from alerts.engine import AlertEngine
from alerts.lifecycle.records import OutboxItem, Transition
from alerts.model import Finding
from alerts.response.quarantine import quarantine_actions
from monitor.clock import FakeClock
from monitor.ingest import ingest
from monitor.model import Observation, PollResult
from monitor.poller import CycleReport
from monitor.secret import Secret
from monitor.settings import (
    Budget,
    BudgetRule,
    ProviderSettings,
    Response,
    Rules,
    Settings,
    TokenPolicy,
)
from monitor.store import open_engine
from monitor.tokens import TokenState, with_series_labels
from tests.alerts.notify_support import closed_port, notify_settings
from tests.monitor.scripted_provider import ScriptedProvider, active

UTC = ZoneInfo("UTC")
HOUR, DAY = 3600.0, 86400.0
T0 = 1_768_478_400.0  # Thursday 2026-01-15 12:00 UTC
POLL = 900.0
GROUP_WAIT = 30.0
WEB = "prod-web-api-2025-12"


def settings(**options: Any) -> Settings:
    provider = ProviderSettings(
        name="lz",
        kind="newapi",
        base_url="http://127.0.0.1:9",
        admin_token=Secret("sim-admin-token"),
        poll_interval=POLL,
    )
    notify = notify_settings(
        (f"json://127.0.0.1:{closed_port()}/hook", ("critical", "security", "warning", "info")),
        group_wait=GROUP_WAIT,
    )
    base: dict[str, Any] = {
        "providers": (provider,),
        "tokens": (TokenPolicy(match="*", budget=Budget(daily_usd=20.0)),),
        "rules": Rules(budget=BudgetRule(thresholds=(1.0,))),
        "notify": notify,
    }
    return Settings(**{**base, **options})


class Rig:
    """The daemon's alert half on one provider, with the poller's part played by hand."""

    def __init__(self, tmp_path: Path, kw: Settings) -> None:
        self.clock = FakeClock(T0)
        self.db = open_engine(f"sqlite:///{tmp_path / 'kw.db'}")
        self.relay = ScriptedProvider("lz")
        self.engine = AlertEngine(
            kw, self.db, clock=self.clock, providers=lambda name: self.relay if name == "lz" else None
        )
        self.transitions: list[tuple[str, str, str, str]] = []  # (rule, from, to, action)
        self.engine.transition_listeners.append(self._heard)
        self.states: dict[str, TokenState] = {}
        self.watching_since: float | None = None
        self.failures = 0

    def _heard(self, t: Transition, action: str) -> None:
        self.transitions.append((t.alert.rule, t.from_state, t.to_state, action))

    async def cycle(self, *observations: Observation, complete: bool = True) -> None:
        """One successful poll: ingest, adopt, and the engine's turn."""
        now = self.clock.now()
        cycle = ingest(
            self.states,
            PollResult(observations, complete=complete),
            provider="lz",
            now=now,
            tz=UTC,
            watching_since=self.watching_since,
        )
        self.states = with_series_labels(cycle.states)
        if complete and self.watching_since is None:
            self.watching_since = now
        self.failures = 0
        await self.engine.on_cycle(CycleReport("lz", now, True, complete, cycle, self.states))

    async def failed(self, reason: str = "timeout") -> None:
        self.failures += 1
        report = CycleReport(
            "lz", self.clock.now(), False, False, None, self.states, reason, "read timed out", self.failures
        )
        await self.engine.on_cycle(report)

    def alerts(self) -> dict[str, str]:
        return {a.rule: a.state for a in self.engine.tracker.alerts()}

    def annotation(self, rule: str, key: str) -> str | None:
        (alert,) = [a for a in self.engine.tracker.alerts() if a.rule == rule]
        return alert.annotations.get(key)

    def notify(self) -> list[OutboxItem]:
        """Let the group wait pass and flush the group timers: the outbox rows this made."""
        before = len(self.engine.store.outbox())
        self.clock.advance(GROUP_WAIT)
        self.engine.pipeline.tick()
        return self.engine.store.outbox()[before:]

    def next_poll(self) -> None:
        self.clock.set(T0 + POLL * (int((self.clock.now() - T0) // POLL) + 1))

    def quarantine_rows(self) -> list[tuple[str, str, str]]:
        c = quarantine_actions.c
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(c.token_id, c.mode, c.state).order_by(c.id)).all()
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, settings())
    yield r
    r.db.dispose()


def web(today: float, *, month: float | None = None, requests: int = 100) -> Observation:
    return active(
        "1", WEB, today=today, month=month if month is not None else 100.0 + today, requests=requests
    )


# --- pending, firing after `for`, resolved -----------------------------------------------------------


def with_quiet_baseline(rig: Rig, rate: float = 0.5) -> None:
    """Fourteen days of $0.50 an hour behind token 1, as the daemon rebuilds them at start."""
    states = {k: replace(s, first_seen=T0 - 14 * DAY) for k, s in rig.states.items()}
    rig.states = states
    hours = [StoredHour("lz", "1", T0 - 14 * DAY + h * HOUR, rate, 20) for h in range(14 * 24)]
    assert rig.engine.detection.rebuild(states.values(), hours, []) == 1


async def test_an_anomaly_is_pending_first_firing_after_for_and_resolved_when_spend_returns_to_normal(
    rig: Rig,
) -> None:
    today, requests = 1.0, 100
    await rig.cycle(web(today, requests=requests))
    with_quiet_baseline(rig)
    states_seen: list[dict[str, str]] = []
    notified: list[list[OutboxItem]] = []
    for poll in range(1, 12):
        rig.next_poll()
        surge = poll <= 5  # $2 a quarter-hour is $8/h against a usual $0.50/h, for 75 minutes
        today += 2.0 if surge else 0.125
        requests += 50 if surge else 5
        await rig.cycle(web(today, requests=requests))
        states_seen.append(rig.alerts())
        notified.append(rig.notify())
    anomaly = [s.get("spend_anomaly", "-") for s in states_seen]
    # The first surging poll's quarter is the window's busiest and left out (one burst is not a
    # trend); the second is the first anomalous cycle: pending. `for: 2` fires it on the next one;
    # it stays up an hour after the spend is back to normal (keep_firing_for) and then resolves.
    assert anomaly == ["-", "pending", "firing", "firing", "firing", "firing", "firing"] + ["firing"] * 3 + [
        "resolved"
    ]
    assert rig.transitions == [
        ("spend_anomaly", "inactive", "pending", "none"),
        ("spend_anomaly", "pending", "firing", "none"),
        ("spend_anomaly", "firing", "resolved", "none"),
    ]
    rows = [(i, row.severity, row.title) for i, batch in enumerate(notified, 1) for row in batch]
    assert rows == [
        (3, "warning", f"[FIRING:1] spend_anomaly · lz/{WEB}"),  # nothing while it was only pending
        (11, "warning", f"[RESOLVED] spend_anomaly · lz/{WEB}"),
    ]
    assert [a["state"] for a in rig.engine.api_alerts()] == []  # resolved alerts are not listed


async def test_a_budget_alert_fires_in_its_cycle_and_resolves_when_the_day_rolls_over(rig: Rig) -> None:
    await rig.cycle(web(12.0))
    assert rig.alerts() == {} and rig.notify() == []
    rig.next_poll()
    await rig.cycle(web(21.0, requests=150))
    assert rig.alerts() == {"budget": "firing"}  # `for` 1: no pending step
    (row,) = rig.notify()
    assert (row.severity, row.title) == ("critical", f"[FIRING:1] budget · lz/{WEB}")
    assert "has used 105% of its day budget" in row.body
    (api,) = rig.engine.api_alerts()
    assert (api["rule"], api["state"], api["severity"], api["value"]) == (
        "budget",
        "firing",
        "critical",
        1.05,
    )
    rig.next_poll()
    await rig.cycle(web(22.0, requests=160))
    assert rig.notify() == []  # still the same alert: no new notification
    rig.clock.set(T0 + 12 * HOUR + 60)  # 00:01 the next day: the relay's day figure has reset
    await rig.cycle(web(0.1, month=122.1, requests=2))
    assert rig.alerts() == {"budget": "resolved"}
    assert rig.transitions == [
        ("budget", "inactive", "firing", "none"),
        ("budget", "firing", "resolved", "none"),
    ]
    (resolved,) = rig.notify()
    assert resolved.title == f"[RESOLVED] budget · lz/{WEB}"


async def test_a_relay_that_is_down_holds_its_tokens_alerts_and_raises_provider_down(rig: Rig) -> None:
    await rig.cycle(web(25.0))
    rig.next_poll()
    await rig.cycle(web(25.0))
    assert rig.alerts() == {"budget": "firing"}
    for _ in range(2):
        rig.next_poll()
        await rig.failed()
    # No data is not "fine": the budget alert neither resolves nor moves while nothing is known
    assert rig.alerts() == {"budget": "firing"}
    rig.next_poll()
    await rig.failed()
    assert rig.alerts() == {"budget": "firing", "provider_down": "firing"}  # the third failure in a row
    down = [a for a in rig.engine.api_alerts() if a["rule"] == "provider_down"]
    assert [(a["severity"], a["token"]) for a in down] == [("critical", "")]
    rig.next_poll()
    await rig.cycle(web(25.0))
    assert rig.alerts() == {"budget": "firing", "provider_down": "resolved"}


# --- the responder: a cycle from an incomplete poll does not quarantine ------------------------------


def leak_verdict() -> Finding:
    """What the leak detectors say about token 1 (their own tests prove when they say it): a
    security finding that stays up an hour after its last evidence."""
    return Finding(
        rule="leak_suspected",
        labels={"provider": "lz", "token": WEB},
        severity="security",
        value=3.0,
        summary="key may have leaked: new_ips, new_models, surge",
        keep_firing_for=HOUR,
    )


@pytest.fixture
def auto_rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, settings(response=Response(auto_revoke=True, max_per_hour=1)))
    yield r
    r.db.dispose()


async def test_a_firing_leak_is_not_quarantined_on_an_incomplete_poll_and_is_on_the_next_complete_one(
    auto_rig: Rig,
) -> None:
    rig = auto_rig
    await rig.cycle(web(1.0))
    rig.engine.tracker.evaluate(
        [leak_verdict()], now=rig.clock.now(), evaluated_subjects=[{"provider": "lz"}]
    )
    assert rig.alerts() == {"leak_suspected": "firing"}

    rig.next_poll()
    await rig.cycle(web(1.5), complete=False)  # a page failed: the token list is partial
    assert rig.relay.revoked == [] and rig.quarantine_rows() == []  # nothing acted, nothing recorded
    assert rig.annotation("leak_suspected", "response") == "waiting for a complete poll before acting"

    rig.next_poll()
    await rig.cycle(web(2.0))
    assert rig.relay.revoked == [("1", False)]  # disabled, not deleted (response.action)
    assert rig.quarantine_rows() == [("1", "auto", "done")]
    assert rig.annotation("leak_suspected", "response") == "quarantined"
    assert rig.annotation("leak_suspected", "quarantined") == "true"
    assert "1. Revoked: keywatch quarantined the token." in (
        rig.annotation("leak_suspected", "next_steps") or ""
    )

    rig.next_poll()
    await rig.cycle(web(2.0))
    assert rig.relay.revoked == [("1", False)]  # once per episode
    # max_per_hour 1 is used up: automatic quarantine pauses, and says so
    assert rig.alerts() == {"leak_suspected": "firing", "auto_revoke_paused": "firing"}


async def test_with_auto_revoke_off_a_firing_leak_is_only_alerted(rig: Rig) -> None:
    await rig.cycle(web(1.0))
    rig.engine.tracker.evaluate(
        [leak_verdict()], now=rig.clock.now(), evaluated_subjects=[{"provider": "lz"}]
    )
    rig.next_poll()
    await rig.cycle(web(1.5))
    assert rig.relay.revoked == [] and rig.quarantine_rows() == []
    assert rig.annotation("leak_suspected", "response") == "alert only (response.auto_revoke is off)"
    (row,) = rig.notify()
    assert (row.severity, row.title) == (
        "security",
        f"[FIRING:1] leak_suspected · lz/{WEB} — alert only (response.auto_revoke is off)",
    )
