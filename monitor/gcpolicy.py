"""Python's cyclic garbage collector, tuned for a daemon that holds a big, long-lived fleet.

A full collection walks every container object; at 100,000 tokens that is millions of objects
and half a second or more with the event loop stopped. With the default heuristics one ran
whenever the survivors since the last one reached a quarter of the old objects — during a poll
that changes many tokens, over and over (64 full collections of 0.5-0.7 s measured in two
restarts of a 100,000-token fleet). So the daemon keeps the young collections (cheap: they walk
only new objects, and reclaim most cycles within moments) and turns the automatic full ones
off; `settle`, called after each poll cycle, runs one full collection a day (everything frozen
thawed first), logs how long it took, and that bounds what cycles reaching the old generation
or frozen along with a big relay document can hold."""

from __future__ import annotations

import gc
import logging
import time

from monitor.clock import Clock

__all__ = ["FULL_COLLECTION_EVERY", "GcPolicy"]

log = logging.getLogger("keywatch.gc")

FULL_COLLECTION_EVERY = 86400.0
_NEVER = 1 << 30  # collections of the middle generation before an automatic full one


class GcPolicy:
    def __init__(self, clock: Clock, *, full_every: float = FULL_COLLECTION_EVERY) -> None:
        self._clock = clock
        self._full_every = full_every
        self._last_full = clock.now()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, _NEVER)

    def settle(self) -> None:
        now = self._clock.now()
        if now - self._last_full < self._full_every:
            return
        self._last_full = now
        t0 = time.perf_counter()
        gc.unfreeze()  # big relay documents are frozen as they are read (monitor.providers.http)
        found = gc.collect()
        log.info(
            "daily full garbage collection: %d unreachable objects in %.0f ms",
            found,
            1000 * (time.perf_counter() - t0),
        )
