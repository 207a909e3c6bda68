"""Which policy applies to a token (first `tokens[].match` glob wins) and its effective budgets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from monitor.settings import TokenPolicy
from monitor.tokens import TokenState

__all__ = ["Budgets", "PolicyBook"]


@dataclass(frozen=True, slots=True)
class Budgets:
    day: float | None
    month: float | None


class PolicyBook:
    def __init__(self, policies: Sequence[TokenPolicy], protect: Sequence[str] = ()) -> None:
        self._policies = tuple(policies)
        self._protect = tuple(protect)
        self._cache: dict[str, TokenPolicy | None] = {}

    def policy_for(self, name: str) -> TokenPolicy | None:
        if name not in self._cache:
            self._cache[name] = next((p for p in self._policies if fnmatchcase(name, p.match)), None)
        return self._cache[name]

    def budgets(self, state: TokenState) -> Budgets:
        """Config budgets first; where config gives none, the token's own limits at the relay."""
        policy = self.policy_for(state.name)
        day = policy.budget.daily_usd if policy else None
        month = policy.budget.monthly_usd if policy else None
        limits = state.limits
        if day is None:
            day = limits.daily_usd
        if month is None:
            month = limits.monthly_usd
        return Budgets(day, month)

    def protected(self, name: str) -> bool:
        policy = self.policy_for(name)
        return bool(policy and policy.protected) or any(fnmatchcase(name, g) for g in self._protect)
