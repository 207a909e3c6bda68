"""Token counts behind a simulated cost: relays log prompt/completion tokens, the model books USD.

Counts are derived from the cost at the adapter's list prices (prompt:completion = 4:1), so an
adapter that prices tokens (OpenAI usage) gets the booked cost back, to a token's rounding."""

from __future__ import annotations

from monitor.providers.pricing import price_of

__all__ = ["split_even", "tokens_for"]

_PROMPT_PER_COMPLETION = 4


def tokens_for(cost_usd: float, model: str) -> tuple[int, int]:
    """(prompt, completion) tokens that cost `cost_usd` on `model`."""
    p = price_of(model)
    per_completion = (_PROMPT_PER_COMPLETION * p.input + p.output) / 1_000_000
    completion = cost_usd / per_completion if per_completion > 0 else 0.0
    return round(completion * _PROMPT_PER_COMPLETION), round(completion)


def split_even(total: int, parts: int, index: int) -> int:
    """Part `index` of `total` split into `parts` integers that sum to `total` exactly."""
    base, extra = divmod(total, parts)
    return base + (1 if index < extra else 0)
