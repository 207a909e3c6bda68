"""Spend accounting as a stated invariant, checked with hypothesis against a simulated relay.

The relay keeps a day and a month window (reset at its UTC midnight), charges, and refunds part
of today's charges the way one-api/new-api refund pre-consumed quota. keywatch polls it at
arbitrary moments, with its own clock stepping back and forth, restarting (its marks written to
the database row and read back) between polls. For any such history:

- the lifetime counter never decreases;
- it never exceeds what the relay really charged (refunds are corrections, never new spend);
- for a well-formed history (no refunds, a poll after every charge) it equals what was charged
  when periods are placed on the relay's clock, and on our own clock too unless the relay's
  figures repeat exactly across a boundary (then "frozen relay" and "the same again" look alike:
  keywatch takes the side that invents nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from monitor.model import Observation
from monitor.spend import UsageMark, advance
from monitor.store.codec import row_to_state, state_to_row
from monitor.tokens import TokenState

TZ = ZoneInfo("UTC")
START = datetime(2026, 10, 1, tzinfo=UTC).timestamp()  # a month start: the relay's figures are 0
DAY = 86_400.0


@dataclass
class Step:
    wait: float  # seconds the relay's clock moves on
    charge: float  # dollars charged after the wait
    requests: int
    refund: float  # fraction of today's figure refunded after the charge
    poll: bool
    restart: bool  # keywatch restarts before this poll (the mark goes through the database)
    step: float  # keywatch's wall clock offset from the relay's, from this poll on


cents = st.integers(min_value=0, max_value=20_000).map(lambda c: c / 100)
waits = st.one_of(
    st.floats(min_value=1, max_value=3_600), st.floats(min_value=3_600, max_value=3 * DAY), st.just(DAY)
)
offsets = st.sampled_from([0.0, 0.0, 0.0, -30 * DAY, -3_600.0, 40 * DAY, 7_200.0])


@st.composite
def steps(draw: st.DrawFn, *, well_formed: bool, stepping: bool) -> Step:
    charge = draw(cents)
    return Step(
        wait=draw(waits),
        charge=charge,
        requests=draw(st.integers(1, 50)) if charge else 0,  # money comes with requests
        refund=0.0 if well_formed else draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0])),
        poll=True if well_formed and charge else draw(st.booleans()),
        restart=draw(st.booleans()),
        step=draw(offsets) if stepping else 0.0,
    )


@dataclass
class Relay:
    t: float = START
    today: float = 0.0
    month: float = 0.0
    requests: int = 0
    charged: float = 0.0
    charged_requests: int = 0
    refunded: float = 0.0

    def wait(self, seconds: float) -> None:
        before = datetime.fromtimestamp(self.t, TZ)
        self.t += seconds
        after = datetime.fromtimestamp(self.t, TZ)
        if (after.year, after.month) != (before.year, before.month):
            self.month = 0.0
        if after.date() != before.date():
            self.today, self.requests = 0.0, 0

    def charge(self, usd: float, requests: int) -> None:
        self.today, self.month = round(self.today + usd, 2), round(self.month + usd, 2)
        self.requests += requests
        self.charged = round(self.charged + usd, 2)
        self.charged_requests += requests

    def refund(self, fraction: float) -> None:
        back = round(self.today * fraction, 2)
        self.today, self.month = round(self.today - back, 2), round(self.month - back, 2)
        self.refunded = round(self.refunded + back, 2)

    def shows(self) -> Observation:
        return Observation(
            "key_1", "t", "active", today_usd=self.today, month_usd=self.month, today_requests=self.requests
        )


@dataclass
class Watch:
    spend: float = 0.0
    requests: int = 0
    corrected: float = 0.0
    across_boundary_repeat: bool = False  # the figures repeated exactly across a boundary


def replay(history: list[Step], *, relay_clock: bool) -> tuple[Relay, Watch]:
    relay, watch = Relay(), Watch()
    _, mark = advance(None, relay.shows(), relay.t, TZ, is_new=False)  # watching from the month's start
    last_poll_t = relay.t
    for step in history:
        relay.wait(step.wait)
        relay.charge(step.charge, step.requests)
        if step.refund:
            relay.refund(step.refund)
        if not step.poll:
            continue
        if step.restart:
            mark = _through_the_database(mark)
        obs = relay.shows()
        if _crossed(last_poll_t, relay.t) and _same(mark, obs):
            watch.across_boundary_repeat = True
        now = relay.t if relay_clock else relay.t + step.step
        delta, mark = advance(mark, obs, now, TZ, is_new=False, relay_clock=relay_clock)
        assert delta.cost_usd >= 0 and delta.requests >= 0 and delta.corrected_usd >= 0  # never decreases
        watch.spend += delta.cost_usd
        watch.requests += delta.requests
        watch.corrected += delta.corrected_usd
        last_poll_t = relay.t
    return relay, watch


def _through_the_database(mark: UsageMark) -> UsageMark:
    state = TokenState(
        pk=1, provider="p", token_id="key_1", name="t", status="active", first_seen=0, last_seen=0
    )
    row = state_to_row(TokenState(**{**_fields(state), "mark": mark, "usage_known": True}))
    restored = row_to_state((1, *row)).mark
    assert restored == mark
    return restored


def _fields(state: TokenState) -> dict[str, object]:
    return {name: getattr(state, name) for name in TokenState.__dataclass_fields__}


def _crossed(a: float, b: float) -> bool:
    return datetime.fromtimestamp(a, TZ).date() != datetime.fromtimestamp(b, TZ).date()


def _same(mark: UsageMark, obs: Observation) -> bool:
    return (mark.today_usd, mark.month_usd, mark.today_requests) == (
        obs.today_usd,
        obs.month_usd,
        obs.today_requests,
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(steps(well_formed=False, stepping=True), min_size=1, max_size=60))
def test_the_counter_never_decreases_nor_exceeds_what_was_charged_whatever_the_clock_does(
    history: list[Step],
) -> None:
    for relay_clock in (True, False):
        relay, watch = replay(history, relay_clock=relay_clock)
        assert watch.spend <= relay.charged + 1e-6
        assert watch.requests <= relay.charged_requests


@settings(max_examples=400, deadline=None)
@given(st.lists(steps(well_formed=True, stepping=True), min_size=1, max_size=60))
def test_a_well_formed_history_on_the_relays_clock_is_counted_exactly(history: list[Step]) -> None:
    relay, watch = replay(history, relay_clock=True)
    assert abs(watch.spend - relay.charged) < 1e-6
    assert watch.requests == relay.charged_requests
    assert watch.corrected == 0


@settings(max_examples=400, deadline=None)
@given(st.lists(steps(well_formed=True, stepping=False), min_size=1, max_size=60))
def test_a_well_formed_history_on_our_own_clock_is_counted_exactly_unless_figures_repeat(
    history: list[Step],
) -> None:
    relay, watch = replay(history, relay_clock=False)
    assume(not watch.across_boundary_repeat)
    assert abs(watch.spend - relay.charged) < 1e-6
    assert watch.requests == relay.charged_requests


@settings(max_examples=200, deadline=None)
@given(st.lists(steps(well_formed=False, stepping=False), min_size=1, max_size=60))
def test_refunds_are_counted_as_corrections_and_never_as_spend(history: list[Step]) -> None:
    relay, watch = replay(history, relay_clock=True)
    assert watch.spend <= relay.charged + 1e-6
    assert watch.corrected <= relay.refunded + 1e-6  # a correction is money the relay took back


def test_the_issue_9_dip_pattern_adds_nothing() -> None:
    """month_usage 10 -> 9 -> 10, three times: $0 of spend, $3 of corrections."""
    mark: UsageMark | None = None
    spend = corrected = 0.0
    t = START + 10 * DAY
    for month in [10.0, *[9.0, 10.0] * 3]:
        delta, mark = advance(
            mark, Observation("k", "t", "active", today_usd=5.0, month_usd=month), t, TZ, is_new=False
        )
        spend, corrected, t = spend + delta.cost_usd, corrected + delta.corrected_usd, t + 60
    assert (spend, corrected) == (0.0, 3.0)


def test_a_frozen_relay_across_restarts_with_the_clock_30_days_back_or_40_forward_adds_nothing() -> None:
    frozen = Observation("k", "t", "active", today_usd=3.0, month_usd=40.0, today_requests=7)
    t = START + 12 * DAY
    _, mark = advance(None, frozen, t, TZ, is_new=False)
    for stepped in (t - 30 * DAY, t + 40 * DAY, t + 70 * DAY):
        delta, mark = advance(_through_the_database(mark), frozen, stepped, TZ, is_new=False)
        assert (delta.cost_usd, delta.requests) == (0.0, 0)
