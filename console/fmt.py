"""How the console writes numbers and times."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["ago", "money", "pct", "when"]


def money(value: float | None) -> str:
    """`$1,234.56`; `-$3.00` below zero; an em dash when unknown."""
    if value is None:
        return "—"
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}%"


def when(ts: float | None) -> str:
    """`2026-11-28 18:09 UTC`, or an em dash."""
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def ago(ts: float | None, now: float) -> str:
    """`42s ago`, `5m ago`, `3h ago`, `2d ago`; `never` when unknown."""
    if ts is None:
        return "never"
    s = max(0.0, now - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit} ago"
    return f"{int(s)}s ago"
