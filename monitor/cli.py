"""`keywatch`: the command line (DESIGN §3.1). Exit 0 ok, 1 runtime failure, 2 usage or config error."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from monitor import __version__
from monitor.config import ConfigError, load_settings, summarize
from monitor.durations import parse_duration
from monitor.errors import StartupError
from monitor.logs import SecretScrubber, configure_logging
from monitor.settings import Settings
from monitor.store.db import StoreUnavailable
from monitor.store.reader import TokenLookupError

__all__ = ["main"]

log = logging.getLogger("keywatch")

Handler = Callable[[argparse.Namespace], int]
CONFIG_OPTIONAL = frozenset({"backtest"})  # replaying a file needs no relay: defaults will do


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keywatch", description="Watch LLM relay API tokens.")
    p.add_argument("-c", "--config", help="config file (default: $KEYWATCH_CONFIG, else ./keywatch.yaml)")
    p.add_argument("--version", action="version", version=f"keywatch {__version__}")
    p.add_argument(
        "--log-format", choices=("text", "json"), default=os.environ.get("KEYWATCH_LOG_FORMAT", "text")
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("run", help="the daemon")
    demo = sub.add_parser("demo", help="simulator + daemon in one process, no config needed")
    demo.add_argument("--duration", type=float, default=120.0, help="seconds (0 = until Ctrl-C)")
    demo.add_argument("--listen", default="127.0.0.1:9477")
    demo.add_argument("--data-dir", default=None, help="where the demo database goes (default: a temp dir)")
    sim = sub.add_parser("simulate", help="a simulated relay on loopback")
    sim.add_argument("--listen", default="127.0.0.1:9478")
    sim.add_argument("--flavor", choices=("laozhang", "oneapi", "newapi", "openai"), default="laozhang")
    sim.add_argument("--tokens", type=int, default=40)
    sim.add_argument("--seed", type=int, default=1)
    sub.add_parser("check-config", help="validate the config and summarise it")
    tokens = sub.add_parser("tokens", help="one row per token")
    tokens.add_argument("--json", action="store_true")
    history = sub.add_parser("history", help="usage over time for one token")
    history.add_argument("token", help="token name, or provider/name")
    history.add_argument("--since", default="24h")
    history.add_argument("--json", action="store_true")
    from monitor.app import command_handlers

    p.set_defaults(settings_handlers=command_handlers(sub))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    scrubber = configure_logging(args.log_format, args.log_level)
    args.scrubber = scrubber
    handlers: dict[str, Handler] = {
        "run": _run,
        "demo": _demo,
        "simulate": _simulate,
        "check-config": _check_config,
        "tokens": _tokens,
        "history": _history,
    }
    try:
        if args.command in args.settings_handlers:
            settings = load(args, optional=args.command in CONFIG_OPTIONAL)
            return int(args.settings_handlers[args.command](args, settings))
        return handlers[args.command](args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (StoreUnavailable, StartupError) as exc:
        print(f"keywatch {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # startup and runtime errors follow the config errors' contract: one line
        log.debug("keywatch %s failed", args.command, exc_info=True)
        text = str(exc).strip().splitlines()
        print(
            f"keywatch {args.command}: {type(exc).__name__}: {text[0] if text else ''}"[:500], file=sys.stderr
        )
        return 1


def _config_path(args: argparse.Namespace) -> str:
    return str(args.config or os.environ.get("KEYWATCH_CONFIG") or "keywatch.yaml")


def load(args: argparse.Namespace, *, optional: bool = False) -> Settings:
    """The config; with `optional`, the defaults when no file was named and none is here."""
    path = _config_path(args)
    if optional and not args.config and not os.environ.get("KEYWATCH_CONFIG") and not os.path.exists(path):
        return Settings()
    settings = load_settings(path)
    scrubber: SecretScrubber = args.scrubber
    scrubber.update(_secret_values(settings))
    return settings


def _secret_values(settings: Settings) -> list[str]:
    values = [settings.api_token.reveal(), settings.leak_reports.hmac_secret.reveal()]
    for p in settings.providers:
        values.append(p.admin_token.reveal())
        values.extend(k.reveal() for k in p.keys.values())
    values.extend(t.url.reveal() for t in settings.notify.urls)
    return values


def _print_json(rows: list[dict[str, Any]]) -> None:
    sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")


# --- commands ---------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from monitor.app import Daemon
    from monitor.providers.registry import UnsupportedKind

    settings = load(args)

    async def main() -> None:
        daemon = Daemon(settings)
        try:
            await daemon.start()
            await daemon.run_until_stopped()
        finally:
            await daemon.stop()

    try:
        asyncio.run(main())
    except UnsupportedKind as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    return 0


def _demo(args: argparse.Namespace) -> int:
    from monitor.demo import run_demo

    return run_demo(duration=args.duration, listen=args.listen, data_dir=args.data_dir)


def _simulate(args: argparse.Namespace) -> int:
    from monitor.simulator import run_simulator

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_simulator(args.listen, tokens=args.tokens, seed=args.seed, flavor=args.flavor))
    return 0


def _check_config(args: argparse.Namespace) -> int:
    settings = load(args)
    print(f"config ok: {_config_path(args)}")
    for line in summarize(settings):
        print(f"  {line}")
    return 0


def _reader(settings: Settings) -> Any:
    from monitor.store import UsageReader, open_engine

    return UsageReader(open_engine(settings.database))


def _tokens(args: argparse.Namespace) -> int:
    from monitor.policy import PolicyBook
    from monitor.table import render_table
    from monitor.views import token_rows

    settings = load(args)
    states = [s for by_id in _reader(settings).token_states().values() for s in by_id.values()]
    rows = token_rows(states, PolicyBook(settings.tokens, settings.response.protect))
    if args.json:
        _print_json(rows)
        return 0
    columns = [
        ("provider", "PROVIDER"),
        ("name", "TOKEN"),
        ("status", "STATUS"),
        ("today_usd", "TODAY $"),
        ("month_usd", "MONTH $"),
        ("budget_used_pct", "BUDGET %"),
        ("last_used_at", "LAST USED"),
        ("anomaly_score", "ANOMALY"),
    ]
    print(render_table(rows, columns) if rows else "no tokens yet: is `keywatch run` polling?")
    return 0


def _history(args: argparse.Namespace) -> int:
    from monitor.table import render_table
    from monitor.views import iso

    settings = load(args)
    try:
        since = time.time() - parse_duration(args.since)
    except ValueError as exc:
        print(f"keywatch history: --since: {exc}", file=sys.stderr)
        return 2
    reader = _reader(settings)
    try:
        token = reader.find_one(args.token)
    except TokenLookupError as exc:
        print(f"keywatch history: {exc}", file=sys.stderr)
        return exc.code
    assert token.pk is not None
    # Raw deltas while they are kept, hourly rollups beyond.
    raw = since >= time.time() - settings.retention.raw
    points = reader.deltas(token.pk, since) if raw else reader.hourly(token.pk, since)
    rows = [
        {
            "ts": iso(p.ts),
            "provider": token.provider,
            "token": token.name,
            "cost_usd": p.cost_usd,
            "requests": p.requests,
        }
        for p in points
    ]
    if args.json:
        _print_json(rows)
        return 0
    print(
        render_table(rows, [("ts", "TIME"), ("cost_usd", "COST $"), ("requests", "REQUESTS")])
        if rows
        else "no usage"
    )
    total = sum(p.cost_usd for p in points)
    print(f"\n{token.provider}/{token.name}: ${total:,.4f} over {len(points)} {'polls' if raw else 'hours'}")
    return 0
