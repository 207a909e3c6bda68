"""The time a provider's usage periods (day, month) are placed on: a clock that only moves forward.

Windows reset at the relay's midnight, so the boundary that matters is on the relay's clock: its
`Date` header, where it sends a plausible one (within a day of ours: a hostile or broken relay
must not fling the periods into the year 9999). Otherwise our wall clock. Either way the result
never goes back: after a backwards step of the wall clock (NTP, an operator, a VM restored from a
snapshot) the period clock holds until the wall clock has caught up, so a period is never
entered twice. A forward step moves it on: that cannot invent spend, because `monitor.spend`
believes a boundary only when the relay's figures fell. Steps are detected against the
monotonic clock and logged once each. Across restarts, `monitor.spend` never lets a period end
at a time earlier than the last stored poll's.
"""

from __future__ import annotations

import logging

from monitor.clock import Clock

__all__ = ["PeriodClock"]

log = logging.getLogger("keywatch.clock")

STEP_TOLERANCE = 120.0  # seconds the wall clock may drift from the monotonic one before it is a step
RELAY_SKEW_LIMIT = 86_400.0  # a relay Date further from ours than this is not believed


class PeriodClock:
    def __init__(self, clock: Clock, provider: str) -> None:
        self._clock = clock
        self._provider = provider
        self._last: tuple[float, float] | None = None  # (wall, monotonic) at the last reading
        self._latest = float("-inf")
        self._relay_warned = False

    def now(self, relay_time: float | None) -> tuple[float, bool]:
        """The period time, and whether it is the relay's own clock."""
        wall = self._clock.now()
        self._check_step(wall)
        t, from_relay = wall, False
        if relay_time is not None:
            if abs(relay_time - wall) <= RELAY_SKEW_LIMIT:
                t, from_relay = relay_time, True
            elif not self._relay_warned:
                self._relay_warned = True
                log.warning(
                    "%s: the relay's clock (its Date header) is %+.0f s from ours; usage periods follow ours",
                    self._provider,
                    relay_time - wall,
                )
        self._latest = max(self._latest, t)
        return self._latest, from_relay

    def _check_step(self, wall: float) -> None:
        monotonic = getattr(self._clock, "monotonic", None)
        if monotonic is None:
            return  # an injected clock (a simulation, a backtest): nothing to check it against
        mono = float(monotonic())
        if self._last is not None:
            step = (wall - self._last[0]) - (mono - self._last[1])
            if abs(step) > STEP_TOLERANCE:
                held = " (held until it catches up)" if step < 0 else ""
                log.warning(
                    "%s: the system clock stepped by %+.0f s; usage periods never move back%s",
                    self._provider,
                    step,
                    held,
                )
        self._last = (wall, mono)
