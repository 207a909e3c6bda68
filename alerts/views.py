"""The JSON shapes of silences, shared by the CLI and the HTTP API.

Rows an older version stored may hold anything (an end in the year 10**10, a lone surrogate in a
matcher): a listing renders them all rather than fail on one."""

from __future__ import annotations

from typing import Any

from alerts.lifecycle.records import Silence
from monitor.views import iso_clamped

__all__ = ["silence_row"]


def _text(s: str) -> str:
    """`s` as valid UTF-8 text (JSON encoders refuse lone surrogates)."""
    return s.encode("utf-8", "replace").decode("utf-8")


def silence_row(s: Silence, now: float) -> dict[str, Any]:
    return {
        "id": s.id,
        "matchers": [_text(str(m)) for m in s.matchers],
        "starts_at": iso_clamped(s.starts_at),
        "ends_at": iso_clamped(s.ends_at),
        "created_by": _text(s.created_by),
        "comment": _text(s.comment),
        "status": s.status(now),
    }
