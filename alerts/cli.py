"""The alert side of the `keywatch` command line: what alerts, silence, revoke, audit, backtest,
export and notify-test do.

Their options are declared in monitor/cli.py with the rest of the command line (so `keywatch
--help` loads none of this); `monitor.cli` reaches these handlers through the composition root
(`monitor.app.command_handlers`), so the import arrow keeps running from alerts to monitor."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import gzip
import logging
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy import Engine

from alerts.lifecycle.store import AlertStore
from alerts.matchers import MatcherError
from alerts.notification.mute import SilenceError, Silences
from alerts.notification.notify import NoTargetError, notify_test
from alerts.offline.audit import audit
from alerts.offline.backtest import read_input, run_backtest, write_output
from alerts.offline.export import export_lines
from alerts.response.announce import announce_restore
from alerts.response.quarantine import Responder
from alerts.views import silence_row
from monitor.clock import SystemClock
from monitor.durations import parse_duration
from monitor.model import severity_rank
from monitor.policy import PolicyBook
from monitor.progress import Progress
from monitor.providers.base import ProviderError
from monitor.providers.http import make_client
from monitor.providers.registry import build_provider
from monitor.settings import ProviderSettings, Settings
from monitor.store import UsageReader, open_engine
from monitor.store.reader import TokenLookupError
from monitor.table import render_table
from monitor.tokens import TokenState
from monitor.views import present

__all__ = ["Handler", "handlers"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _store(settings: Settings) -> tuple[Engine, AlertStore]:
    engine = open_engine(settings.database)
    store = AlertStore(engine)
    store.ensure_schema()
    return engine, store


def _print_json(rows: list[dict[str, Any]]) -> None:
    sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")


def _alerts(args: argparse.Namespace, settings: Settings) -> int:
    engine, store = _store(settings)
    active = [a for a in store.load_alerts() if a.state in ("pending", "firing")]
    active.sort(key=lambda a: (-severity_rank(a.severity), a.state != "firing", a.rule))
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


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    policies = PolicyBook(settings.tokens, settings.response.protect)

    def question(token: TokenState, ps: ProviderSettings) -> str:
        action = ps.action or settings.response.action
        what = "would quarantine" if args.dry_run else f"quarantine ({action})"
        warning = " It is a PROTECTED token." if policies.protected(token.name) else ""
        return f"{what} {token.provider}/{token.name}?{warning}"

    async def act(responder: Responder, ps: ProviderSettings, token: TokenState) -> int:
        decision = await responder.manual(
            provider=ps.name,
            token_id=token.token_id,
            token=token.name,
            reason=args.reason,
            dry_run=args.dry_run,
        )
        print(f"{ps.name}/{token.name}: {decision.response}")
        return 0 if decision.state in ("done", "dry_run", "pending_verification") else 1

    return _at_the_relay("revoke", args, settings, question, act)


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    def question(token: TokenState, _ps: ProviderSettings) -> str:
        return f"re-enable {token.provider}/{token.name} (it was quarantined as leaked)?"

    async def act(responder: Responder, ps: ProviderSettings, token: TokenState) -> int:
        who = _login()
        decision = await responder.restore(
            provider=ps.name, token_id=token.token_id, token=token.name, reason=f"{args.reason} (by {who})"
        )
        print(f"{ps.name}/{token.name}: {decision.response}")
        if decision.state != "done":
            return 1
        if announce_restore(
            settings, responder.engine, ps.name, token.name, decision.response, args.reason, who
        ):
            print("announced to the targets of security notices (sent by the running daemon)")
        else:
            print("not announced: no notification target is routed for security notices")
        return 0

    return _at_the_relay("restore", args, settings, question, act)


def _at_the_relay(
    command: str,
    args: argparse.Namespace,
    settings: Settings,
    question: Callable[[TokenState, ProviderSettings], str],
    act: Callable[[Responder, ProviderSettings, TokenState], Awaitable[int]],
) -> int:
    """`revoke` and `restore`: find the token, confirm unless --yes, reach its relay (one poll:
    the token is there and the adapter can verify by key), then act through a Responder, which
    records the audit trail exactly as the daemon does."""
    engine = open_engine(settings.database)
    try:
        try:
            token = UsageReader(engine).find_one(args.token)
        except TokenLookupError as exc:
            print(f"keywatch {command}: {exc}", file=sys.stderr)
            return exc.code
        ps = next((p for p in settings.providers if p.name == token.provider), None)
        if ps is None:
            print(f"keywatch {command}: provider {token.provider!r} is not in the config", file=sys.stderr)
            return 2
        if not args.yes:
            if not sys.stdin.isatty():
                print(
                    f"keywatch {command}: refusing without --yes when not run interactively", file=sys.stderr
                )
                return 2
            if input(f"{question(token, ps)} [y/N] ").strip().lower() not in ("y", "yes"):
                print("nothing done")
                return 1

        async def run() -> int:
            async with make_client(timeout=ps.timeout) as client:
                provider = build_provider(ps, client)
                try:
                    await provider.poll()
                except ProviderError as exc:
                    print(f"keywatch {command}: cannot reach {ps.name}: {exc}", file=sys.stderr)
                    return 1
                responder = Responder(
                    engine,
                    settings.response,
                    clock=SystemClock(),
                    policies=PolicyBook(settings.tokens, settings.response.protect),
                    providers=lambda _name: provider,
                    provider_action=lambda _name: ps.action,
                )
                return await act(responder, ps, token)

        return asyncio.run(run())
    finally:
        engine.dispose()


def _login() -> str:
    try:
        return getpass.getuser()[:64]
    except (KeyError, OSError):
        return "unknown"


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    engine = open_engine(settings.database)
    try:
        reader = UsageReader(engine)
        states = [s for by_id in reader.token_states().values() for s in by_id.values()]
        now = present(time.time(), [p.last_success_at for p in reader.providers().values()])
    finally:
        engine.dispose()
    findings = audit(states, settings, PolicyBook(settings.tokens, settings.response.protect), now=now)
    rows = [f.to_json() for f in findings]
    if args.json:
        _print_json(rows)
        return 0
    if not states:
        print("no tokens yet: is `keywatch run` polling?")
    elif not rows:
        print(f"no findings on {len(states)} tokens")
    else:
        print(
            render_table(
                rows,
                [("finding", "FINDING"), ("provider", "PROVIDER"), ("token", "TOKEN"), ("detail", "DETAIL")],
            )
        )
    return 0


def _backtest(args: argparse.Namespace, settings: Settings) -> int:
    opener: Any = gzip.open if args.input.endswith(".gz") else open
    try:
        with opener(args.input, "rb") as f:
            data = read_input(f)
    except OSError as exc:
        print(f"keywatch backtest: cannot read {args.input}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"keywatch backtest: {args.input}: {exc}", file=sys.stderr)
        return 2
    quiet = [logging.getLogger(n) for n in ("alerts", "keywatch.alerts", "keywatch.response")]
    levels = [q.level for q in quiet]
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        for q in quiet:  # every replayed notification would be logged: the output is the record
            q.setLevel(logging.WARNING)
    started = time.monotonic()
    try:
        with Progress("backtest", unit="lines", total=len(data.usage)) as progress:
            rows = asyncio.run(run_backtest(data, settings, signals=args.signals, progress=progress.update))
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    took = time.monotonic() - started
    if args.json:
        _print_json(rows)
    else:
        write_output(rows, args.output)
    fired = Counter(r["rule"] for r in rows if r["state"] == "firing")
    actions = Counter(r["action"] for r in rows if r["action"] != "none")
    summary = ", ".join(f"{rule} {n}" for rule, n in fired.most_common()) or "nothing fired"
    acted = ", ".join(f"{a} {n}" for a, n in actions.items()) or "no quarantine"
    print(
        f"backtest (signals: {args.signals}): {len(data.usage):,} usage lines replayed in {took:.1f}s: "
        f"{summary}; {acted}",
        file=sys.stderr,
    )
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    try:
        since = time.time() - parse_duration(args.since)
    except ValueError as exc:
        print(f"keywatch export: --since: {exc}", file=sys.stderr)
        return 2
    engine = open_engine(settings.database)
    try:
        lines = export_lines(UsageReader(engine), since=since, raw_after=time.time() - settings.retention.raw)
        # Counted as they are made; the progress line is gone before the output is written.
        write_output(Progress("export", unit="lines").counted(lines), args.output)
    finally:
        engine.dispose()
    return 0


def handlers() -> dict[str, Handler]:
    """Command name -> handler, for the commands monitor/cli.py declares for the alert side."""
    return {
        "alerts": _alerts,
        "silence": _silence,
        "notify-test": _notify_test,
        "revoke": _revoke,
        "restore": _restore,
        "audit": _audit,
        "backtest": _backtest,
        "export": _export,
    }
