"""`keywatch backtest`: replay a usage history through the daemon's own rule, alert and response
code on a simulated clock, with notifications and relay calls recorded, not sent.

Input, JSON Lines in any order: usage `{"ts", "provider", "token", "requests", "cost_usd", "model",
"ip"}` (`provider` defaults to `default`; `model` and `ip` are optional) and, optionally, token
metadata `{"type": "token", "provider", "token", "created_at", "status", "expires_at", "limits",
"ip_whitelist"}`. Output: one line per alert transition, `{"ts", "rule", "provider", "token",
"severity", "state", "value", "action"}` plus the signal set, summary and evidence.

Each provider's clock steps by its `poll_interval` (from the config when it names the provider,
else 60 s). At step T every usage line stamped in (T - interval, T] becomes that poll's spend (a
line is the usage of the period that ends at its stamp, as the daemon's deltas are), and the very
same AlertEngine.on_cycle the daemon runs evaluates it: budget, forecast, hygiene, anomaly and
leak rules, alert states in a scratch SQLite file, the notification pipeline, and the responder
— whose relay is a recorder that accepts every quarantine.
"""

from __future__ import annotations

import heapq
import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from alerts.engine import AlertEngine
from alerts.lifecycle.records import Transition
from alerts.notification.notify import Notifier
from monitor.clock import FakeClock
from monitor.ingest import Cycle, Spend
from monitor.model import PollResult, RequestRecord, RevokeOutcome, TokenLimits
from monitor.poller import CycleReport
from monitor.secret import Secret
from monitor.settings import Notify, ProviderSettings, Settings
from monitor.spend import UsageMark
from monitor.store import open_engine
from monitor.tokens import TokenState

__all__ = ["SIGNAL_SETS", "BacktestInput", "read_input", "run_backtest", "spend_only"]

log = logging.getLogger("keywatch.backtest")

DEFAULT_INTERVAL = 60.0
# What the relay reports: `all` replays the lines as they are; `spend` as a relay that reports only
# spend and request counts per token would (laozhang's list, one-api/new-api with logs off).
SIGNAL_SETS = ("all", "spend")
TAIL = 2 * 3600.0  # keep stepping after the last line, so alerts can resolve


@dataclass(frozen=True, slots=True)
class _Usage:
    ts: float
    provider: str
    token: str
    requests: int
    cost: float
    model: str | None
    ip: str | None


@dataclass(slots=True)
class BacktestInput:
    usage: list[_Usage] = field(default_factory=list)
    tokens: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def read_input(lines: Iterable[bytes | str]) -> BacktestInput:
    """Parse backtest JSON Lines; a bad line raises ValueError naming its number."""
    data = BacktestInput()
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            d = orjson.loads(raw)
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            provider = str(d.get("provider") or "default")
            token = str(d["token"])
            if d.get("type") == "token":
                data.tokens[(provider, token)] = d
                continue
            data.usage.append(
                _Usage(
                    _ts(d["ts"]),
                    provider,
                    token,
                    int(d.get("requests") or 0),
                    float(d.get("cost_usd") or 0.0),
                    str(d["model"]) if d.get("model") else None,
                    str(d["ip"]) if d.get("ip") else None,
                )
            )
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"line {number}: {exc}") from None
    data.usage.sort(key=lambda u: u.ts)
    return data


def spend_only(data: BacktestInput) -> BacktestInput:
    """The history as a spend-only relay reports it: no client IPs, no models, and the lines of
    one token at one time summed into one (a relay's counter cannot tell them apart)."""
    merged: dict[tuple[float, str, str], list[float]] = {}
    for u in data.usage:
        acc = merged.setdefault((u.ts, u.provider, u.token), [0.0, 0.0])
        acc[0] += u.cost
        acc[1] += u.requests
    usage = [
        _Usage(ts, provider, token, int(req), round(cost, 9), None, None)
        for (ts, provider, token), (cost, req) in merged.items()
    ]
    usage.sort(key=lambda u: u.ts)
    return BacktestInput(usage, dict(data.tokens))


class _RecordingRelay:
    """The relay during a backtest: every quarantine succeeds and is remembered."""

    kind = "backtest"

    def __init__(self, name: str) -> None:
        self.name = name
        self.revoked: list[str] = []

    async def poll(self) -> PollResult:
        return PollResult([])

    async def revoke(self, token_id: str, *, delete: bool = False) -> RevokeOutcome:
        self.revoked.append(token_id)
        return RevokeOutcome(True, True, "recorded")

    async def restore(self, token_id: str) -> RevokeOutcome:
        return RevokeOutcome(True, True, "recorded")

    async def verify_refused(self, token_id: str) -> bool | None:
        return True

    async def aclose(self) -> None:
        return None


class _Fleet:
    """Token states as the daemon would hold them, built from the replayed lines."""

    def __init__(self, provider: str, metas: dict[str, dict[str, Any]], tz: ZoneInfo, start: float) -> None:
        self.provider = provider
        self.tz = tz
        self.states: dict[str, TokenState] = {
            name: _state(provider, name, m, start) for name, m in metas.items()
        }
        self._day: dict[str, tuple[tuple[int, int, int], float, int]] = {}
        self._month: dict[str, tuple[tuple[int, int], float]] = {}

    def book(self, token: str, lines: list[_Usage]) -> None:
        """One poll's lines of one token (in time order) into its windows and counters."""
        state = self.states.get(token) or _state(self.provider, token, {}, lines[0].ts)
        d_key, d_cost, d_req = self._day.get(token, ((0, 0, 0), 0.0, 0))
        m_key, m_cost = self._month.get(token, ((0, 0), 0.0))
        cost, requests = 0.0, 0
        last_used = state.last_used_at
        for u in lines:
            local = datetime.fromtimestamp(u.ts, self.tz)
            day_key, month_key = (local.year, local.month, local.day), (local.year, local.month)
            if d_key != day_key:
                d_key, d_cost, d_req = day_key, 0.0, 0
            if m_key != month_key:
                m_key, m_cost = month_key, 0.0
            d_cost, d_req, m_cost = d_cost + u.cost, d_req + u.requests, m_cost + u.cost
            cost, requests = cost + u.cost, requests + u.requests
            if u.requests or u.cost:
                last_used = u.ts
        self._day[token] = (d_key, d_cost, d_req)
        self._month[token] = (m_key, m_cost)
        self.states[token] = replace(
            state,
            last_used_at=last_used,
            status="active" if state.status == "unused" and last_used else state.status,
            spend_total_usd=round(state.spend_total_usd + cost, 9),
            requests_total=state.requests_total + requests,
            mark=UsageMark(lines[-1].ts, round(d_cost, 9), round(m_cost, 9), d_req),
            usage_known=True,
        )


def _state(provider: str, name: str, meta: dict[str, Any], start: float) -> TokenState:
    limits = meta.get("limits") if isinstance(meta.get("limits"), dict) else {}
    assert isinstance(limits, dict)
    daily = limits.get("daily_limit") or {}
    monthly = limits.get("monthly_limit") or {}
    return TokenState(
        pk=None,
        provider=provider,
        token_id=name,
        name=name,
        status=str(meta.get("status") or "active"),
        first_seen=start,
        last_seen=start,
        created_at=_ts(meta["created_at"]) if meta.get("created_at") else None,
        expires_at=_ts(meta["expires_at"]) if meta.get("expires_at") else None,
        limits=TokenLimits(
            daily_usd=daily.get("amount"),
            monthly_usd=monthly.get("amount"),
            daily_requests=daily.get("requests"),
            allowed_models=tuple(limits.get("allowed_models") or ()),
        ),
        ip_whitelist=tuple(str(x) for x in meta.get("ip_whitelist") or ()),
    )


Progress = Callable[[int, int], None]  # (usage lines replayed, lines in all)


async def run_backtest(
    data: BacktestInput, settings: Settings, *, signals: str = "all", progress: Progress | None = None
) -> list[dict[str, Any]]:
    """The alert transitions of the replay, in time order (the output objects above, each with
    the `signals` set it was replayed with). `progress` hears how far the replay is after each
    poll step."""
    if signals not in SIGNAL_SETS:
        raise ValueError(f"signals must be one of {', '.join(SIGNAL_SETS)}")
    if signals == "spend":
        data = spend_only(data)
    if not data.usage:
        return []
    names = sorted({u.provider for u in data.usage} | {p for p, _ in data.tokens})
    configured = {p.name: p for p in settings.providers}
    providers = tuple(configured.get(n) or _synthetic(n) for n in names)
    # No notification targets: the pipeline decides and logs, nothing leaves the machine.
    settings = replace(
        settings, providers=providers, notify=replace(settings.notify, urls=(), apprise_config=None)
    )
    relays = {p.name: _RecordingRelay(p.name) for p in providers}
    out: list[dict[str, Any]] = []
    start = data.usage[0].ts
    clock = FakeClock(start)
    with tempfile.TemporaryDirectory(prefix="keywatch-backtest-") as tmp:
        engine = open_engine(f"sqlite:///{Path(tmp) / 'backtest.db'}")
        alerts = AlertEngine(
            settings, engine, clock=clock, notifier=Notifier(Notify()), providers=relays.get, offload=False
        )

        def record(t: Transition, action: str) -> None:
            if t.to_state in ("firing", "resolved"):
                a = t.alert
                out.append(
                    {
                        "ts": datetime.fromtimestamp(t.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "rule": a.rule,
                        "provider": a.labels.get("provider", ""),
                        "token": a.labels.get("token", ""),
                        "severity": a.severity,
                        "state": t.to_state,
                        "value": a.value,
                        "action": action if t.to_state == "firing" else "none",
                        "signals": signals,
                        "summary": a.summary,
                        "evidence": a.annotations.get("signals", ""),
                    }
                )

        alerts.transition_listeners.append(record)
        try:
            await _replay(data, providers, alerts, clock, progress)
        finally:
            engine.dispose()
    return out


async def _replay(
    data: BacktestInput,
    providers: tuple[ProviderSettings, ...],
    alerts: AlertEngine,
    clock: FakeClock,
    progress: Progress | None,
) -> None:
    start, end = data.usage[0].ts, data.usage[-1].ts + TAIL
    fleets: dict[str, _Fleet] = {}
    pending: dict[str, Iterator[_Usage]] = {}
    for p in providers:
        metas = {t: m for (prov, t), m in data.tokens.items() if prov == p.name}
        fleets[p.name] = _Fleet(p.name, metas, ZoneInfo(p.timezone), start)
        pending[p.name] = iter([u for u in data.usage if u.provider == p.name])
    steps = [(start - start % p.poll_interval + p.poll_interval, p.name, p.poll_interval) for p in providers]
    heapq.heapify(steps)
    carry: dict[str, _Usage | None] = dict.fromkeys(pending)
    n = replayed = 0
    while steps:
        at, name, interval = heapq.heappop(steps)
        if at > end:
            continue
        clock.set(at)
        fleet = fleets[name]
        spend: list[Spend] = []
        records: list[RequestRecord] = []
        u = carry[name] or next(pending[name], None)
        by_token: dict[str, list[_Usage]] = {}
        while u is not None and u.ts <= at:
            by_token.setdefault(u.token, []).append(u)
            if u.cost or u.requests:
                spend.append(Spend(u.token, u.ts, u.cost, u.requests, False))
            if u.model or u.ip:
                records.append(
                    RequestRecord(
                        u.token, u.token, u.ts, u.model or "", u.ip, 0, 0, u.cost, None, str(n), u.requests
                    )
                )
                n += 1
            u = next(pending[name], None)
        carry[name] = u
        replayed += sum(len(lines) for lines in by_token.values())
        for token, lines in by_token.items():
            fleet.book(token, lines)
        cycle = Cycle(name, at, True, dict(fleet.states), spend=spend, requests=records, fresh=records)
        await alerts.on_cycle(CycleReport(name, at, True, True, cycle, cycle.states))
        alerts.pipeline.tick(at)
        heapq.heappush(steps, (at + interval, name, interval))
        if progress is not None:
            progress(replayed, len(data.usage))


def _synthetic(name: str) -> ProviderSettings:
    return ProviderSettings(
        name=name, kind="laozhang", base_url="http://backtest.invalid", admin_token=Secret("")
    )


def _ts(value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def write_output(rows: Iterable[dict[str, Any]], path: str | None) -> None:
    text = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    if path:
        Path(path).write_bytes(text)
    else:
        import sys

        sys.stdout.buffer.write(text)
