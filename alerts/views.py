"""The JSON shapes of silences, shared by the CLI and the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alerts.records import Silence

__all__ = ["silence_row"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def silence_row(s: Silence, now: float) -> dict[str, Any]:
    return {
        "id": s.id,
        "matchers": [str(m) for m in s.matchers],
        "starts_at": _iso(s.starts_at),
        "ends_at": _iso(s.ends_at),
        "created_by": s.created_by,
        "comment": s.comment,
        "status": s.status(now),
    }
