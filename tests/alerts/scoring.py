"""Scoring a backtest against a labelled truth: the shared sample's score.py metrics, plus what the
spend-only targets ask for (how fast each kind of leak is quarantined).

Events (truth["events"]): `leak` must raise leak_suspected and be quarantined; `spike` should raise
spend_anomaly (or leak_suspected) and must not be quarantined; `benign` must not be quarantined.
A false alarm is a spend_anomaly or leak_suspected on an event-free token after the warm-up.
Delays are in polls (truth["step_seconds"]) from the onset to the first quarantine.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

__all__ = ["Score", "score"]


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Score:
    leaks: int = 0
    caught: int = 0  # leak_suspected fired in the episode
    quarantined: int = 0
    missed: list[str] = field(default_factory=list)
    delays: dict[str, float] = field(default_factory=dict)  # token -> polls from onset to quarantine
    kinds: dict[str, str] = field(default_factory=dict)  # token -> leak kind
    false_quarantines: list[str] = field(default_factory=list)
    spikes: int = 0
    spikes_caught: int = 0
    spikes_missed: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)
    token_weeks: float = 0.0

    @property
    def false_alarm_rate(self) -> float:
        return 100 * len(self.false_alarms) / self.token_weeks if self.token_weeks else 0.0

    @property
    def median_delay(self) -> float | None:
        return statistics.median(self.delays.values()) if self.delays else None

    def delay_of(self, *kinds: str) -> list[float]:
        return [d for t, d in self.delays.items() if self.kinds[t] in kinds]

    def line(self) -> str:
        med = self.median_delay
        return (
            f"leaks quarantined {self.quarantined}/{self.leaks} (alerted {self.caught}), median delay "
            f"{'-' if med is None else f'{med:g}'} polls, false quarantines {len(self.false_quarantines)}, "
            f"spikes {self.spikes_caught}/{self.spikes}, false alarms {self.false_alarm_rate:.2f}/100 token-weeks"
        )


def score(truth: dict[str, Any], alerts: list[dict[str, Any]]) -> Score:
    step = timedelta(seconds=truth["step_seconds"])
    warm, end = _ts(truth["warm_until"]), _ts(truth["end"])
    events: dict[str, dict[str, Any]] = truth["events"]
    firing = [a for a in alerts if a.get("state") == "firing"]
    s = Score()

    def in_episode(a: dict[str, Any], e: dict[str, Any]) -> bool:
        on = _ts(e["onset"])
        return on <= _ts(a["ts"]) <= on + timedelta(hours=e["hours"] + 1)

    for token, e in events.items():
        if e["type"] == "leak":
            s.leaks += 1
            s.kinds[token] = e["kind"]
            if any(
                a["token"] == token and a["rule"] == "leak_suspected" and in_episode(a, e) for a in firing
            ):
                s.caught += 1
            acted = [
                _ts(a["ts"])
                for a in alerts
                if a["token"] == token and a.get("action") == "quarantine" and _ts(a["ts"]) >= _ts(e["onset"])
            ]
            if acted:
                s.quarantined += 1
                s.delays[token] = (min(acted) - _ts(e["onset"])) / step
            else:
                s.missed.append(f"{token}({e['kind']})")
        elif e["type"] == "spike":
            s.spikes += 1
            if any(
                a["token"] == token and a["rule"] in ("spend_anomaly", "leak_suspected") and in_episode(a, e)
                for a in firing
            ):
                s.spikes_caught += 1
            else:
                s.spikes_missed.append(token)
    for a in alerts:
        if a.get("action") != "quarantine":
            continue
        e = events.get(a["token"])
        if not (e and e["type"] == "leak" and _ts(a["ts"]) >= _ts(e["onset"])):
            s.false_quarantines.append(f"{a['token']}@{a['ts']}")
    clean = [t for t in truth["tokens"] if t not in events]
    s.false_alarms = [
        f"{a['token']}:{a['rule']}@{a['ts']}"
        for a in firing
        if a["token"] in clean and a["rule"] in ("spend_anomaly", "leak_suspected") and _ts(a["ts"]) >= warm
    ]
    s.token_weeks = len(clean) * ((end - warm) / timedelta(days=7))
    return s
