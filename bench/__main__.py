"""`make bench`: every benchmark, each printing ratios against a baseline run in the same process."""

from __future__ import annotations

import asyncio
import logging
import sys

from bench import daemon, daemon_footprint, failover, metrics_scrape, pg_write, poll_cycle, store_write


def main() -> None:
    logging.disable(logging.WARNING)  # skipped-token warnings from the busy simulator are expected
    # The measure of truth first: the real daemon, alert engine on, as users run it (issue 12).
    # 10,000 tokens by default; KEYWATCH_BENCH_SIZES=10000,100000 adds 100,000 (tens of minutes).
    print("== the real daemon (bench/daemon.py)", flush=True)
    asyncio.run(daemon.main([]))
    print("\n== poll+store cycle vs a bare aiohttp fetch of the same data", flush=True)
    asyncio.run(poll_cycle.main())
    print("\n== store write vs raw sqlite3 executemany", flush=True)
    store_write.main()
    print("\n== store write on PostgreSQL vs raw psycopg executemany and COPY", flush=True)
    pg_write.main()  # skips, saying why, without a reachable PostgreSQL
    print("\n== failover of several instances on PostgreSQL (kill -9 of a provider's owner)", flush=True)
    failover.main(["--rounds", "5"])  # skips likewise
    print("\n== /metrics", flush=True)
    metrics_scrape.main()
    print("\n== daemon footprint", flush=True)
    daemon_footprint.main()
    extra = [m for m in ("bench.rules_eval", "bench.flavors") if m in sys.modules or _exists(m)]
    for name in extra:
        print(f"\n== {name}", flush=True)
        module = __import__(name, fromlist=["main"])
        result = module.main()
        if asyncio.iscoroutine(result):
            asyncio.run(result)


def _exists(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
