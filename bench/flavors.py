"""Poll+store cycle for 10,000 tokens on the oneapi, newapi and openai flavours, against a bare
fetch of the same pages (token pages and the same request-log / usage window) by a plain aiohttp
client in the same run, with the same page concurrency. Target: <= 1.5x.

    .venv/bin/python -m bench.flavors [--tokens N] [--runs N] [--flavor oneapi|newapi|openai]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import tempfile
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.common import SIM_ADMIN, control, median_async, report, simulator
from monitor.app import Daemon
from monitor.providers.newapi import NewAPIProvider
from monitor.providers.oneapi import OneAPIProvider
from monitor.providers.openai import OpenAIProvider
from monitor.secret import Secret
from monitor.settings import ProviderSettings, Settings

CONCURRENCY = 8  # the adapters' page concurrency
ADVANCE = 60.0  # relay time between cycles: one poll interval
PROJECT = "proj_sim"
Get = Callable[[str, dict[str, Any]], Awaitable[tuple[Any, float]]]


def settings_for(kind: str, url: str, db: Path) -> Settings:
    extra: dict[str, Any] = (
        {"user_id": 1} if kind == "newapi" else {"project_id": PROJECT} if kind == "openai" else {}
    )
    provider = ProviderSettings(
        name="bench",
        kind=kind,
        base_url=url,
        admin_token=Secret(SIM_ADMIN),
        timeout=60.0,
        **extra,  # type: ignore[arg-type]
    )
    return Settings(database=f"sqlite:///{db}", providers=(provider,))


def getter(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Get:
    async def get(path: str, params: dict[str, Any]) -> tuple[Any, float]:
        async with session.get(url + path, params=params, headers=headers) as r:
            body = orjson.loads(await r.read())
            return body, parsedate_to_datetime(r.headers["Date"]).timestamp()

    return get


async def plain_pages(get: Get, path: str, params: dict[str, Any], size: int) -> float:
    """one-api shape: p from 0, `CONCURRENCY` pages at a time until a short one."""
    first, now = await get(path, {**params, "p": 0})
    if len(first["data"]) < size:
        return now
    p = 1
    while True:
        batch = await asyncio.gather(*(get(path, {**params, "p": q}) for q in range(p, p + CONCURRENCY)))
        if any(len(b["data"]) < size for b, _ in batch):
            return now
        p += CONCURRENCY


async def item_pages(get: Get, path: str, params: dict[str, Any]) -> float:
    """new-api shape: the first page's total says how many more, fetched `CONCURRENCY` at a time."""
    first, now = await get(path, {**params, "p": 0})
    data = first["data"]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(p: int) -> None:
        async with gate:
            await get(path, {**params, "p": p})

    await asyncio.gather(*(one(p) for p in range(2, math.ceil(data["total"] / data["page_size"]) + 1)))
    return now


async def bare_console(url: str, kind: str, *, warm: bool = False) -> None:
    """The pages a cycle reads; `warm`: only the first of each list (what the relay computes
    once per window: its traffic up to now, and the window's rows in order)."""
    headers = {"Authorization": SIM_ADMIN, **({"New-Api-User": "1"} if kind == "newapi" else {})}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        get = getter(session, url, headers)
        if warm:
            _, now = await get("/api/token/", {"p": 0})
            lag, overlap = OneAPIProvider.log_lag, OneAPIProvider.log_overlap
            end = int(now - lag)
            window = {"type": 2, "start_timestamp": int(end - ADVANCE - overlap), "end_timestamp": end}
            await get("/api/log/self", {**window, "p": 0, "page_size": 100})
            return
        if kind == "oneapi":
            now = await plain_pages(get, "/api/token/", {}, 10)
            lag, overlap = OneAPIProvider.log_lag, OneAPIProvider.log_overlap
        else:
            now = await item_pages(get, "/api/token/", {"page_size": 100, "size": 100})
            lag, overlap = NewAPIProvider.log_lag, NewAPIProvider.log_overlap
        end = int(now - lag)
        window = {"type": 2, "start_timestamp": int(end - ADVANCE - overlap), "end_timestamp": end}
        if kind == "oneapi":
            await plain_pages(get, "/api/log/self", window, 10)
        else:
            await item_pages(get, "/api/log/self", {**window, "page_size": 100, "size": 100})


async def bare_openai(url: str, *, warm: bool = False) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        get = getter(session, url, {"Authorization": f"Bearer {SIM_ADMIN}"})
        path = f"/v1/organization/projects/{PROJECT}/api_keys"
        page, now = await get(path, {"limit": 100})
        if warm:
            return
        while page["has_more"]:
            page, _ = await get(path, {"limit": 100, "after": page["last_id"]})
        end = int((now - OpenAIProvider.usage_settle) // 60 * 60)
        params = {
            "start_time": int(end - ADVANCE - OpenAIProvider.usage_overlap),
            "end_time": end,
            "bucket_width": "1m",
            "limit": 1440,
            "group_by": ["api_key_id", "model"],
            "project_ids": PROJECT,
        }
        await get("/v1/organization/usage/completions", params)  # one page: the window is < 1440 buckets


async def one_flavor(kind: str, n: int, runs: int) -> None:
    with simulator(n, flavor=kind) as url, tempfile.TemporaryDirectory() as tmp:
        # Relay time moves only by `advance`: traffic for a step is generated at one moment
        # (the first read after it), never in the middle of a measured fetch.
        control(url, "speed", {"speed": 0})
        daemon = Daemon(settings_for(kind, url, Path(tmp) / "kw.db"))
        await daemon.prime()  # first cycle: 10,000 inserts, not measured
        poller = daemon.pollers["bench"]
        poller.listeners.clear()  # poll+store only, as bench/poll_cycle.py: rules are bench/rules.py's
        # Past OpenAI's settle time, so usage windows hold traffic; then a steady window behind the cursor.
        control(url, "advance", {"seconds": OpenAIProvider.usage_settle + OpenAIProvider.usage_overlap})
        await poller.run_once()
        control(url, "advance", {"seconds": ADVANCE})
        await poller.run_once()

        rows: list[int] = []

        async def ours() -> None:
            result = await poller.run_once()
            assert result.ok and result.cycle is not None, result.error
            rows.append(len(result.cycle.requests))

        async def bare() -> None:
            await (bare_openai(url) if kind == "openai" else bare_console(url, kind))

        # Bare and ours alternate on the same relay state, so drift on the machine hits both alike.
        ours_times, bare_times = [], []
        for _ in range(runs):
            control(url, "advance", {"seconds": ADVANCE})
            await (bare_openai(url, warm=True) if kind == "openai" else bare_console(url, kind, warm=True))
            bare_times.append(await median_async(bare, runs=1))
            ours_times.append(await median_async(ours, runs=1))
        name = f"poll+store, {n:,} tokens, {kind} (~{statistics.median(rows):,.0f} log rows/cycle)"
        report(name, statistics.median(ours_times), statistics.median(bare_times), target="<= 1.5x")
        await daemon.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--flavor", choices=("oneapi", "newapi", "openai"), action="append")
    args = parser.parse_args()
    for kind in args.flavor or ("oneapi", "newapi", "openai"):
        await one_flavor(kind, args.tokens, args.runs)


if __name__ == "__main__":
    asyncio.run(main())
