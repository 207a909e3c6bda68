"""Python's cyclic garbage collector, tuned for a daemon that holds a big, long-lived fleet.

A full collection walks every container object; at 100,000 tokens that is millions of objects
and over a second with the event loop stopped, and with the default heuristics one ran every
poll or two (each poll's survivors count towards the next). After each poll cycle, `settle`
moves what survived into the permanent generation (`gc.freeze`), so collections look at new
objects only. Cycles that die after being frozen are not reclaimed until `gc.unfreeze`: measured
at about ten small objects per poll (SQLAlchemy statements), so once a day `settle` unfreezes
and collects everything, logs how long that took, and freezes again."""

from __future__ import annotations

import gc
import logging
import time

from monitor.clock import Clock

__all__ = ["FULL_COLLECTION_EVERY", "GcPolicy"]

log = logging.getLogger("keywatch.gc")

FULL_COLLECTION_EVERY = 86400.0


class GcPolicy:
    def __init__(self, clock: Clock, *, full_every: float = FULL_COLLECTION_EVERY) -> None:
        self._clock = clock
        self._full_every = full_every
        self._last_full = clock.now()

    def settle(self) -> None:
        now = self._clock.now()
        if now - self._last_full >= self._full_every:
            self._last_full = now
            t0 = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            log.info(
                "daily full garbage collection: %d unreachable objects in %.0f ms",
                found,
                1000 * (time.perf_counter() - t0),
            )
        gc.freeze()
