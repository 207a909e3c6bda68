"""Store write vs raw sqlite3 executemany of the same rows (a busy cycle: every token changed)."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.common import median
from monitor.ingest import Cycle, ingest
from monitor.model import Observation, PollResult
from monitor.store import PollRun, UsageWriter, open_engine
from monitor.store.codec import TOKEN_COLUMNS, state_to_row

UTC = ZoneInfo("UTC")
T0 = 1_794_300_000.0


def fleet(n: int, month: float) -> PollResult:
    return PollResult(
        [
            Observation(
                f"key_{i}",
                f"dev-app-t{i}-2026-01",
                "active",
                today_usd=month,
                month_usd=month,
                today_requests=int(month),
            )
            for i in range(n)
        ]
    )


def run(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = open_engine(f"sqlite:///{tmp}/kw.db")
        writer = UsageWriter(engine)
        run_row = PollRun("b", "laozhang", T0, T0, True, True)
        states = writer.write_cycle(
            ingest({}, fleet(n, 1.0), provider="b", now=T0, tz=UTC, watching_since=None), run_row, {}
        )
        step = [1.0]

        def cycle() -> Cycle:
            step[0] += 1
            return ingest(
                states, fleet(n, step[0]), provider="b", now=T0 + step[0] * 60, tz=UTC, watching_since=T0
            )

        cycles = [cycle() for _ in range(5)]
        it = iter(cycles)
        t_ours = median(lambda: writer.write_cycle(next(it), run_row, {}), runs=5)

        # The same rows, written by hand: token updates, deltas, hourly upserts, one transaction.
        raw_db = Path(tmp) / "raw.db"
        open_engine(f"sqlite:///{raw_db}").dispose()  # same schema and pragmas
        conn = sqlite3.connect(raw_db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executemany(
            f"INSERT INTO tokens (id, {', '.join(TOKEN_COLUMNS)}) VALUES ({', '.join('?' * (len(TOKEN_COLUMNS) + 1))})",
            [(s.pk, *state_to_row(s)) for s in states.values()],
        )
        conn.commit()
        rows = []
        for c in cycles:
            tokens = [(*state_to_row(c.states[t]), c.states[t].pk) for t in c.changed]
            deltas = [(c.states[s.token_id].pk, s.ts, s.cost_usd, s.requests, s.gap) for s in c.spend]
            hourly = [(pk, int(ts // 3600 * 3600), cost, req) for pk, ts, cost, req, _ in deltas]
            rows.append((tokens, deltas, hourly))
        it2 = iter(rows)
        update = f"UPDATE tokens SET {', '.join(c + ' = ?' for c in TOKEN_COLUMNS)} WHERE id = ?"

        def raw() -> None:
            tokens, deltas, hourly = next(it2)
            with conn:
                conn.executemany(update, tokens)
                conn.executemany(
                    "INSERT INTO usage_deltas (token_pk, ts, cost_usd, requests, gap) VALUES (?,?,?,?,?)",
                    deltas,
                )
                conn.executemany(
                    "INSERT INTO usage_hourly (token_pk, hour, cost_usd, requests) VALUES (?,?,?,?) ON CONFLICT (token_pk, hour) "
                    "DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd, requests = requests + excluded.requests",
                    hourly,
                )

        t_raw = median(raw, runs=5)
        conn.close()
        engine.dispose()
        # The target is throughput: ours / raw as a speed ratio (>= 0.5x).
        speed = t_raw / t_ours
        print(
            f"store write, {n:,} changed tokens (3 statements)              {t_ours:9.4f}s vs raw executemany {t_raw:9.4f}s"
            f"  speed {speed:5.2f}x of raw  (target >= 0.5x)",
            flush=True,
        )


def main() -> None:
    for n in (1_000, 10_000):
        run(n)


if __name__ == "__main__":
    main()
