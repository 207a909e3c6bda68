"""Dollars in words people read (notifications, alert summaries, evidence).

Two decimals hide small amounts: a token that usually spends $0.18/h read "expected $0.00/h"
beside "spending $1.46/h", as if any use were infinitely unusual. Below a dollar, amounts keep
three significant digits instead; only an exact zero reads "$0"."""

from __future__ import annotations

import math

__all__ = ["usd"]

_SIGNIFICANT = 3


def usd(amount: float) -> str:
    """`amount` dollars: "$1,234.57" from a dollar up, "$0.182", "$0.0046", "$0.50" below it
    (three significant digits, at least two decimals), "$0" for exactly zero, "-$0.25" below."""
    if amount == 0:
        return "$0"
    if not math.isfinite(amount):
        return f"${amount}"
    sign, x = ("-", -amount) if amount < 0 else ("", amount)
    if x >= 1:
        return f"{sign}${x:,.2f}"
    decimals = _SIGNIFICANT - 1 - math.floor(math.log10(x))
    text = f"{x:.{decimals}f}"
    if float(text) >= 1:  # 0.9996 rounds up to a dollar: say it as dollars
        return f"{sign}${x:,.2f}"
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{fraction}"
