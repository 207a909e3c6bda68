"""The alert side of the `keywatch` command line: alerts, silence, notify-test.

`monitor.cli` reaches these through the composition root (`monitor.app.command_handlers`), so
the import arrow keeps running from alerts to monitor."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import Engine

from alerts.matchers import MatcherError
from alerts.mute import SilenceError, Silences
from alerts.notify import NoTargetError, notify_test
from alerts.store import AlertStore
from alerts.views import silence_row
from monitor.durations import parse_duration
from monitor.settings import Settings
from monitor.store import open_engine
from monitor.table import render_table

__all__ = ["Handler", "register"]

Handler = Callable[[argparse.Namespace, Settings], int]


def register(sub: Any) -> dict[str, Handler]:
    """Add the alert commands to `keywatch`'s subparsers; returns command -> handler."""
    alerts = sub.add_parser("alerts", help="pending and firing alerts")
    alerts.add_argument("--json", action="store_true")

    silence = sub.add_parser("silence", help="mute alerts by label matchers")
    verbs = silence.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser(
        "add", help="add a silence: MATCHER like token=dev-*, rule=spend_anomaly, provider!=lz"
    )
    add.add_argument("matchers", nargs="+", metavar="MATCHER")
    add.add_argument("--duration", default="1h")
    add.add_argument("--comment", required=True)
    add.add_argument("--author", default=None)
    listing = verbs.add_parser("list", help="silences not yet ended")
    listing.add_argument("--all", action="store_true", help="include expired ones")
    listing.add_argument("--json", action="store_true")
    expire = verbs.add_parser("expire", help="end a silence now")
    expire.add_argument("id", type=int)

    test = sub.add_parser(
        "notify-test", help="send a test notification to every target (or those with --tag)"
    )
    test.add_argument("--tag", default=None)
    return {"alerts": _alerts, "silence": _silence, "notify-test": _notify_test}


def _store(settings: Settings) -> tuple[Engine, AlertStore]:
    engine = open_engine(settings.database)
    store = AlertStore(engine)
    store.ensure_schema()
    return engine, store


def _print_json(rows: list[dict[str, Any]]) -> None:
    sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")


def _alerts(args: argparse.Namespace, settings: Settings) -> int:
    engine, store = _store(settings)
    order = {"security": 0, "critical": 1, "warning": 2, "info": 3}
    active = [a for a in store.load_alerts() if a.state in ("pending", "firing")]
    active.sort(key=lambda a: (order.get(a.severity, 9), a.state != "firing", a.rule))
    rows = [a.to_api() for a in active]
    engine.dispose()
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no pending or firing alerts")
        return 0
    columns = [
        ("severity", "SEVERITY"),
        ("state", "STATE"),
        ("rule", "RULE"),
        ("provider", "PROVIDER"),
        ("token", "TOKEN"),
        ("since", "SINCE"),
        ("summary", "SUMMARY"),
    ]
    print(render_table(rows, columns))
    return 0


def _silence(args: argparse.Namespace, settings: Settings) -> int:
    engine, store = _store(settings)
    silences = Silences(store)
    now = time.time()
    try:
        if args.verb == "add":
            try:
                duration = parse_duration(args.duration)
                author = args.author or getpass.getuser()
                made = silences.add(
                    args.matchers, now=now, created_by=author, comment=args.comment, duration=duration
                )
            except (ValueError, MatcherError, SilenceError) as exc:
                print(f"keywatch silence add: {exc}", file=sys.stderr)
                return 2
            print(f"silence {made.id} until {silence_row(made, now)['ends_at']}: {' '.join(args.matchers)}")
        elif args.verb == "list":
            rows = [silence_row(s, now) for s in silences.query(now=now, include_expired=args.all)]
            if args.json:
                _print_json(rows)
            elif rows:
                for row in rows:
                    row["matchers"] = " ".join(row["matchers"])
                cols = [
                    ("id", "ID"),
                    ("status", "STATUS"),
                    ("matchers", "MATCHERS"),
                    ("ends_at", "ENDS"),
                    ("created_by", "BY"),
                    ("comment", "COMMENT"),
                ]
                print(render_table(rows, cols))
            else:
                print("no silences")
        elif args.verb == "expire":
            if not silences.expire(args.id, now=now):
                print(f"keywatch silence expire: no active silence {args.id}", file=sys.stderr)
                return 1
            print(f"silence {args.id} expired")
    finally:
        engine.dispose()
    return 0


def _notify_test(args: argparse.Namespace, settings: Settings) -> int:
    try:
        results = asyncio.run(notify_test(settings, args.tag))
    except NoTargetError as exc:
        print(f"keywatch notify-test: {exc}", file=sys.stderr)
        return 1
    if not results:
        print("no notification targets configured" + (f" with tag {args.tag!r}" if args.tag else ""))
        return 1
    for target, ok in results.items():
        print(f"{'ok    ' if ok else 'FAILED'} {target}")
    return 0 if all(results.values()) else 1
