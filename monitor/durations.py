"""Durations as operators write them in config files and on the command line: `30s`, `5m`, `1h30m`, `14d`."""

from __future__ import annotations

import math
import re
from typing import Final

__all__ = ["MAX_DURATION_SECONDS", "MAX_DURATION_TEXT", "check_seconds", "format_duration", "parse_duration"]

# A century: longer than anything keywatch schedules or keeps, and far inside what datetime,
# timedelta and APScheduler can represent (year 9999), so a typo cannot overflow them later.
MAX_DURATION_SECONDS: Final = 100 * 365 * 86400.0
# `1w2d3h4m5s6ms` is 13 characters; no honest duration needs more, and longer text costs work.
MAX_DURATION_TEXT: Final = 64

_UNITS: dict[str, float] = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_ORDER = list(_UNITS)  # largest first: a duration names its units in this order, each at most once
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PARTS = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|[wdhms]))+")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|[wdhms])")


def parse_duration(text: str) -> float:
    """Seconds in `text`: `500ms`, `60s`, `5m`, `1h`, `14d`, `1w`, combinations from the largest unit
    down (`1h30m`), or a plain number of seconds (`90`, `0.5`), at most 100 years. Raises
    ValueError otherwise."""
    s = text.strip()
    if len(s) > MAX_DURATION_TEXT:
        raise ValueError(f"invalid duration '{s[:16]}...': {len(s)} characters, at most {MAX_DURATION_TEXT}")
    if _NUMBER.fullmatch(s):
        return check_seconds(float(s), s)
    if _PARTS.fullmatch(s):
        total, last = 0.0, -1
        for number, unit in _PART.findall(s):
            rank = _ORDER.index(unit)
            if rank <= last:  # "30m1h", "1h1h": almost certainly a typo
                break
            total, last = total + float(number) * _UNITS[unit], rank
        else:
            return check_seconds(total, s)
    raise ValueError(f"invalid duration '{text}' (use e.g. 30s, 5m, 1h, 14d)")


def check_seconds(seconds: float, text: str | None = None) -> float:
    """`seconds` if it is a duration keywatch can use: finite, not negative, at most 100 years."""
    shown = text if text is not None else f"{seconds:g}s"
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"invalid duration '{shown}' (use e.g. 30s, 5m, 1h, 14d)")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"duration '{shown}' is too long (at most 100 years, 36500d)")
    return seconds


def format_duration(seconds: float) -> str:
    """The short form parse_duration reads back: 90 -> `1m30s`, 1209600 -> `14d`, 0.25 -> `250ms`."""
    if seconds < 0:
        raise ValueError(f"negative duration: {seconds}")
    millis = round(seconds * 1000)
    whole, ms = divmod(millis, 1000)
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, whole = divmod(whole, int(_UNITS[unit]))
        if count:
            parts.append(f"{count}{unit}")
    if ms:
        parts.append(f"{ms}ms")
    return "".join(parts) or "0s"
