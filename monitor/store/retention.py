"""Retention: raw deltas, request-log rows and poll runs older than `retention.raw`, hourly rollups
older than `retention.hourly`. Token rows stay: their lifetime counters are what `_total` metrics derive from."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from monitor.settings import Retention

__all__ = ["Pruned", "prune"]


@dataclass(frozen=True, slots=True)
class Pruned:
    deltas: int
    hourly: int
    poll_runs: int
    requests: int = 0  # request_log rows


def prune(engine: Engine, retention: Retention, *, now: float) -> Pruned:
    raw_cutoff, hourly_cutoff = now - retention.raw, now - retention.hourly
    with engine.begin() as conn:
        deltas = conn.exec_driver_sql("DELETE FROM usage_deltas WHERE ts < ?", (raw_cutoff,)).rowcount
        hourly = conn.exec_driver_sql(
            "DELETE FROM usage_hourly WHERE hour < ?", (int(hourly_cutoff),)
        ).rowcount
        runs = conn.exec_driver_sql("DELETE FROM poll_runs WHERE started_at < ?", (raw_cutoff,)).rowcount
        requests = conn.exec_driver_sql("DELETE FROM request_log WHERE ts < ?", (raw_cutoff,)).rowcount
    return Pruned(deltas, hourly, runs, requests)
