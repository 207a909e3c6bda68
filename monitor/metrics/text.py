"""Prometheus text exposition (format 0.0.4), written directly.

`prometheus_client.generate_latest` spends ~1.65 s on 100,000 series even from a custom
collector (measured: `make bench`, bench/metrics_scrape.py); keywatch renders each token's lines once when the token changes
and joins cached strings per scrape-cache refresh, which keeps a 10,000-token render in tens of
milliseconds. The format is checked against prometheus_client's own parser in the tests and by
`promtool check metrics` in CI.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

__all__ = ["escape", "fmt_value", "header", "labels", "sample"]


def escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def labels(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    inner = ",".join(f'{k}="{escape(v)}"' for k, v in items)
    return "{" + inner + "}" if inner else ""


def fmt_value(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def header(name: str, kind: str, help_text: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


def sample(name: str, label_text: str, value: float) -> str:
    return f"{name}{label_text} {fmt_value(value)}\n"
