"""Small, strict readers for relay JSON: a malformed field raises Malformed, never a guess."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = ["Malformed", "opt_float", "opt_int", "opt_money", "opt_time", "req_str", "str_list"]


class Malformed(ValueError):
    """A relay answer that does not have the documented shape; the message names the field."""


def req_str(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise Malformed(f"missing or invalid '{key}'")
    return str(value)


def opt_float(entry: Mapping[str, Any], key: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(f"'{key}' is not a number")
    return float(value)


def opt_money(entry: Mapping[str, Any], key: str) -> float | None:
    """A usage figure: a number, never negative."""
    value = opt_float(entry, key)
    if value is not None and (value < 0 or value != value):
        raise Malformed(f"'{key}' is negative")
    return value


def opt_int(entry: Mapping[str, Any], key: str) -> int | None:
    value = opt_float(entry, key)
    if value is None:
        return None
    if value < 0:
        raise Malformed(f"'{key}' is negative")
    return int(value)


def opt_time(entry: Mapping[str, Any], key: str) -> float | None:
    """ISO-8601 text or epoch seconds; None for null."""
    value = entry.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Malformed(f"'{key}' is not a time")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise Malformed(f"'{key}' is not an ISO-8601 time") from None
    raise Malformed(f"'{key}' is not a time")


def str_list(entry: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = entry.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Malformed(f"'{key}' is not a list of strings")
    return tuple(value)
