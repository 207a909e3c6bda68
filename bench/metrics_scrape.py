"""/metrics at 10,000 tokens: keywatch's exposition vs prometheus_client.generate_latest of an
equivalent plain registry (same families, same series), and a real scrape over HTTP."""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from bench.common import free_port, median, report
from monitor.metrics import Exposition
from monitor.model import TokenLimits
from monitor.policy import PolicyBook
from monitor.secret import Secret
from monitor.server import build_app, make_server
from monitor.settings import Budget, TokenPolicy
from monitor.spend import UsageMark
from monitor.tokens import TokenState


def fleet(n: int, version: int = 0) -> dict[str, TokenState]:
    return {
        f"key_{i}": TokenState(
            pk=i,
            provider="bench",
            token_id=f"key_{i}",
            name=f"dev-app{i}-api-2026-01",
            status="active",
            first_seen=0.0,
            last_seen=0.0,
            last_used_at=1_794_300_000.0 + i,
            expires_at=1_800_000_000.0,
            limits=TokenLimits(monthly_usd=100.0),
            spend_total_usd=123.45 + i + version,
            requests_total=1000 + i,
            mark=UsageMark(0.0, 1.5 + version, 20.25 + i * 0.01, 17),
            usage_known=True,
        )
        for i in range(n)
    }


def plain_registry(states: dict[str, TokenState], policies: PolicyBook) -> CollectorRegistry:
    reg = CollectorRegistry()
    spend = Counter("keywatch_token_spend_usd", "s", ["provider", "token"], registry=reg)
    reqs = Counter("keywatch_token_requests", "r", ["provider", "token"], registry=reg)
    window = Gauge("keywatch_token_window_spend_usd", "w", ["provider", "token", "window"], registry=reg)
    budget = Gauge("keywatch_token_budget_usd", "b", ["provider", "token", "window"], registry=reg)
    ratio = Gauge("keywatch_token_budget_used_ratio", "r", ["provider", "token", "window"], registry=reg)
    info = Gauge(
        "keywatch_token_info",
        "i",
        ["provider", "token", "token_id", "status", "env", "project"],
        registry=reg,
    )
    last = Gauge("keywatch_token_last_used_timestamp_seconds", "l", ["provider", "token"], registry=reg)
    exp = Gauge("keywatch_token_expiry_timestamp_seconds", "e", ["provider", "token"], registry=reg)
    for s in states.values():
        assert s.mark is not None
        b = policies.budgets(s)
        spend.labels(s.provider, s.name).inc(s.spend_total_usd)
        reqs.labels(s.provider, s.name).inc(s.requests_total)
        for w, v, lim in (("day", s.mark.today_usd, b.day), ("month", s.mark.month_usd, b.month)):
            window.labels(s.provider, s.name, w).set(v or 0)
            if lim:
                budget.labels(s.provider, s.name, w).set(lim)
                ratio.labels(s.provider, s.name, w).set((v or 0) / lim)
        info.labels(s.provider, s.name, s.token_id, s.status, s.env, s.project).set(1)
        last.labels(s.provider, s.name).set(s.last_used_at or 0)
        exp.labels(s.provider, s.name).set(s.expires_at or 0)
    return reg


async def scrape(n: int) -> None:
    policies = PolicyBook([TokenPolicy(match="dev-*", budget=Budget(daily_usd=10.0))])
    exposition = Exposition(policies)
    states = fleet(n)
    exposition.set_tokens("bench", states)
    body = exposition.render()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    reg = plain_registry(states, policies)
    t_plain = median(lambda: generate_latest(reg), runs=3)

    def cold() -> None:  # every token changed since the last render
        exposition.set_tokens("bench", fleet(n, version=int(time.perf_counter() * 1000)))
        exposition.render()

    t_cold = median(cold, runs=3)
    report(
        f"/metrics render, {n:,} tokens ({series:,} series), all changed",
        t_cold,
        t_plain,
        target="fast vs plain",
    )

    port = free_port()
    app = build_app(exposition=exposition, readiness=dict, tokens=list, api_token=lambda: Secret(""))
    server = make_server(app, f"127.0.0.1:{port}")
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn has no "started" event to wait on)
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient() as client:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            r = await client.get(f"http://127.0.0.1:{port}/metrics")
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200
        times.sort()
        print(
            f"/metrics scrape over HTTP, {n:,} tokens, {len(r.content) / 1e6:.1f} MB: median {times[2] * 1000:.1f} ms (target < 300 ms)"
        )
    server.should_exit = True
    await task


def main() -> None:
    for n in (1_000, 10_000):
        asyncio.run(scrape(n))


if __name__ == "__main__":
    main()
