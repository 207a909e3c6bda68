"""Small, strict readers for relay JSON: a malformed field raises Malformed, never a guess.

Every number a relay sends is checked for sense before keywatch does arithmetic or SQL with it:
non-finite, negative or absurd values (beyond what any honest relay reports) skip the token for
the cycle with a reason, so one bad entry can neither poison a lifetime counter (1e308 twice is
+Inf for good) nor overflow a database column and fail the whole provider (1e19 requests).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from monitor.model import Skip

__all__ = [
    "MAX_COUNT",
    "MAX_TEXT",
    "MAX_USD",
    "Malformed",
    "check_count",
    "check_money",
    "entry_print",
    "epoch_seconds",
    "opt_float",
    "opt_int",
    "opt_money",
    "opt_time",
    "req_str",
    "skip_entry",
    "str_list",
]

MAX_USD = 1e9  # a billion dollars in one usage figure: no honest relay reports that for one key
MAX_COUNT = 10**12  # requests or tokens in one figure; far below SQLite's 2**63 integers
MAX_TEXT = 256  # a token id or name; longer is not a name a person gave
MAX_LIST = 1_000  # entries in a model or IP list
_LATEST = 253_402_300_799.0  # 9999-12-31T23:59:59Z: what datetime can show
# Epoch times beyond this many seconds (year 5138) are in a finer unit: ms, then µs, then ns.
_FINER_UNITS = ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3))


class Malformed(ValueError):
    """A relay answer that does not have the documented shape; the message names the field and
    `reason` is the label of keywatch_poll_errors_total it is counted under."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


def skip_entry(entry: object, exc: Malformed) -> Skip:
    """The Skip for a list entry that did not parse: named by what of it can still be read."""
    fields = entry if isinstance(entry, dict) else {}
    raw_id, raw_name = fields.get("id"), fields.get("name")
    token_id = (
        str(raw_id)[:MAX_TEXT] if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    )
    label = raw_name if isinstance(raw_name, str) and raw_name else token_id
    return Skip(str(label or "?")[:MAX_TEXT], exc.reason, str(exc), token_id=token_id or None)


def req_str(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise Malformed(f"missing or invalid '{key}'")
    text = str(value)
    if len(text) > MAX_TEXT:
        raise Malformed(f"'{key}' is longer than {MAX_TEXT} characters", "absurd_value")
    return text


def opt_float(entry: Mapping[str, Any], key: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(f"'{key}' is not a number")
    if isinstance(value, int) and abs(value) > 2**63:
        raise Malformed(f"'{key}' is absurdly large", "absurd_value")
    number = float(value)
    if not math.isfinite(number):
        raise Malformed(f"'{key}' is not a finite number", "absurd_value")
    return number


def check_money(value: float, key: str) -> float:
    """A usage figure in USD: finite, not negative, not absurd."""
    if value != value or value < 0:
        raise Malformed(f"'{key}' is negative", "negative_usage")
    if value > MAX_USD:
        raise Malformed(f"'{key}' is over ${MAX_USD:.0e}: not a real usage figure", "absurd_value")
    return value


def check_count(value: float, key: str) -> int:
    """A count (requests, tokens): finite, not negative, not absurd."""
    if value != value or value < 0:
        raise Malformed(f"'{key}' is negative", "negative_usage")
    if value > MAX_COUNT:
        raise Malformed(f"'{key}' is over {MAX_COUNT:.0e}: not a real count", "absurd_value")
    return int(value)


def opt_money(entry: Mapping[str, Any], key: str) -> float | None:
    value = opt_float(entry, key)
    return None if value is None else check_money(value, key)


def opt_int(entry: Mapping[str, Any], key: str) -> int | None:
    value = opt_float(entry, key)
    return None if value is None else check_count(value, key)


def epoch_seconds(value: float, key: str) -> float:
    """Epoch seconds from a number a relay sent in seconds, or (by its size) in ms, µs or ns."""
    if not math.isfinite(value):
        raise Malformed(f"'{key}' is not a time", "absurd_value")
    for beyond, per_second in _FINER_UNITS:
        if abs(value) > beyond:
            value /= per_second
            break
    if not 0 <= value <= _LATEST:
        raise Malformed(f"'{key}' is not a time between 1970 and 9999", "absurd_value")
    return value


def opt_time(entry: Mapping[str, Any], key: str) -> float | None:
    """ISO-8601 text or epoch seconds (or ms, µs, ns); None for null."""
    value = entry.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Malformed(f"'{key}' is not a time")
    if isinstance(value, int | float):
        if isinstance(value, int) and abs(value) > 2**63:
            raise Malformed(f"'{key}' is not a time", "absurd_value")
        return epoch_seconds(float(value), key)
    if isinstance(value, str):
        if len(value) > 64:
            raise Malformed(f"'{key}' is not an ISO-8601 time")
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError):
            raise Malformed(f"'{key}' is not an ISO-8601 time") from None
    raise Malformed(f"'{key}' is not a time")


def str_list(entry: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = entry.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Malformed(f"'{key}' is not a list of strings")
    if len(value) > MAX_LIST or any(len(v) > MAX_TEXT for v in value):
        raise Malformed(f"'{key}' is longer than {MAX_LIST} entries of {MAX_TEXT} characters", "absurd_value")
    return tuple(value)


def entry_print(entry: Any, *, without: str | None = None) -> bytes | None:
    """A list entry's exact bytes (less one secret field), kept to tell next cycle whether the
    entry changed: an unchanged entry reuses its Observation, and ingest skips it. A compact copy
    (orjson's own bytes keep a 4 KB buffer): ~0.3 KB a token where the parsed dict was ~2 KB.
    None for what cannot be printed (then the entry is parsed every time)."""
    if not isinstance(entry, dict):
        return None
    if without is not None and without in entry:
        entry = {k: v for k, v in entry.items() if k != without}
    try:
        return memoryview(orjson.dumps(entry)).tobytes()
    except orjson.JSONEncodeError:
        return None
