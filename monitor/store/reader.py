"""Reads of the usage history: the states the daemon resumes from, and what the CLI shows."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine

from monitor.store.codec import TOKEN_COLUMNS, row_to_state
from monitor.tokens import TokenState

__all__ = ["HistoryPoint", "LoggedRequest", "ProviderFacts", "TokenLookupError", "UsageReader"]


class TokenLookupError(LookupError):
    """A token name that matches no token, or several; `code` is the CLI exit status."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


_SELECT_TOKENS = f"SELECT id, {', '.join(TOKEN_COLUMNS)} FROM tokens"


@dataclass(frozen=True, slots=True)
class ProviderFacts:
    name: str
    kind: str
    first_complete_poll_at: float | None
    last_success_at: float | None


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    ts: float
    cost_usd: float
    requests: int


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    ts: float
    model: str
    ip: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    elapsed_ms: int | None
    request_id: str
    requests: int


class UsageReader:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def token_states(self, provider: str | None = None) -> dict[str, dict[str, TokenState]]:
        """provider -> token id -> state."""
        sql = _SELECT_TOKENS
        params: tuple[str, ...] = ()
        if provider is not None:
            sql, params = sql + " WHERE provider = ?", (provider,)
        out: dict[str, dict[str, TokenState]] = {}
        with self._engine.connect() as conn:
            for row in conn.exec_driver_sql(sql, params):
                state = row_to_state(row)
                out.setdefault(state.provider, {})[state.token_id] = state
        return out

    def providers(self) -> dict[str, ProviderFacts]:
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT name, kind, first_complete_poll_at, last_success_at FROM providers"
            ).all()
        return {r[0]: ProviderFacts(r[0], r[1], r[2], r[3]) for r in rows}

    def consecutive_failures(self, provider: str) -> int:
        """Failed polls since the provider's last success (a restart must not forget an outage)."""
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT ok FROM poll_runs WHERE provider = ? ORDER BY started_at DESC LIMIT 100", (provider,)
            ).all()
        count = 0
        for (ok,) in rows:
            if ok:
                break
            count += 1
        return count

    def poll_error_counts(self) -> dict[tuple[str, str], int]:
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT provider, reason, count FROM poll_errors").all()
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def find_tokens(self, name: str) -> list[TokenState]:
        """Tokens named `name` (or `provider/name`), across providers."""
        provider, _, token = name.rpartition("/")
        sql = _SELECT_TOKENS + " WHERE name = ?" + (" AND provider = ?" if provider else "")
        params = (token, provider) if provider else (token,)
        with self._engine.connect() as conn:
            return [row_to_state(r) for r in conn.exec_driver_sql(sql, params)]

    def tokens_with_key_hash(self, digest: str) -> list[TokenState]:
        """Tokens whose key hashes to `digest`, across providers (a leak report reaching an
        instance that does not poll the token's provider)."""
        with self._engine.connect() as conn:
            return [
                row_to_state(r)
                for r in conn.exec_driver_sql(_SELECT_TOKENS + " WHERE key_sha256 = ?", (digest,))
            ]

    def find_one(self, name: str) -> TokenState:
        """The one token named `name` (or `provider/name`); TokenLookupError says why not."""
        matches = self.find_tokens(name)
        if not matches:
            raise TokenLookupError(f"no token named {name!r} (has `keywatch run` polled it?)", code=1)
        if len(matches) > 1:
            names = ", ".join(f"{m.provider}/{m.name}" for m in matches)
            raise TokenLookupError(f"{name!r} is ambiguous: {names}", code=2)
        return matches[0]

    def hourly(self, token_pk: int, since: float) -> list[HistoryPoint]:
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT hour, cost_usd, requests FROM usage_hourly WHERE token_pk = ? AND hour >= ? ORDER BY hour",
                (token_pk, int(since // 3600 * 3600)),
            ).all()
        return [HistoryPoint(float(r[0]), float(r[1]), int(r[2])) for r in rows]

    def deltas(self, token_pk: int, since: float) -> list[HistoryPoint]:
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT ts, cost_usd, requests FROM usage_deltas WHERE token_pk = ? AND ts >= ? ORDER BY ts",
                (token_pk, since),
            ).all()
        return [HistoryPoint(float(r[0]), float(r[1]), int(r[2])) for r in rows]

    def log_cursor(self, provider: str) -> float | None:
        """Where a provider's request-log polling resumes after a restart: the newest stored row.
        Adapters re-read an overlap before it, and the store drops the rows it already has."""
        with self._engine.connect() as conn:
            value = conn.exec_driver_sql(
                "SELECT MAX(r.ts) FROM request_log r JOIN tokens t ON t.id = r.token_pk WHERE t.provider = ?",
                (provider,),
            ).scalar_one()
        # Never far past the present (a row dated years ahead, stored by an older release, would
        # stop the log's reading until that date); relay clocks may run ahead by up to a day.
        return None if value is None else min(float(value), time.time() + 2 * 86400)

    def requests(self, token_pk: int, since: float) -> list[LoggedRequest]:
        """The stored request-log rows of one token since `since`, oldest first."""
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT ts, model, ip, prompt_tokens, completion_tokens, cost_usd, elapsed_ms, request_id, "
                "requests FROM request_log WHERE token_pk = ? AND ts >= ? ORDER BY ts, request_id",
                (token_pk, since),
            ).all()
        return [LoggedRequest(*r) for r in rows]

    def hourly_since(self, since: float) -> list[tuple[str, str, float, float, int]]:
        """(provider, token id, hour, cost, requests) for every token since `since`: what the alert
        engine rebuilds its baselines from at start."""
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT t.provider, t.token_id, h.hour, h.cost_usd, h.requests FROM usage_hourly h "
                "JOIN tokens t ON t.id = h.token_pk WHERE h.hour >= ? ORDER BY h.hour",
                (int(since // 3600 * 3600),),
            ).all()
        return [(str(r[0]), str(r[1]), float(r[2]), float(r[3]), int(r[4])) for r in rows]

    def requests_since(
        self, since: float, *, limit: int = 500_000
    ) -> list[tuple[str, str, float, str, str | None, int, float]]:
        """(provider, token id, ts, model, ip, requests, cost) of stored request-log rows, newest
        `limit` first: who used each token with what, for the leak rule's model and IP signals."""
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT t.provider, t.token_id, r.ts, r.model, r.ip, r.requests, r.cost_usd FROM request_log r "
                "JOIN tokens t ON t.id = r.token_pk WHERE r.ts >= ? ORDER BY r.ts DESC LIMIT ?",
                (since, limit),
            ).all()
        return [(str(r[0]), str(r[1]), float(r[2]), str(r[3]), r[4], int(r[5]), float(r[6])) for r in rows]

    def window_sums(
        self, provider: str, day_start: float, month_start: float
    ) -> dict[int, tuple[float, float]]:
        """token pk -> (spend since day_start, spend since month_start), from keywatch's own
        history: raw deltas where they are kept, hourly rollups for the month's older hours."""
        sql = (
            "SELECT t.id, "
            "COALESCE((SELECT SUM(d.cost_usd) FROM usage_deltas d WHERE d.token_pk = t.id AND d.ts > ?), 0), "
            "COALESCE((SELECT SUM(h.cost_usd) FROM usage_hourly h WHERE h.token_pk = t.id AND h.hour >= ?), 0) "
            "FROM tokens t WHERE t.provider = ?"
        )
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql(sql, (day_start, int(month_start), provider)).all()
        return {int(r[0]): (round(float(r[1]), 9), round(float(r[2]), 9)) for r in rows}

    def count_rows(self, table: str) -> int:
        if table not in {"tokens", "usage_deltas", "usage_hourly", "poll_runs", "request_log"}:
            raise ValueError(table)
        with self._engine.connect() as conn:
            return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one())
