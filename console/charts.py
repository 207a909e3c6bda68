"""Server-rendered SVG charts from the stored hourly rollups: a token's daily spend over 30 days,
and its hour-of-week activity (7 rows by 24 columns, UTC), the profile the leak rule learns."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Final

from console.data import HourPoint
from console.fmt import money

__all__ = ["DAYS", "WEEKDAYS", "daily_spend", "heatmap_svg", "hour_of_week", "spend_svg"]

DAYS: Final = 30
DAY: Final = 86400.0
WEEKDAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def daily_spend(points: Sequence[HourPoint], now: float, days: int = DAYS) -> list[tuple[float, float]]:
    """(UTC day start, spend) for each of the `days` days up to and including now's, oldest first."""
    today = now // DAY * DAY
    first = today - (days - 1) * DAY
    totals = [0.0] * days
    for p in points:
        i = int((p.hour - first) // DAY)
        if 0 <= i < days:
            totals[i] += p.cost_usd
    return [(first + i * DAY, round(t, 6)) for i, t in enumerate(totals)]


def hour_of_week(points: Sequence[HourPoint]) -> list[list[int]]:
    """Requests by [weekday Mon..Sun][hour 0..23] (UTC) over the given hours."""
    grid = [[0] * 24 for _ in range(7)]
    for p in points:
        at = datetime.fromtimestamp(p.hour, UTC)
        grid[at.weekday()][at.hour] += p.requests
    return grid


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%b %d")


def spend_svg(days: Sequence[tuple[float, float]], *, title: str) -> str:
    """A bar per day; each bar's <title> says its day and amount (hover and screen readers)."""
    width, height, pad_left, pad_bottom, pad_top = 640, 200, 64, 24, 12
    top = max((v for _, v in days), default=0.0)
    scale = top if top > 0 else 1.0
    plot_w, plot_h = width - pad_left - 8, height - pad_bottom - pad_top
    bar = plot_w / max(len(days), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-labelledby="spend-title">',
        f'<title id="spend-title">{escape(title)}</title>',
        f'<line class="axis" x1="{pad_left}" y1="{pad_top + plot_h}" x2="{width - 8}" y2="{pad_top + plot_h}"/>',
        f'<text class="tick" x="{pad_left - 6}" y="{pad_top + 10}" text-anchor="end">{escape(money(top))}</text>',
        f'<text class="tick" x="{pad_left - 6}" y="{pad_top + plot_h}" text-anchor="end">$0</text>',
    ]
    for i, (day, value) in enumerate(days):
        h = plot_h * value / scale
        x = pad_left + i * bar + 1
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{pad_top + plot_h - h:.1f}" width="{max(bar - 2, 1):.1f}" '
            f'height="{h:.1f}"><title>{escape(_day(day))}: {escape(money(value))}</title></rect>'
        )
    for i in (0, len(days) // 2, len(days) - 1):
        if 0 <= i < len(days):
            x = pad_left + i * bar + bar / 2
            parts.append(
                f'<text class="tick" x="{x:.1f}" y="{height - 6}" text-anchor="middle">{escape(_day(days[i][0]))}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def heatmap_svg(grid: Sequence[Sequence[int]], *, title: str) -> str:
    """7x24 cells, darker for more requests; each cell's <title> says its hour and count."""
    cell, left, top = 22, 40, 18
    width, height = left + 24 * cell + 4, top + 7 * cell + 4
    most = max((v for row in grid for v in row), default=0) or 1
    parts = [
        f'<svg class="chart heatmap" viewBox="0 0 {width} {height}" role="img" aria-labelledby="heat-title">',
        f'<title id="heat-title">{escape(title)}</title>',
    ]
    for h in range(0, 24, 3):
        parts.append(
            f'<text class="tick" x="{left + h * cell + cell / 2}" y="12" text-anchor="middle">{h:02d}</text>'
        )
    for d, row in enumerate(grid):
        y = top + d * cell
        parts.append(f'<text class="tick" x="{left - 6}" y="{y + 15}" text-anchor="end">{WEEKDAYS[d]}</text>')
        for h, value in enumerate(row):
            level = value / most
            parts.append(
                f'<rect class="cell" x="{left + h * cell}" y="{y}" width="{cell - 2}" height="{cell - 2}" '
                f'fill-opacity="{0.08 + 0.92 * level:.2f}"><title>{WEEKDAYS[d]} {h:02d}:00 UTC: '
                f"{value:,} requests</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)
