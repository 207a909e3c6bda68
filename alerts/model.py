"""The values that flow between the alert stages: what a rule found, and what an alert is."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from monitor.model import Severity

__all__ = ["AlertState", "Finding", "Severity", "Signal"]

AlertState = Literal["inactive", "pending", "firing", "resolved"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's verdict about one subject in one evaluation.

    Rules return a Finding for every subject whose condition holds *now*; a subject a rule
    evaluated but found fine simply has no Finding. `labels` identify the alert (rule, provider,
    token, plus rule-specific ones such as window/threshold) and must be stable across polls.
    """

    rule: str
    labels: Mapping[str, str]
    severity: Severity
    value: float
    summary: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    for_polls: int = 1  # consecutive evaluations before pending turns firing
    keep_firing_for: float = 0.0  # seconds an alert stays firing after its condition clears

    @property
    def fingerprint(self) -> str:
        return alert_fingerprint(self.rule, self.labels)


@dataclass(frozen=True, slots=True)
class Signal:
    """One piece of evidence a detector found (the leak rule's signals), with its numbers."""

    name: str
    detail: str
    counted: bool = True  # False: shown to people, but not evidence enough to act on


def alert_fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """A stable identity for an alert: rule plus its sorted labels."""
    parts = [rule] + [f"{k}={labels[k]}" for k in sorted(labels) if k != "rule"]
    return "|".join(parts)
