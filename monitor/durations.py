"""Durations as operators write them in config files and on the command line: `30s`, `5m`, `1h30m`, `14d`."""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_duration"]

_UNITS: dict[str, float] = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_ORDER = list(_UNITS)  # largest first: a duration names its units in this order, each at most once
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PARTS = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|[wdhms]))+")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|[wdhms])")


def parse_duration(text: str) -> float:
    """Seconds in `text`: `500ms`, `60s`, `5m`, `1h`, `14d`, `1w`, combinations from the largest unit
    down (`1h30m`), or a plain number of seconds (`90`, `0.5`). Raises ValueError otherwise."""
    s = text.strip()
    if _NUMBER.fullmatch(s):
        return float(s)
    if _PARTS.fullmatch(s):
        total, last = 0.0, -1
        for number, unit in _PART.findall(s):
            rank = _ORDER.index(unit)
            if rank <= last:  # "30m1h", "1h1h": almost certainly a typo
                break
            total, last = total + float(number) * _UNITS[unit], rank
        else:
            return total
    raise ValueError(f"invalid duration '{text}' (use e.g. 30s, 5m, 1h, 14d)")


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
