"""A small replay harness for the two detectors: backtest input in, alert transitions out (DESIGN §3.5).

This is an evaluation tool, not `keywatch backtest`: it runs only spend_anomaly and leak_suspected,
with a minimal pending/firing state machine, and writes every leak_suspected firing with
`action: "quarantine"` (what auto-revoke would do to an unprotected token), so that
`/work/shared/detection/score.py truth.json alerts.jsonl --gate` can score it.

Clock: it steps by `poll_interval` from the first usage stamp; at poll time T it feeds every usage
line stamped <= T (a line is the usage of the period ending at its stamp, as the daemon's deltas
are), builds the fleet context, then evaluates every token. Where an input stamps the *start* of
each bucket instead, the daemon would see a line one bucket later: add one poll to the delays.
Alerts: `for` consecutive polls to fire, and they stay firing for `keep_firing_for` (1 h) after
the condition clears, so a flapping condition is one alert, not many.

    python -m alerts.replay_eval --input usage.jsonl[.gz] --output alerts.jsonl \\
        [--poll 900] [--anomaly-for 2] [--leak-for 1] [--business '*-business-*=mon-fri 07:00-20:00 UTC']
        [--protect 'prod-*']
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from alerts.anomaly import AnomalyDetector, AnomalyResult
from alerts.fleet import FleetContext
from alerts.leak import LeakDetector, LeakResult, TokenInfo
from alerts.series import TokenHistory
from monitor.providers.base import TokenLimits
from monitor.settings import AnomalyRule, TokenPolicy

__all__ = ["ReplayConfig", "main", "read_lines", "replay"]

Key = tuple[str, str]  # (provider, token)


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    poll_interval: float = 900.0
    anomaly: AnomalyRule = field(default_factory=AnomalyRule)
    leak_for: int = 1
    keep_firing_for: float = 3600.0  # seconds an alert stays firing after its condition clears
    policies: tuple[TokenPolicy, ...] = ()  # first match wins, on the token name
    protect: tuple[str, ...] = ()  # globs: leak firings on these say action "none"


@dataclass(slots=True)
class _Alert:
    count: int = 0
    firing: bool = False
    last_true: float = 0.0


@dataclass(slots=True)
class _Token:
    history: TokenHistory
    info: TokenInfo | None
    policy: TokenPolicy | None
    alerts: dict[str, _Alert] = field(
        default_factory=lambda: {"spend_anomaly": _Alert(), "leak_suspected": _Alert()}
    )


def read_lines(path: str) -> Iterator[dict[str, object]]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def replay(lines: Iterable[dict[str, object]], config: ReplayConfig | None = None) -> list[dict[str, object]]:
    """Run the detectors over a backtest input; return the alert transitions, in time order."""
    cfg = config or ReplayConfig()
    usage: list[tuple[float, Key, float, float, str | None, str | None]] = []
    meta: dict[Key, dict[str, object]] = {}
    for d in lines:
        key = (str(d.get("provider") or "default"), str(d["token"]))
        if d.get("type") == "token":
            meta[key] = d
            continue
        model, ip = d.get("model"), d.get("ip")
        usage.append(
            (
                _ts(d["ts"]),
                key,
                float(d.get("cost_usd") or 0.0),  # type: ignore[arg-type]
                float(d.get("requests") or 0.0),  # type: ignore[arg-type]
                str(model) if model else None,
                str(ip) if ip else None,
            )
        )
    if not usage:
        return []
    usage.sort(key=lambda u: u[0])
    step = cfg.poll_interval
    start = (usage[0][0] // step) * step
    tokens = {key: _new_token(key, meta[key], start, cfg) for key in meta}
    anomaly = AnomalyDetector(poll_interval=step)
    leak = LeakDetector(anomaly=anomaly)
    out: list[dict[str, object]] = []
    i, now = 0, start
    while i < len(usage) or any(a.firing for t in tokens.values() for a in t.alerts.values()):
        while i < len(usage) and usage[i][0] <= now:
            ts, key, cost, req, model, ip = usage[i]
            tok = tokens.get(key)
            if tok is None:
                tok = tokens[key] = _new_token(key, None, ts, cfg)
            tok.history.observe(ts, cost, req, model, ip)
            i += 1
        fleet = FleetContext.build((t.history for t in tokens.values()), now)
        for key, tok in tokens.items():
            a = anomaly.evaluate(tok.history, now, cfg.anomaly, fleet)
            lk = leak.evaluate(tok.history, now, tok.policy, tok.info, fleet)
            if a.fire or lk.fire:
                tok.history.mark_anomalous(now, a.window)
            out.extend(_step(tok, key, now, a, lk, cfg))
        if i >= len(usage) and now > usage[-1][0] + cfg.keep_firing_for:
            break
        now += step
    return out


def _new_token(key: Key, d: dict[str, object] | None, start: float, cfg: ReplayConfig) -> _Token:
    name = key[1]
    policy = next((p for p in cfg.policies if fnmatch.fnmatchcase(name, p.match)), None)
    if d is None:
        return _Token(TokenHistory(start), None, policy)
    created = _ts(d["created_at"]) if d.get("created_at") else None
    status = str(d.get("status") or "active")
    limits = d.get("limits") if isinstance(d.get("limits"), dict) else {}
    assert isinstance(limits, dict)
    daily = limits.get("daily_limit") or {}
    monthly = limits.get("monthly_limit") or {}
    info = TokenInfo(
        status=status,
        created_at=created,
        limits=TokenLimits(
            daily_usd=daily.get("amount"),
            monthly_usd=monthly.get("amount"),
            daily_requests=daily.get("requests"),
            allowed_models=tuple(limits.get("allowed_models") or ()),
        ),
        ip_whitelist=tuple(str(x) for x in (d.get("ip_whitelist") or ())),  # type: ignore[attr-defined]
    )
    # A token the relay calls unused has been idle since its creation: keywatch did not see it,
    # but dormancy does not start when keywatch does.
    idle_since = created if status == "unused" else None
    return _Token(TokenHistory(start, idle_since=idle_since), info, policy)


def _step(
    tok: _Token, key: Key, now: float, a: AnomalyResult, lk: LeakResult, cfg: ReplayConfig
) -> Iterator[dict[str, object]]:
    for rule, cond, need, value in (
        ("spend_anomaly", a.fire, cfg.anomaly.for_polls, round(a.score, 2)),
        ("leak_suspected", lk.fire, cfg.leak_for, len(lk.signals)),
    ):
        st = tok.alerts[rule]
        if cond:
            st.count += 1
            st.last_true = now
            if not st.firing and st.count >= need:
                st.firing = True
                yield _transition(key, now, rule, "firing", value, cfg)
        else:
            st.count = 0
            if st.firing and now - st.last_true >= cfg.keep_firing_for:
                st.firing = False
                yield _transition(key, now, rule, "resolved", value, cfg)


def _transition(
    key: Key, now: float, rule: str, state: str, value: float, cfg: ReplayConfig
) -> dict[str, object]:
    leak = rule == "leak_suspected"
    protected = any(fnmatch.fnmatchcase(key[1], g) for g in cfg.protect)
    return {
        "ts": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rule": rule,
        "provider": key[0],
        "token": key[1],
        "severity": "security" if leak else "warning",
        "state": state,
        "value": value,
        "action": "quarantine" if leak and state == "firing" and not protected else "none",
    }


def _ts(v: object) -> float:
    return datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()


def _policy(text: str) -> TokenPolicy:
    glob, _, hours = text.partition("=")
    return TokenPolicy(match=glob, business_hours=hours or None)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m alerts.replay_eval", description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--poll", type=float, default=900.0, help="poll interval in seconds (default 900)")
    ap.add_argument("--anomaly-for", type=int, default=2)
    ap.add_argument("--leak-for", type=int, default=1)
    ap.add_argument("--keep-firing-for", type=float, default=3600.0)
    ap.add_argument("--business", action="append", default=[], metavar="GLOB=HOURS")
    ap.add_argument("--protect", action="append", default=[], metavar="GLOB", help="never quarantined")
    args = ap.parse_args(argv)
    cfg = ReplayConfig(
        poll_interval=args.poll,
        anomaly=AnomalyRule(for_polls=args.anomaly_for),
        leak_for=args.leak_for,
        keep_firing_for=args.keep_firing_for,
        policies=tuple(_policy(b) for b in args.business),
        protect=tuple(args.protect),
    )
    alerts = replay(read_lines(args.input), cfg)
    with open(args.output, "w") as f:
        for a in alerts:
            f.write(json.dumps(a) + "\n")
    firing = sum(1 for a in alerts if a["state"] == "firing")
    print(f"{len(alerts)} transitions ({firing} firing) -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
