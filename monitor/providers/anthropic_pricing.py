"""Claude list prices, for pricing the Anthropic usage report (tokens per key, no money).

USD per 1M tokens, from the pricing page (platform.claude.com/docs/en/about-claude/pricing).
The usage report names dated models (`claude-sonnet-4-5-20250929`): the longest known prefix
prices them; unknown models get DEFAULT_PRICE. Batch-tier usage costs half of every token rate;
a web search costs WEB_SEARCH_USD. What the table cannot know (long-context and regional
premiums, Haiku 5.5's long-prompt band, prices that changed since) the daily calibration in
`anthropic_usage` corrects: it scales every key's list price by what Anthropic billed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "BATCH_FACTOR",
    "DEFAULT_PRICE",
    "PRICES",
    "WEB_SEARCH_USD",
    "ClaudePrice",
    "TokenCounts",
    "price_of",
]

BATCH_FACTOR = 0.5  # the Message Batches discount, on input, cache and output tokens alike
WEB_SEARCH_USD = 10.0 / 1000  # $10 per 1,000 searches, whatever the tier


@dataclass(frozen=True, slots=True)
class ClaudePrice:
    input: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    output: float


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """One usage-report result's counts: input is split in four classes, each priced apart."""

    uncached_input: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    output: int = 0
    web_searches: int = 0

    @property
    def input_total(self) -> int:
        return self.uncached_input + self.cache_write_5m + self.cache_write_1h + self.cache_read

    def tokens_usd(self, price: ClaudePrice, *, batch: bool = False) -> float:
        """The token part at list prices (web searches are `searches_usd`)."""
        usd = (
            self.uncached_input * price.input
            + self.cache_write_5m * price.cache_write_5m
            + self.cache_write_1h * price.cache_write_1h
            + self.cache_read * price.cache_read
            + self.output * price.output
        ) / 1_000_000
        return usd * BATCH_FACTOR if batch else usd

    @property
    def searches_usd(self) -> float:
        return self.web_searches * WEB_SEARCH_USD


def _p(inp: float, w5: float, w1: float, read: float, out: float) -> ClaudePrice:
    return ClaudePrice(inp, w5, w1, read, out)


_OPUS_45 = _p(5.0, 6.25, 10.0, 0.50, 25.0)
_OPUS_4 = _p(15.0, 18.75, 30.0, 1.50, 75.0)
_SONNET_4 = _p(3.0, 3.75, 6.0, 0.30, 15.0)
_FABLE_5 = _p(10.0, 12.5, 20.0, 1.0, 50.0)
_FABLE_51 = _p(10.0, 12.5, 20.0, 0.25, 50.0)

PRICES: dict[str, ClaudePrice] = {
    "claude-fable-5-1": _FABLE_51,
    "claude-mythos-5-1": _FABLE_51,
    "claude-fable-5": _FABLE_5,
    "claude-mythos-5": _FABLE_5,
    "claude-opus-5-5": _p(4.0, 5.0, 8.0, 0.20, 20.0),
    "claude-opus-5": _OPUS_45,
    "claude-opus-4-8": _OPUS_45,
    "claude-opus-4-7": _OPUS_45,
    "claude-opus-4-6": _OPUS_45,
    "claude-opus-4-5": _OPUS_45,
    "claude-opus-4-1": _OPUS_4,
    "claude-opus-4-0": _OPUS_4,
    "claude-opus-4-2025": _OPUS_4,  # claude-opus-4-20250514
    "claude-3-opus": _OPUS_4,
    "claude-sonnet-5-5": _p(2.0, 2.5, 4.0, 0.10, 10.0),  # cache reads cut to 0.05x on 2026-10-07
    "claude-sonnet-5": _p(2.0, 2.5, 4.0, 0.20, 10.0),
    "claude-sonnet-4-6": _SONNET_4,
    "claude-sonnet-4-5": _SONNET_4,
    "claude-sonnet-4-0": _SONNET_4,
    "claude-sonnet-4-2025": _SONNET_4,  # claude-sonnet-4-20250514
    "claude-3-7-sonnet": _SONNET_4,
    "claude-3-5-sonnet": _SONNET_4,
    "claude-haiku-5-5": _p(0.10, 0.125, 0.20, 0.01, 0.50),  # prompts up to 100k tokens
    "claude-haiku-4-5": _p(1.0, 1.25, 2.0, 0.10, 5.0),
    "claude-3-5-haiku": _p(0.80, 1.0, 1.6, 0.08, 4.0),
    "claude-3-haiku": _p(0.25, 0.30, 0.50, 0.03, 1.25),
}
DEFAULT_PRICE = _SONNET_4


@lru_cache(maxsize=1024)
def price_of(model: str) -> ClaudePrice:
    if model in PRICES:
        return PRICES[model]
    best = max((name for name in PRICES if model.startswith(name)), key=len, default=None)
    return PRICES[best] if best is not None else DEFAULT_PRICE
