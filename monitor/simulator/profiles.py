"""Traffic archetypes: each is a weekly shape (168 hourly weights, mean 1) and a typical spend."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "LEAK_MODELS",
    "MODEL_PRICES",
    "NORMAL_MODELS",
    "PROFILES",
    "Archetype",
    "price_of",
]


class Archetype(StrEnum):
    BUSINESS = "business"  # office hours on weekdays
    SERVICE = "service"  # a 24x7 backend with a mild daily swing
    BATCH = "batch"  # a nightly job
    SPARSE = "sparse"  # a developer trying things now and then
    IDLE = "idle"  # never spends (unused, stale, revoked or expired)
    DORMANT = "dormant"  # used to spend, has gone quiet: the classic leak victim


# Average list price of one request, USD (a blend of prompt and completion tokens).
MODEL_PRICES: dict[str, float] = {
    "gpt-4o-mini": 0.0009,
    "gpt-4o": 0.011,
    "claude-3-5-haiku": 0.0035,
    "claude-3-5-sonnet": 0.016,
    "gemini-2.0-flash": 0.0006,
    "deepseek-chat": 0.0012,
    "o1": 0.085,
}
NORMAL_MODELS: tuple[str, ...] = (
    "gpt-4o-mini",
    "gpt-4o",
    "claude-3-5-haiku",
    "claude-3-5-sonnet",
    "gemini-2.0-flash",
    "deepseek-chat",
)
LEAK_MODELS: tuple[str, ...] = ("gpt-4o", "o1")
_DEFAULT_PRICE = 0.01


def price_of(model: str) -> float:
    return MODEL_PRICES.get(model, _DEFAULT_PRICE)


def _week(weekday: list[float], weekend_factor: float) -> tuple[float, ...]:
    weekend = [w * weekend_factor for w in weekday]
    raw = weekday * 5 + weekend * 2
    mean = sum(raw) / len(raw)
    return tuple(w / mean for w in raw)


# hour 0..23 weights of one weekday; weekends are scaled down by _week
_BUSINESS_DAY = [0.03] * 7 + [0.3, 0.8] + [1.6] * 3 + [1.1] + [1.6] * 4 + [1.0, 0.5] + [0.2] * 3 + [0.05] * 2
_SERVICE_DAY = [0.55] * 6 + [0.8] * 3 + [1.3] * 9 + [1.1] * 4 + [0.8] * 2
_BATCH_DAY = [0.0, 1.0, 1.0, 1.0] + [0.0] * 20
_SPARSE_DAY = [0.05] * 10 + [1.0] * 8 + [0.05] * 6

PROFILES: dict[Archetype, tuple[float, ...]] = {
    Archetype.BUSINESS: _week(_BUSINESS_DAY, 0.1),
    Archetype.SERVICE: _week(_SERVICE_DAY, 0.8),
    Archetype.BATCH: _week(_BATCH_DAY, 1.0),
    Archetype.SPARSE: _week(_SPARSE_DAY, 0.2),
    Archetype.IDLE: (0.0,) * 168,
}
# A dormant token remembers the shape it had while in use (business or service); see fleet.
