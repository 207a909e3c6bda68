"""Evaluate the detectors on labelled fleets, in both signal modes: what `keywatch backtest` gives on
our own generated scenarios (tests/alerts/scenarios.py) and on the shared sample.

    python -m tests.alerts.evaluate --seeds 5-12 --signals all,spend [--shared DIR] [--jobs 2]

Tune on some seeds, report on others: the seeds used for tuning are listed in TUNING_SEEDS.
Each run prints one line; the totals per signal set close the report.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from alerts.offline.backtest import read_input, run_backtest
from monitor.secret import Secret
from monitor.settings import ProviderSettings, Response, Settings, TokenPolicy
from tests.alerts.scenarios import generate
from tests.alerts.scoring import Score, score

TUNING_SEEDS = (1, 2, 3, 4)  # the detectors' parameters were chosen on these; report on others
SHARED = Path(__file__).resolve().parents[3] / "shared" / "detection"


def _settings(provider: str, business_hours: dict[str, str]) -> Settings:
    p = ProviderSettings(
        name=provider, kind="laozhang", base_url="http://x.invalid", admin_token=Secret(""), poll_interval=900
    )
    policies = tuple(TokenPolicy(match=k, business_hours=v) for k, v in business_hours.items())
    return Settings(providers=(p,), tokens=policies, response=Response(auto_revoke=True))


def run_seed(seed: int, signals: str) -> tuple[str, Score]:
    logging.disable(logging.WARNING)
    sc = generate(seed)
    data = read_input([orjson.dumps(line) for line in sc.lines])
    alerts = asyncio.run(run_backtest(data, _settings("sc", sc.business_hours), signals=signals))
    return f"seed {seed}", score(sc.truth, alerts)


def run_shared(folder: str, signals: str) -> tuple[str, Score]:
    logging.disable(logging.WARNING)
    with gzip.open(Path(folder) / "usage.jsonl.gz", "rb") as f:
        data = read_input(f)
    truth = json.loads((Path(folder) / "truth.json").read_text())
    alerts = asyncio.run(run_backtest(data, _settings("lz", {}), signals=signals))
    return "shared sample", score(truth, alerts)


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def report(label: str, signals: str, s: Score) -> str:
    extra = []
    if s.missed:
        extra.append("missed " + ", ".join(s.missed))
    if s.false_quarantines:
        extra.append("FALSE QUARANTINE " + ", ".join(s.false_quarantines))
    if s.spikes_missed:
        extra.append("spikes missed " + ", ".join(s.spikes_missed))
    if s.false_alarms:
        extra.append("false alarms " + ", ".join(s.false_alarms[:4]))
    slow = {t: d for t, d in s.delays.items() if d > 2}
    if slow:
        extra.append(
            "slow " + ", ".join(f"{s.kinds[t]}:{d:g}" for t, d in sorted(slow.items(), key=lambda x: -x[1]))
        )
    return f"[{signals:5}] {label:13} {s.line()}" + ("".join(f"\n        {x}" for x in extra))


def totals(signals: str, scores: list[Score]) -> str:
    leaks = sum(s.leaks for s in scores)
    quarantined = sum(s.quarantined for s in scores)
    delays = [d for s in scores for d in s.delays.values()]
    by_kind: dict[str, list[float]] = {}
    for s in scores:
        for t, d in s.delays.items():
            by_kind.setdefault(s.kinds[t], []).append(d)
    kinds = ", ".join(f"{k} max {max(v):g}" for k, v in sorted(by_kind.items()))
    weeks = sum(s.token_weeks for s in scores)
    fa = 100 * sum(len(s.false_alarms) for s in scores) / weeks if weeks else 0.0
    return (
        f"[{signals:5}] TOTAL quarantined {quarantined}/{leaks}, median delay "
        f"{statistics.median(delays) if delays else '-'} polls ({kinds}), false quarantines "
        f"{sum(len(s.false_quarantines) for s in scores)}, spikes {sum(s.spikes_caught for s in scores)}/"
        f"{sum(s.spikes for s in scores)}, false alarms {fa:.2f}/100 token-weeks"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="5-12", help="e.g. 5-12 or 1,3,7 (tuning seeds: 1-4)")
    ap.add_argument("--signals", default="all,spend", help="all, spend or both")
    ap.add_argument("--shared", default=str(SHARED), help="the shared sample's folder ('' to skip)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    modes = [m for m in args.signals.split(",") if m]
    jobs: list[tuple[Any, ...]] = [(run_seed, seed, m) for m in modes for seed in _seeds(args.seeds)]
    if args.shared and (Path(args.shared) / "usage.jsonl.gz").exists():
        jobs += [(run_shared, args.shared, m) for m in modes]
    results: dict[str, list[Score]] = {m: [] for m in modes}
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [(job[2], pool.submit(*job)) for job in jobs]
        for mode, fut in futures:
            label, s = fut.result()
            results[mode].append(s)
            print(report(label, mode, s), flush=True)
    for mode in modes:
        print(totals(mode, results[mode]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
