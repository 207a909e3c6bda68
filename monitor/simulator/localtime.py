"""Local calendar facts for a timestamp: the relay's day and month (its usage windows) and the
clients' hour of the week (traffic seasonality), which may live in different time zones."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

__all__ = ["LocalTime"]

# Every zone's UTC offset is a multiple of 15 minutes, so local date and hour are constant within
# one UTC quarter-hour: cache per quarter instead of asking zoneinfo for every traffic bucket.
_QUARTER = 900
_CACHE_MAX = 200_000


class LocalTime:
    __slots__ = ("_cache", "_traffic_tz", "_tz", "traffic_tz_name", "tz_name")

    def __init__(self, tz: str = "UTC", traffic_tz: str | None = None) -> None:
        self.tz_name = tz
        self.traffic_tz_name = traffic_tz or tz
        self._tz = ZoneInfo(tz)
        self._traffic_tz = ZoneInfo(self.traffic_tz_name)
        self._cache: dict[int, tuple[int, int, int]] = {}

    def info(self, ts: float) -> tuple[int, int, int]:
        """(relay day ordinal, relay month key, traffic hour-of-week 0..167 with Monday 00h = 0)."""
        q = int(ts // _QUARTER)
        hit = self._cache.get(q)
        if hit is None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            hit = self._compute(q * _QUARTER)
            self._cache[q] = hit
        return hit

    def _compute(self, ts: float) -> tuple[int, int, int]:
        relay = datetime.fromtimestamp(ts, self._tz)
        traffic = datetime.fromtimestamp(ts, self._traffic_tz)
        return relay.toordinal(), relay.year * 12 + relay.month - 1, traffic.weekday() * 24 + traffic.hour

    def day_start(self, ts: float) -> float:
        """The relay's local midnight that starts the day holding `ts`."""
        local = datetime.fromtimestamp(ts, self._tz)
        return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()

    def month_start(self, ts: float) -> float:
        local = datetime.fromtimestamp(ts, self._tz)
        return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()

    def month_label(self, ts: float) -> str:
        """`YYYY-MM` of `ts` in the relay's zone: the date part of conventional token names."""
        return datetime.fromtimestamp(ts, self._tz).strftime("%Y-%m")
