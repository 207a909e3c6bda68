"""The relay's own clock, from the `Date` header of its answers.

Log and usage windows are placed on the relay's time, not ours: a relay whose clock runs ahead
or behind (or a simulated one) would otherwise be asked for rows it has not written yet, and a
window that ends "a few seconds ago" by our clock could end in its future. Usage periods (day,
month) are also placed on it: a relay that is frozen or a local clock that steps cannot turn a
period the relay itself did not turn."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import TypeVar

from monitor.providers.http import RelayResponse

__all__ = ["relay_now"]

_T = TypeVar("_T", float, None)


def relay_now(response: RelayResponse, fallback: _T) -> float | _T:
    """Epoch seconds of the relay's `Date` (whole seconds), or `fallback` without a usable one."""
    value = response.headers.get("Date")
    if not value or len(value) > 64:
        return fallback
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, OverflowError, IndexError):
        return fallback
