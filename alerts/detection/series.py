"""Per-token usage history for the anomaly and leak rules, kept incrementally.

One `TokenHistory` per token holds what the detectors need and nothing more:
- 28 days of hourly buckets (spend, requests) in fixed rings, plus a bit per hour that says
  "this hour was anomalous" so attacks stay out of baselines;
- the last 60 minutes at one-minute resolution, for the "recent window" the detectors compare;
- the client IPs and models the token has used, with first/last seen and totals;
- activity bookkeeping: last activity, and when the current run of activity began after a quiet
  gap (dormancy).

Time convention: an observation at `ts` is usage during the period that *ends* at `ts` (a poll's
delta). It lands in the minute and the hour that contain `ts - eps`, so a delta stamped 10:00:00
belongs to the 09:00 hour. Baselines and windows use the same mapping, so any fixed offset between
that convention and an input's (e.g. bucket-start stamps) cancels out.

Persistence: `to_bytes()` / `from_bytes()` round-trip the whole state (~1-6 KB per token after
zlib; idle tokens compress to almost nothing). If the blob is lost, the state can be rebuilt from
stored hourly rollups with `add_hourly()` and from raw usage rows (for models and IPs) with
`observe()`; what is lost then are the anomaly marks, so past attacks may re-enter baselines.
"""

from __future__ import annotations

import base64
import json
import math
import sys
import zlib
from array import array
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "HISTORY_HOURS",
    "HOUR",
    "RUN_GAP",
    "HourStats",
    "Ident",
    "TokenHistory",
    "hour_of",
    "is_weekend_hour",
    "minute_of",
]

HOUR: Final = 3600
MINUTE: Final = 60
HISTORY_HOURS: Final = 28 * 24
RECENT_MINUTES: Final = 60
RUN_GAP: Final = 24 * HOUR  # a quiet gap this long ends a run of activity (dormancy bookkeeping)
MAX_IDENTS: Final = 2048  # per kind; a swarm of IPs must not grow a token's state without bound
STATS_HOURS: Final = 7 * 24  # the window of HourStats
_VERSION: Final = 1
# The rings of a token that has had no usage yet: shared, read-only (every write site allocates
# the token's own first), so a quiet token costs ~0.5 KB instead of ~6 KB. Most tokens of a big
# fleet are quiet at any time; their history is the object and its dicts, not 28 days of zeros.
_NO_HOURS: Final = array("f", bytes(4 * HISTORY_HOURS))
_NO_FLAGS: Final = bytearray(HISTORY_HOURS)
_NO_MINUTES: Final = array("f", bytes(4 * RECENT_MINUTES))

# An identity record: [first_seen, last_seen, requests, cost_usd]. A list, not an object: there
# are tens of thousands of them and they are updated on every observation.
Ident = list[float]


def minute_of(ts: float) -> int:
    """The minute slot an observation stamped `ts` belongs to (the minute ending at or after ts)."""
    return math.ceil(ts / MINUTE) - 1


def hour_of(ts: float) -> int:
    return minute_of(ts) // 60


@dataclass(frozen=True, slots=True)
class HourStats:
    """Summary of the (up to) 7 days of complete hours before an hour, marked hours left out.
    Shared by both detectors and the fleet context; computed at most once per token and hour."""

    hours: int  # hours that counted
    mean_cost: float  # $/h
    mean_requests: float  # requests/h
    zero_share: float  # share of hours without spend
    active_level: float  # median spend of the hours that had some
    burst_level: float  # 90th percentile of the same: a big but usual burst
    # The token's own hour-to-hour variability as a coefficient of variation, from the same hour
    # on consecutive days of the same kind: 2.1 x median |a - b| / (a + b), which is the CV for
    # normal noise. 0 when there are too few pairs to say.
    noise: float


class TokenHistory:
    """Everything the anomaly and leak detectors remember about one token."""

    __slots__ = (
        "_cost",
        "_flag",
        "_head",
        "_last_obs",
        "_mcost",
        "_memo",
        "_mhead",
        "_mreq",
        "_relearn_until",
        "_req",
        "_run_first",
        "_run_last",
        "_stats",
        "has_requests",
        "idle_since",
        "ips",
        "last_active",
        "models",
        "prev_active",
        "revision",
        "run_start",
        "started_at",
        "step",
    )

    def __init__(self, started_at: float, *, idle_since: float | None = None) -> None:
        """`started_at`: when keywatch began watching (history before it is unknown, not zero).
        `idle_since`: what the relay says about the time before — the token's last use, or its
        creation time when it has never been used — so a token that wakes up after months is
        recognised as dormant even if keywatch has watched it only for a day."""
        self.started_at = float(started_at)
        self.idle_since = idle_since
        self.last_active: float | None = None
        self.run_start: float | None = None  # first activity after the last quiet gap >= RUN_GAP
        self.prev_active: float | None = None  # last activity before run_start (None: none seen)
        self.step: float | None = None  # smallest gap between observation stamps: the data's resolution
        self.has_requests = False  # False for relays that report spend only
        self.models: dict[str, Ident] = {}
        self.ips: dict[str, Ident] = {}
        self.revision = 0  # bumped when a complete hour or a mark changes: invalidates caches
        # Allocated on the first usage (_own_hours, _own_minutes); shared zeros until then.
        self._cost: array[float] = _NO_HOURS
        self._req: array[float] = _NO_HOURS
        self._flag: bytearray = _NO_FLAGS
        self._head = -1  # absolute hour index of the newest bucket
        self._mcost: array[float] = _NO_MINUTES
        self._mreq: array[float] = _NO_MINUTES
        self._mhead = -1
        self._last_obs: float | None = None
        self._run_first: int | None = None  # the current run of anomalous hours
        self._run_last = -1
        self._relearn_until = -1  # no marks up to this hour: a level shift is being learned
        self._stats: dict[tuple[int, int], HourStats] = {}  # (hour, revision) -> stats
        self._memo: dict[str, tuple[Any, Any]] = {}  # detectors' per-hour caches, keyed by detector

    # --- ingest ---------------------------------------------------------------------------------

    def observe(
        self,
        ts: float,
        cost_usd: float,
        requests: float = 0,
        model: str | None = None,
        ip: str | None = None,
    ) -> None:
        """Add one usage delta (several per poll are fine, in any order within the last 28 days)."""
        if self._last_obs is None or ts > self._last_obs:
            if self._last_obs is not None:
                gap = ts - self._last_obs
                if self.step is None or gap < self.step:
                    self.step = max(float(MINUTE), gap)
            self._last_obs = ts
        if cost_usd <= 0 and requests <= 0:
            return
        m = minute_of(ts)
        h = m // 60
        self._put_hour(h, cost_usd, requests)
        if m > self._mhead:
            self._roll_minutes(m)
        if m > self._mhead - RECENT_MINUTES:
            self._own_minutes()
            i = m % RECENT_MINUTES
            self._mcost[i] += cost_usd
            self._mreq[i] += requests
        if requests > 0:
            self.has_requests = True
        self._note_activity(ts)
        if model:
            self._ident(self.models, model, ts, requests, cost_usd)
        if ip:
            self._ident(self.ips, ip, ts, requests, cost_usd)

    def note(
        self, ts: float, model: str | None, ip: str | None, requests: float = 0, cost_usd: float = 0.0
    ) -> None:
        """Remember who used the token and with what (a request-log row) without booking its
        spend: relays whose money comes from counters report the same spend there already."""
        if model:
            self._ident(self.models, model, ts, requests, cost_usd)
        if ip:
            self._ident(self.ips, ip, ts, requests, cost_usd)

    def add_hourly(self, hour_start: float, cost_usd: float, requests: float = 0) -> None:
        """Add a stored hourly rollup (stamped with the hour's start) when rebuilding a lost state."""
        h = int(hour_start // HOUR)
        if cost_usd <= 0 and requests <= 0:
            return
        self._put_hour(h, cost_usd, requests)
        if requests > 0:
            self.has_requests = True
        self._note_activity(h * HOUR + HOUR)

    def advance(self, now: float) -> None:
        """Move the rings to `now` (clears hours and minutes that passed without data)."""
        h = hour_of(now)
        if h > self._head:
            self._roll_hours(h)
        m = minute_of(now)
        if m > self._mhead:
            self._roll_minutes(m)

    def _put_hour(self, h: int, cost: float, requests: float) -> None:
        if h > self._head:
            self._roll_hours(h)
        elif h <= self._head - HISTORY_HOURS:
            return  # older than the history we keep
        elif h < self._head:
            self.revision += 1  # a complete hour changed: cached baselines are stale
        self._own_hours()
        i = h % HISTORY_HOURS
        self._cost[i] += cost
        self._req[i] += requests

    def _own_hours(self) -> None:
        if self._cost is _NO_HOURS:
            self._cost = array("f", bytes(4 * HISTORY_HOURS))
            self._req = array("f", bytes(4 * HISTORY_HOURS))
            self._flag = bytearray(HISTORY_HOURS)

    def _own_minutes(self) -> None:
        if self._mcost is _NO_MINUTES:
            self._mcost = array("f", bytes(4 * RECENT_MINUTES))
            self._mreq = array("f", bytes(4 * RECENT_MINUTES))

    def _roll_hours(self, h: int) -> None:
        if self._cost is _NO_HOURS:  # nothing to clear: all zeros
            self._head = h
            return
        start = max(self._head + 1, h - HISTORY_HOURS + 1)
        for k in range(start, h + 1):
            i = k % HISTORY_HOURS
            self._cost[i] = 0.0
            self._req[i] = 0.0
            self._flag[i] = 0
        self._head = h

    def _roll_minutes(self, m: int) -> None:
        if self._mcost is _NO_MINUTES:
            self._mhead = m
            return
        start = max(self._mhead + 1, m - RECENT_MINUTES + 1)
        for k in range(start, m + 1):
            i = k % RECENT_MINUTES
            self._mcost[i] = 0.0
            self._mreq[i] = 0.0
        self._mhead = m

    def _note_activity(self, ts: float) -> None:
        last = self.last_active
        if last is None or ts - last >= RUN_GAP:
            self.prev_active = last
            self.run_start = ts
        if last is None or ts > last:
            self.last_active = ts

    @staticmethod
    def _ident(table: dict[str, Ident], key: str, ts: float, requests: float, cost: float) -> None:
        rec = table.get(key)
        if rec is None:
            if len(table) >= MAX_IDENTS:
                _evict(table)
            table[key] = [ts, ts, requests, cost]
            return
        if ts < rec[0]:
            rec[0] = ts
        if ts > rec[1]:
            rec[1] = ts
        rec[2] += requests
        rec[3] += cost

    # --- anomaly marks --------------------------------------------------------------------------

    def mark_anomalous(
        self, now: float, window: float = 0.0, *, adapt_after: int = 24, gap: int = 6, relearn: int = 7 * 24
    ) -> None:
        """Keep the hours of the window ending at `now` out of future baselines (call it whenever a
        detector's condition holds, pending or firing), so an attack does not become the norm.

        An episode of marks (gaps under `gap` hours) that lasts `adapt_after` hours is a level shift,
        not an attack: its marks are dropped and the token is not marked again for `relearn` hours,
        so the baselines learn the new level instead of alarming on it for weeks."""
        self.advance(now)
        last = hour_of(now)
        first = hour_of(now - window) if window > 0 else last
        if last <= self._relearn_until:
            return
        if self._run_first is None or first > self._run_last + gap:
            self._run_first = first
        self._run_last = max(self._run_last, last)
        value = 1
        if last - self._run_first >= adapt_after:
            first, value = self._run_first, 0
            self._run_first, self._relearn_until = None, last + relearn
        changed = False
        if value:
            self._own_hours()
        for k in range(max(first, self._head - HISTORY_HOURS + 1), last + 1):
            i = k % HISTORY_HOURS
            if self._flag[i] != value:
                assert self._flag is not _NO_FLAGS  # owned: a 1 was set here before
                self._flag[i] = value
                changed = True
        if changed:
            self.revision += 1

    def is_marked(self, h: int) -> bool:
        return self._head - HISTORY_HOURS < h <= self._head and bool(self._flag[h % HISTORY_HOURS])

    # --- reading --------------------------------------------------------------------------------

    @property
    def head(self) -> int:
        """Absolute hour index of the newest hour bucket (-1 before any data)."""
        return self._head

    def cost_at(self, h: int) -> float:
        """Spend in hour `h` (absolute hour index); 0 outside the kept history."""
        if self._head - HISTORY_HOURS < h <= self._head:
            return self._cost[h % HISTORY_HOURS]
        return 0.0

    def requests_at(self, h: int) -> float:
        if self._head - HISTORY_HOURS < h <= self._head:
            return self._req[h % HISTORY_HOURS]
        return 0.0

    def rings(self) -> tuple[array[float], array[float], bytearray, int]:
        """The raw hour rings (cost, requests, marks) and the head index, for tight detector loops:
        hour h lives at index h % HISTORY_HOURS and is valid for head - HISTORY_HOURS < h <= head."""
        return self._cost, self._req, self._flag, self._head

    def window(self, now: float, seconds: float) -> tuple[float, float]:
        """(spend, requests) observed in the `seconds` (at most an hour) ending at `now`."""
        parts = self.window_parts(now, seconds, 1)
        return parts[0][0], parts[0][1]

    def window_parts(self, now: float, seconds: float, parts: int) -> list[tuple[float, float]]:
        """The window of `seconds` (at most an hour) ending at `now`, cut into `parts` equal
        pieces, oldest first: [(spend, requests), ...]."""
        last = minute_of(now)
        n = max(1, min(RECENT_MINUTES, round(seconds / MINUTE)))
        first = last - n + 1
        valid = self._mhead - RECENT_MINUTES + 1
        out = []
        for p in range(parts):
            lo = max(first + p * n // parts, valid)
            hi = min(first + (p + 1) * n // parts - 1, self._mhead)
            if hi < lo:
                out.append((0.0, 0.0))
                continue
            i, j = lo % RECENT_MINUTES, hi % RECENT_MINUTES + 1
            if i < j:
                out.append((sum(self._mcost[i:j]), sum(self._mreq[i:j])))
            else:  # the slice wraps around the ring
                out.append(
                    (sum(self._mcost[i:]) + sum(self._mcost[:j]), sum(self._mreq[i:]) + sum(self._mreq[:j]))
                )
        return out

    def covered_hours(self, h: int) -> int:
        """Complete hours of history before hour `h` (how long keywatch has watched, capped at 28 days)."""
        return max(0, min(HISTORY_HOURS - 1, h - hour_of(self.started_at + MINUTE)))

    def stats(self, h: int) -> HourStats:
        """HourStats of the (up to) 7 days before hour `h`, cached per hour and revision."""
        key = (h, self.revision)
        cached = self._stats.get(key)
        if cached is None:
            if len(self._stats) >= 2:
                self._stats.clear()
            cached = self._stats[key] = self._compute_stats(h)
        return cached

    def hours_before(self, h: int, n: int) -> tuple[list[float], list[float], bytes]:
        """Spend, requests and marks of the `n` hours before hour `h`, oldest first, from array
        slices (no per-hour Python work): hours after the newest bucket are zeros."""
        lo = h - n
        known = max(0, min(h, self._head + 1) - lo)  # hours up to the head; the rest had no data
        cost: list[float] = []
        req: list[float] = []
        flags = b""
        if known:
            i, j = lo % HISTORY_HOURS, (lo + known) % HISTORY_HOURS
            if i < j:
                cost, req, flags = self._cost[i:j].tolist(), self._req[i:j].tolist(), bytes(self._flag[i:j])
            else:
                cost = self._cost[i:].tolist() + self._cost[:j].tolist()
                req = self._req[i:].tolist() + self._req[:j].tolist()
                flags = bytes(self._flag[i:]) + bytes(self._flag[:j])
        pad = n - known
        return cost + [0.0] * pad, req + [0.0] * pad, flags + bytes(pad)

    def _compute_stats(self, h: int) -> HourStats:
        n = min(STATS_HOURS, self.covered_hours(h))
        cost, req, flags = self.hours_before(h, n)
        kept = [i for i in range(n) if not flags[i]]
        values = [cost[i] for i in kept]
        counted = len(values)
        active = sorted(v for v in values if v > 0)
        # Noise pairs: the same hour a day apart, both unmarked, on the same kind of day (a
        # weekday against a Saturday would measure the weekend, not the noise).
        first_day = (h - n) // 24
        day_is_weekend = [is_weekend_hour(d * 24) for d in range(first_day, (h - 1) // 24 + 1)]
        weekend = [day_is_weekend[(h - n + i) // 24 - first_day] for i in range(n)]
        diffs = sorted(
            abs(cost[i] - cost[i - 24]) / (cost[i] + cost[i - 24])
            for i in kept
            if i >= 24 and not flags[i - 24] and cost[i] + cost[i - 24] > 0 and weekend[i] == weekend[i - 24]
        )
        return HourStats(
            hours=counted,
            mean_cost=sum(values) / counted if counted else 0.0,
            mean_requests=sum(req[i] for i in kept) / counted if counted else 0.0,
            zero_share=(counted - len(active)) / counted if counted else 1.0,
            active_level=_median_sorted(active) if active else 0.0,
            burst_level=active[int(0.9 * (len(active) - 1))] if active else 0.0,
            noise=2.1 * _median_sorted(diffs) if len(diffs) >= 12 else 0.0,
        )

    def memo(self, key: str) -> tuple[Any, Any] | None:
        """A detector's cache slot: (cache key, value) or None. Detectors own what they put here."""
        return self._memo.get(key)

    def set_memo(self, key: str, cache_key: Any, value: Any) -> None:
        self._memo[key] = (cache_key, value)

    # --- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot (caches are not kept; they rebuild on the next evaluation)."""
        return {
            "v": _VERSION,
            "started_at": self.started_at,
            "idle_since": self.idle_since,
            "last_active": self.last_active,
            "run_start": self.run_start,
            "prev_active": self.prev_active,
            "step": self.step,
            "has_requests": self.has_requests,
            "last_obs": self._last_obs,
            "head": self._head,
            "mhead": self._mhead,
            "marks": [self._run_first, self._run_last, self._relearn_until],
            "cost": _pack(self._cost),
            "req": _pack(self._req),
            "flag": base64.b64encode(bytes(self._flag)).decode(),
            "mcost": _pack(self._mcost),
            "mreq": _pack(self._mreq),
            "models": self.models,
            "ips": self.ips,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenHistory:
        if d.get("v") != _VERSION:
            raise ValueError(f"unsupported TokenHistory version {d.get('v')!r}")
        s = cls(d["started_at"], idle_since=d["idle_since"])
        s.last_active, s.run_start, s.prev_active = d["last_active"], d["run_start"], d["prev_active"]
        s.step, s.has_requests, s._last_obs = d["step"], d["has_requests"], d["last_obs"]
        s._head, s._mhead = d["head"], d["mhead"]
        s._run_first, s._run_last, s._relearn_until = d["marks"]
        s._cost, s._req = _unpack(d["cost"], HISTORY_HOURS), _unpack(d["req"], HISTORY_HOURS)
        s._mcost, s._mreq = _unpack(d["mcost"], RECENT_MINUTES), _unpack(d["mreq"], RECENT_MINUTES)
        s._flag = bytearray(base64.b64decode(d["flag"]))
        if len(s._flag) != HISTORY_HOURS:
            raise ValueError("TokenHistory marks have the wrong length")
        s.models = {k: [float(x) for x in v] for k, v in d["models"].items()}
        s.ips = {k: [float(x) for x in v] for k, v in d["ips"].items()}
        return s

    def to_bytes(self) -> bytes:
        return zlib.compress(json.dumps(self.to_dict(), separators=(",", ":")).encode(), 6)

    @classmethod
    def from_bytes(cls, blob: bytes) -> TokenHistory:
        return cls.from_dict(json.loads(zlib.decompress(blob)))


def _pack(a: array[float]) -> str:
    if sys.byteorder == "big":  # stored little-endian whatever the machine
        a = array("f", a)
        a.byteswap()
    return base64.b64encode(a.tobytes()).decode()


def _unpack(text: str, n: int) -> array[float]:
    a = array("f")
    a.frombytes(base64.b64decode(text))
    if sys.byteorder == "big":
        a.byteswap()
    if len(a) != n:
        raise ValueError("TokenHistory ring has the wrong length")
    return a


def is_weekend_hour(h: int) -> bool:
    """Whether absolute hour `h` falls on a Saturday or Sunday (UTC)."""
    return (h // 24 + 3) % 7 >= 5  # day 0 of the epoch was a Thursday (weekday 3)


def _evict(table: dict[str, Ident]) -> None:
    """Drop the least recently seen quarter (amortised: a swarm evicts once per 512 new IPs)."""
    by_last = sorted(table, key=lambda k: table[k][1])
    for k in by_last[: max(1, len(by_last) // 4)]:
        del table[k]


def _median_sorted(v: list[float]) -> float:
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2
