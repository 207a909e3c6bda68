"""List prices per model, for relays that report tokens but not money per key (OpenAI usage).

USD per 1M tokens. OpenAI reports dated model names (`gpt-4o-mini-2024-07-18`): the longest
known prefix prices them. Unknown models get DEFAULT_PRICE, and the daily cost calibration in
`monitor.providers.openai_usage` corrects the level of every price alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

__all__ = ["DEFAULT_PRICE", "PRICES", "Price", "price_of", "priced_usd"]


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    cached_input: float
    output: float


PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
    "gpt-4o": Price(2.50, 1.25, 10.00),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "gpt-4.1": Price(2.00, 0.50, 8.00),
    "o1": Price(15.00, 7.50, 60.00),
    "o3-mini": Price(1.10, 0.55, 4.40),
    "claude-3-5-haiku": Price(0.80, 0.08, 4.00),
    "claude-3-5-sonnet": Price(3.00, 0.30, 15.00),
    "gemini-2.0-flash": Price(0.10, 0.025, 0.40),
    "deepseek-chat": Price(0.27, 0.07, 1.10),
}
DEFAULT_PRICE = Price(2.50, 1.25, 10.00)


@lru_cache(maxsize=1024)
def price_of(model: str) -> Price:
    if model in PRICES:
        return PRICES[model]
    best = max((name for name in PRICES if model.startswith(name)), key=len, default=None)
    return PRICES[best] if best is not None else DEFAULT_PRICE


def priced_usd(model: str, input_tokens: int, cached_tokens: int, output_tokens: int) -> float:
    """List price of one usage row; cached input tokens are part of `input_tokens`."""
    p = price_of(model)
    fresh = max(input_tokens - cached_tokens, 0)
    return (fresh * p.input + cached_tokens * p.cached_input + output_tokens * p.output) / 1_000_000
