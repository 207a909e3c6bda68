"""Absurd numbers on a list entry, as a hostile or buggy relay was found to send them (the
`absurd` hostile mode). Only fields the entry already has are changed.

    huge      usage near the double maximum (1e308), request counts past int64 (10**19);
              one-api family: `used_quota` an integer of 41 digits
    epoch_ms  the expiry in epoch milliseconds (an expiry 30 days out for tokens without one);
              laozhang's `expires_at` becomes a number instead of an ISO-8601 string
    negative  usage -1e308, counts and quota at int64's minimum
    nan       JSON has no NaN: the string "NaN" where a number belongs
    overflow  the literal 1e400 written raw into the body (orjson.Fragment): valid JSON grammar,
              past the double range (Python's json reads inf; orjson rejects the whole document)
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["absurd_entry"]

_MAX_DOUBLE = 1.7976931348623157e308
_INT64_MIN = -(2**63)
_OVERFLOW = orjson.Fragment(b"1e400")
_HUGE_INT = orjson.Fragment(b"1" + b"0" * 40)  # beyond any fixed-width integer
_MONTH = 30 * 86_400

# kind -> (day/month usage, request count, one-api family used_quota)
_VALUES: dict[str, tuple[Any, Any, Any]] = {
    "huge": ((1e308, _MAX_DOUBLE), 10**19, _HUGE_INT),
    "negative": ((-1e308, -1e308), _INT64_MIN, _INT64_MIN),
    "nan": (("NaN", "NaN"), "NaN", "NaN"),
    "overflow": ((_OVERFLOW, _OVERFLOW), _OVERFLOW, _OVERFLOW),
}


def absurd_entry(view: dict[str, Any], kind: str | None, expires_at: float | None, now: float) -> None:
    """Put `kind`'s absurd values on one list entry in place (a laozhang Token or a one-api
    family token); None leaves it alone."""
    if kind is None:
        return
    if kind == "epoch_ms":
        ms = round((expires_at if expires_at is not None else now + _MONTH) * 1000)
        for name in ("expires_at", "expired_time"):
            if name in view:
                view[name] = ms
        return
    (today, month), requests, quota = _VALUES[kind]
    for name, value in (
        ("today_usage", today),
        ("month_usage", month),
        ("today_requests", requests),
        ("used_quota", quota),
    ):
        if name in view:
            view[name] = value
