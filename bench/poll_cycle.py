"""Poll+store cycle vs a bare fetch of the same data by a plain aiohttp client, at 1,000 and
10,000 tokens, in list mode (one big list) and per-key mode (one GET /v1/usage per token)."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import orjson

from bench.common import SIM_ADMIN, control, median_async, report, simulator
from monitor.app import Daemon
from monitor.secret import Secret
from monitor.settings import ProviderSettings, Settings

CONCURRENCY = 32
RUNS = 7


async def bare_list(url: str) -> None:
    headers = {"Authorization": f"Bearer {SIM_ADMIN}"}
    async with aiohttp.ClientSession() as session, session.get(f"{url}/v1/api-keys", headers=headers) as r:
        orjson.loads(await r.read())


async def bare_per_key(url: str, keys: list[str]) -> None:
    """The list, then every key's usage with 32 workers: the same calls keywatch makes."""
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{url}/v1/api-keys", headers={"Authorization": f"Bearer {SIM_ADMIN}"}) as r:
            orjson.loads(await r.read())
        queue = list(keys)

        async def worker() -> None:
            while queue:
                key = queue.pop()
                async with session.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {key}"}) as resp:
                    orjson.loads(await resp.read())

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def settings_for(url: str, db: Path, keys: dict[str, str]) -> Settings:
    provider = ProviderSettings(
        name="bench",
        kind="laozhang",
        base_url=url,
        admin_token=Secret(SIM_ADMIN),
        timeout=60.0,
        concurrency=CONCURRENCY,
        keys={name: Secret(k) for name, k in keys.items()},
    )
    return Settings(database=f"sqlite:///{db}", providers=(provider,))


async def one_mode(n: int, per_key: bool, *, idle: float = 0.15) -> None:
    mode = "per-key" if per_key else "list"
    with simulator(n, idle=idle) as url, tempfile.TemporaryDirectory() as tmp:
        keys: dict[str, str] = {}
        if per_key:
            control(url, "options", {"usage_in_list": False})
            keys = httpx.get(f"{url}/_sim/keys", timeout=60).json()  # noqa: ASYNC210 (set-up, not measured)
        daemon = Daemon(settings_for(url, Path(tmp) / "kw.db", keys))
        await daemon.prime()  # first cycle: 10,000 inserts, reported separately
        poller = daemon.pollers["bench"]
        poller.listeners.clear()  # poll+store only: rule evaluation is measured by bench/rules.py
        key_list = list(keys.values())

        async def bare() -> None:
            await (bare_per_key(url, key_list) if per_key else bare_list(url))

        # A minute of relay time between cycles, so a realistic share of tokens changed; bare and
        # ours alternate so that drift on the machine hits both alike.
        ours_times, bare_times = [], []
        changed = []
        for _ in range(RUNS):
            control(url, "advance", {"seconds": 60})
            await bare_list(url)  # the relay generates the minute's traffic here, for neither side
            bare_times.append(await median_async(bare, runs=1))
            t0 = time.perf_counter()
            result = await poller.run_once()
            ours_times.append(time.perf_counter() - t0)
            assert result.ok and result.cycle is not None, result.error
            changed.append(len(result.cycle.changed))
        share = statistics.median(changed) / n
        report(f"poll+store, {n:,} tokens, {mode}, {share:.0%} changed/cycle", statistics.median(ours_times),
               statistics.median(bare_times), target="<= 1.5x")  # fmt: skip
        await daemon.stop()


async def main() -> None:
    for n in (1_000, 10_000):
        for per_key in (False, True):
            # The simulator's default fleet is busy (85% of tokens spend every minute); a fleet
            # where one token in ten is active is closer to most relays'. Both are reported.
            for idle in (0.15, 0.9):
                await one_mode(n, per_key, idle=idle)


if __name__ == "__main__":
    asyncio.run(main())
