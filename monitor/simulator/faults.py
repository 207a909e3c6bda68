"""Fault knobs for the simulator's API routes: seeded, so a test sees the same faults every run."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

__all__ = ["Faults", "Outcome"]


class Outcome(Enum):
    OK = "ok"
    ERROR = "error"  # answer with `status` (a 5xx)
    RATE_LIMIT = "rate_limit"  # 429 with Retry-After: 1
    MALFORMED = "malformed"  # 200 with a body that is not valid JSON


_RATES = ("error_rate", "rate_limit_rate", "malformed_rate", "malformed_token_rate")


@dataclass
class Faults:
    error_rate: float = 0.0  # fraction of requests answered with `status`
    status: int = 500  # which 5xx
    rate_limit_rate: float = 0.0  # fraction answered 429
    latency: float = 0.0  # seconds added to every affected answer
    malformed_rate: float = 0.0  # fraction answered with a truncated JSON body
    malformed_token_rate: float = 0.0  # fraction of list entries missing fields or with negative usage
    fail_next: int = 0  # the next N affected requests fail with `status`, whatever the rates
    routes: frozenset[str] | None = None  # route names faults apply to (None = every API route)
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _entry_rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.reseed(self.seed)

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self._rng = random.Random(f"{seed}:faults")
        self._entry_rng = random.Random(f"{seed}:faults:entries")

    def update(self, **changes: Any) -> None:
        """Set knobs by name, validating all before changing any."""
        known = {f.name for f in fields(self) if not f.name.startswith("_")}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault knob(s): {', '.join(sorted(unknown))}")
        merged = {name: getattr(self, name) for name in known} | changes
        for name in _RATES:
            if not 0.0 <= float(merged[name]) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if merged["error_rate"] + merged["rate_limit_rate"] + merged["malformed_rate"] > 1.0:
            raise ValueError("error_rate + rate_limit_rate + malformed_rate must not exceed 1")
        if not 500 <= int(merged["status"]) <= 599:
            raise ValueError("status must be a 5xx")
        if float(merged["latency"]) < 0 or int(merged["fail_next"]) < 0:
            raise ValueError("latency and fail_next must be >= 0")
        routes = merged["routes"]
        merged["routes"] = None if routes is None else frozenset(str(r) for r in routes)
        seed = int(merged.pop("seed"))
        for name, value in merged.items():
            setattr(self, name, value)
        if "seed" in changes:
            self.reseed(seed)

    def reset(self) -> None:
        """All knobs off; the random stream restarts from the seed."""
        self.update(
            error_rate=0.0, status=500, rate_limit_rate=0.0, latency=0.0, malformed_rate=0.0,
            malformed_token_rate=0.0, fail_next=0, routes=None, seed=self.seed,
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        out["routes"] = None if self.routes is None else sorted(self.routes)
        return out

    def applies_to(self, route: str) -> bool:
        return self.routes is None or route in self.routes

    def decide(self) -> Outcome:
        """One draw per request, so the outcome sequence depends only on the seed and the knobs."""
        if self.fail_next > 0:
            self.fail_next -= 1
            return Outcome.ERROR
        u = self._rng.random()
        if u < self.error_rate:
            return Outcome.ERROR
        u -= self.error_rate
        if u < self.rate_limit_rate:
            return Outcome.RATE_LIMIT
        u -= self.rate_limit_rate
        if u < self.malformed_rate:
            return Outcome.MALFORMED
        return Outcome.OK

    def corrupt_entry(self) -> str | None:
        """For one list entry: None, "missing" (a required field dropped) or "negative" usage."""
        if self.malformed_token_rate <= 0.0 or self._entry_rng.random() >= self.malformed_token_rate:
            return None
        return "missing" if self._entry_rng.random() < 0.5 else "negative"

    def pick(self, options: tuple[str, ...]) -> str:
        return options[int(self._entry_rng.random() * len(options))]
