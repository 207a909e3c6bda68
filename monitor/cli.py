"""`keywatch`: the command line. Exit 0 ok, 1 runtime failure, 2 usage or config error.

Every command and option is declared here (the command line is a contract: extend it, never
rename), and importing this module stays cheap: `keywatch --help` and `--version` answer before
any of the daemon's libraries load. Commands import what they need when they run; the alert
side's handlers (alerts/cli.py) are reached through the composition root, monitor/app.py."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor import __version__
from monitor.model import PROVIDER_KINDS  # plain values: cheap to import

if TYPE_CHECKING:
    from monitor.settings import Settings
    from monitor.store import UsageReader
    from monitor.tokens import TokenState

__all__ = ["build_parser", "config_candidates", "find_config", "log_options", "main"]

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
CONFIG_NAME = "keywatch.yaml"
CONFIG_OPTIONAL = frozenset({"backtest"})  # replaying a file needs no relay: defaults will do
FLAVORS = PROVIDER_KINDS  # what `simulate` can play: every provider kind
SIGNAL_SETS = ("all", "spend")  # alerts.offline.backtest.SIGNAL_SETS (a test keeps them equal)

Handler = Callable[[argparse.Namespace], int]


# --- the parser -------------------------------------------------------------------------------
def _global_options(*, top: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name. The top parser holds the
    defaults (None: resolved in main); each subcommand's copy defaults to SUPPRESS, so a value
    given before the command is not overwritten by the subcommand's own default."""
    default = None if top else argparse.SUPPRESS
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("global options (before or after the command)")
    g.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        default=default,
        help=f"the config file (default: $KEYWATCH_CONFIG, else the first of ./{CONFIG_NAME}, "
        f"$XDG_CONFIG_HOME/keywatch/{CONFIG_NAME} (~/.config when unset), /etc/keywatch/{CONFIG_NAME})",
    )
    g.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default,
        help="log lines as text or as one JSON object per line (default: $KEYWATCH_LOG_FORMAT, else text)",
    )
    g.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.lower,
        default=default,
        help="the least severe log lines shown (default: $KEYWATCH_LOG_LEVEL, else info)",
    )
    g.add_argument(
        "--version", action="version", version=f"keywatch {__version__}", help="print the version and exit"
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _global_options(top=False)
    p = argparse.ArgumentParser(
        prog="keywatch",
        description="Watch the API tokens of LLM API relays: usage history, Prometheus metrics, "
        "budget, anomaly and leak alerts, guarded quarantine.",
        parents=[_global_options(top=True)],
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, title="commands")

    def command(parent: Any, name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=text, description=text[0].upper() + text[1:] + ".", parents=[common]
        )
        return parser

    def json_flag(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print a JSON array and nothing else")

    command(sub, "run", "the daemon: poll every relay, keep the history, serve /metrics and the API, alert")

    demo = command(
        sub, "demo", "a simulated relay and the daemon in one process, telling a story (no config)"
    )
    demo.add_argument(
        "--duration", type=float, default=120.0, help="seconds to run (default: 120; 0: until Ctrl-C)"
    )
    demo.add_argument(
        "--listen", default="127.0.0.1:9477", metavar="HOST:PORT", help="where /metrics is served"
    )
    demo.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="where the database and config go (default: a temp dir)",
    )

    sim = command(sub, "simulate", "a simulated relay on loopback (for trials, compose and benchmarks)")
    sim.add_argument("--listen", default="127.0.0.1:9478", metavar="HOST:PORT", help="where it answers")
    sim.add_argument("--flavor", choices=FLAVORS, default="laozhang", help="the relay kind it plays")
    sim.add_argument("--tokens", type=int, default=40, help="how many tokens its fleet has")
    sim.add_argument("--seed", type=int, default=1, help="the random seed of its fleet and traffic")

    command(sub, "check-config", "validate the config and summarise it")
    config = command(sub, "config", "about the config file")
    config_verbs = config.add_subparsers(dest="verb", metavar="VERB", required=True, title="verbs")
    command(config_verbs, "schema", "print the config file's JSON Schema (for editors and validators)")

    db = command(sub, "db", "the database: upgrade its schema, move a history to another database")
    db_verbs = db.add_subparsers(dest="verb", metavar="VERB", required=True, title="verbs")
    command(
        db_verbs, "migrate", "bring the configured database's schema up to date (`run` does it at start too)"
    )
    db_copy = command(
        db_verbs,
        "copy",
        "copy a whole history into an empty database (SQLite <-> PostgreSQL), verified by row counts "
        "and spend totals",
    )
    db_copy.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="URL",
        help="the database to read: sqlite:///keywatch.db",
    )
    db_copy.add_argument(
        "--to",
        dest="target",
        required=True,
        metavar="URL",
        help="the empty database to fill (its schema is created first): postgresql+psycopg://user@host/db",
    )
    json_flag(db_copy)

    tokens = command(sub, "tokens", "one row per token: status, spend today and this month, budget used")
    json_flag(tokens)
    history = command(sub, "history", "usage over time for one token")
    history.add_argument("token", help="token name, or provider/name when names repeat")
    history.add_argument("--since", default="24h", metavar="DURATION", help="how far back (default: 24h)")
    json_flag(history)

    # The alert side's commands: their handlers are in alerts/cli.py.
    alerts = command(sub, "alerts", "pending and firing alerts")
    json_flag(alerts)

    silence = command(sub, "silence", "mute alerts by label matchers")
    verbs = silence.add_subparsers(dest="verb", metavar="VERB", required=True, title="verbs")
    add = command(verbs, "add", "add a silence")
    add.add_argument(
        "matchers",
        nargs="+",
        metavar="MATCHER",
        help="label matchers, all of which must hold: token=dev-*, rule=spend_anomaly, provider!=lz, "
        "severity=~warn.*",
    )
    add.add_argument("--duration", default="1h", help="how long it mutes (default: 1h)")
    add.add_argument("--comment", required=True, help="why (shown with the silence)")
    add.add_argument("--author", default=None, help="who (default: the login name)")
    listing = command(verbs, "list", "silences not yet ended")
    listing.add_argument("--all", action="store_true", help="include expired ones")
    json_flag(listing)
    expire = command(verbs, "expire", "end a silence now")
    expire.add_argument("id", type=int, help="the silence's id (see `silence list`)")

    revoke = command(sub, "revoke", "quarantine a token by hand (recorded in the audit trail)")
    revoke.add_argument("token", help="token name, or provider/name when names repeat")
    revoke.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    revoke.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    revoke.add_argument("--dry-run", action="store_true", help="record what would happen, do nothing")

    restore = command(
        sub,
        "restore",
        "re-enable a token a quarantine disabled, after a review (audited, verified, announced)",
    )
    restore.add_argument("token", help="token name, or provider/name when names repeat")
    restore.add_argument("--reason", required=True, help="why it is safe again (kept in the audit trail)")
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    audit = command(sub, "audit", "the token hygiene report")
    json_flag(audit)

    backtest = command(sub, "backtest", "replay a usage history through the rules on a simulated clock")
    backtest.add_argument(
        "--input",
        required=True,
        metavar="FILE",
        help='JSON Lines, one {"ts", "provider", "token", "requests", "cost_usd", "model", "ip"} '
        "object per line (`keywatch export` writes them); .gz is fine",
    )
    backtest.add_argument("--output", default=None, metavar="FILE", help="write the transitions here")
    backtest.add_argument("--json", action="store_true", help="print the transitions as one JSON array")
    backtest.add_argument(
        "--signals",
        choices=SIGNAL_SETS,
        default="all",
        help="all: replay the lines as they are; spend: as a relay that reports only spend and "
        "request counts would (no IPs, no models)",
    )

    export = command(sub, "export", "write stored history in the backtest input format")
    export.add_argument("--since", default="30d", metavar="DURATION", help="how far back (default: 30d)")
    export.add_argument("--output", default=None, metavar="FILE", help="write here (default: stdout)")

    test = command(sub, "notify-test", "send a test notification to every target (exit 1 if any failed)")
    test.add_argument("--tag", default=None, help="only the targets with this tag")
    return p


# --- global options -------------------------------------------------------------------------
def log_options(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, str]:
    """(format, level): the options, else $KEYWATCH_LOG_FORMAT and $KEYWATCH_LOG_LEVEL, else text
    and info. A bad environment value is a usage error (ValueError), not a silent default."""
    fmt = args.log_format or env.get("KEYWATCH_LOG_FORMAT", "").strip().lower() or "text"
    level = args.log_level or env.get("KEYWATCH_LOG_LEVEL", "").strip().lower() or "info"
    if fmt not in LOG_FORMATS:
        raise ValueError(f"$KEYWATCH_LOG_FORMAT: {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    if level not in LOG_LEVELS:
        raise ValueError(f"$KEYWATCH_LOG_LEVEL: {level!r} is not one of {', '.join(LOG_LEVELS)}")
    return fmt, level


def config_candidates(env: Mapping[str, str], cwd: Path | None = None) -> list[Path]:
    """Where the config is looked for, in order, when neither -c nor $KEYWATCH_CONFIG names it."""
    xdg = env.get("XDG_CONFIG_HOME", "")
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    # The XDG spec: an unset, empty or relative $XDG_CONFIG_HOME means ~/.config.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
    return [
        (cwd or Path.cwd()) / CONFIG_NAME,
        base / "keywatch" / CONFIG_NAME,
        Path("/etc/keywatch") / CONFIG_NAME,
    ]


def find_config(
    named: str | None, env: Mapping[str, str], candidates: Sequence[Path] | None = None
) -> Path | None:
    """The config file: -c, else $KEYWATCH_CONFIG, else the first candidate that exists; None when
    nothing is found. A named file is returned even when missing, so the error names it."""
    if named:
        return Path(named)
    if env.get("KEYWATCH_CONFIG"):
        return Path(env["KEYWATCH_CONFIG"])
    for path in config_candidates(env) if candidates is None else candidates:
        try:
            if path.is_file():
                return path
        except OSError:  # there but not ours to look at: reading it will say why
            return path
    return None


def _config_file(args: argparse.Namespace) -> Path:
    from monitor.config import ConfigError

    path = find_config(args.config, os.environ)
    if path is None:
        looked = ", ".join(str(p) for p in config_candidates(os.environ))
        raise ConfigError(
            "(file)", f"no config file found (looked for {looked}): name one with -c PATH or $KEYWATCH_CONFIG"
        )
    return path


def load(args: argparse.Namespace, *, optional: bool = False) -> Settings:
    """The config; with `optional`, the defaults when none was named and none is found."""
    from monitor.config import load_settings
    from monitor.settings import Settings

    if optional and find_config(args.config, os.environ) is None:
        return Settings()
    settings = load_settings(_config_file(args))
    args.scrubber.update(_secret_values(settings))
    return settings


def _secret_values(settings: Settings) -> list[str]:
    values = [settings.api_token.reveal(), settings.leak_reports.hmac_secret.reveal()]
    for p in settings.providers:
        values.append(p.admin_token.reveal())
        values.extend(k.reveal() for k in p.keys.values())
    values.extend(t.url.reveal() for t in settings.notify.urls)
    values.append(_database_password(settings.database))
    return values


def _database_password(url: str) -> str:
    """The password in `database:` (postgresql+psycopg://user:PASSWORD@host/db), for the scrubber."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password or ""
    except ArgumentError:
        return ""


# --- dispatch ---------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        log_format, log_level = log_options(args, os.environ)
    except ValueError as exc:
        parser.error(str(exc))  # exits 2
    from monitor.logs import configure_logging

    args.scrubber = configure_logging(log_format, log_level)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `keywatch tokens | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except Exception as exc:
        return _failed(args.command, exc)


def _dispatch(args: argparse.Namespace) -> int:
    own = _COMMANDS.get(args.command)
    if own is not None:
        return own(args)
    from monitor.app import command_handlers  # the alert side, through the composition root

    handler = command_handlers()[args.command]
    return int(handler(args, load(args, optional=args.command in CONFIG_OPTIONAL)))


def _failed(command: str, exc: Exception) -> int:
    """One line on stderr: config errors exit 2, everything else 1 (the traceback at debug)."""
    from monitor.config import ConfigError
    from monitor.errors import StartupError
    from monitor.store.db import StoreUnavailable

    if isinstance(exc, ConfigError):
        print(str(exc), file=sys.stderr)
        return 2
    if isinstance(exc, StoreUnavailable | StartupError):
        print(f"keywatch {command}: {exc}", file=sys.stderr)
        return 1
    import logging

    logging.getLogger("keywatch").debug("keywatch %s failed", command, exc_info=exc)
    text = str(exc).strip().splitlines()
    print(f"keywatch {command}: {type(exc).__name__}: {text[0] if text else ''}"[:500], file=sys.stderr)
    return 1


def _print_json(rows: Sequence[Mapping[str, Any]]) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")


# --- the monitor side's commands ------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    import asyncio

    from monitor.app import Daemon
    from monitor.providers.registry import UnsupportedKind

    settings = load(args)

    async def main() -> None:
        daemon = Daemon(settings, manage_gc=True)
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
    import asyncio
    import contextlib

    from monitor.simulator import run_simulator

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_simulator(args.listen, tokens=args.tokens, seed=args.seed, flavor=args.flavor))
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from monitor.config import summarize

    settings = load(args)
    print(f"config ok: {_config_file(args)}")
    for line in summarize(settings):
        print(f"  {line}")
    return 0


def _config(args: argparse.Namespace) -> int:
    import json

    from monitor import config

    # args.verb is "schema", the only verb so far.
    print(json.dumps(config.json_schema(), indent=2))
    return 0


def _db(args: argparse.Namespace) -> int:
    return _db_migrate(args) if args.verb == "migrate" else _db_copy(args)


def _db_migrate(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from monitor.store import StoreUnavailable, apply_migrations, open_engine, store_error_text
    from monitor.store.copy import shown_url

    settings = load(args)
    where = shown_url(settings.database)
    try:
        engine = open_engine(settings.database, migrate=False)
    except StoreUnavailable as exc:
        print(f"keywatch db migrate: {exc}", file=sys.stderr)
        return 1
    try:
        applied = apply_migrations(engine)
    except (SQLAlchemyError, OSError) as exc:
        print(
            f"keywatch db migrate: cannot open the database {where}: {store_error_text(exc)}", file=sys.stderr
        )
        return 1
    finally:
        engine.dispose()
    if not applied:
        print(f"{where}: schema up to date")
        return 0
    print(f"{where}: applied {len(applied)} migration{'s' if len(applied) > 1 else ''}")
    for name in applied:
        print(f"  {name}")
    return 0


def _db_copy(args: argparse.Namespace) -> int:
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    from monitor.progress import Progress
    from monitor.store import StoreUnavailable
    from monitor.store.copy import CopyRefused, copy_database
    from monitor.table import render_table

    for url in (args.source, args.target):
        try:
            password = make_url(url).password
        except ArgumentError:
            continue  # the copy says the URL is bad
        if password:
            args.scrubber.update([str(password)])
    try:
        with Progress("db copy", unit="rows") as progress:
            report = copy_database(args.source, args.target, progress=progress.update)
    except (CopyRefused, StoreUnavailable) as exc:
        print(f"keywatch db copy: {exc}", file=sys.stderr)
        return 1
    rows = [t.to_json() for t in report.tables]
    if args.json:
        _print_json(rows)
    else:
        columns = [
            ("table", "TABLE"),
            ("rows", "ROWS"),
            ("source_rows", "SOURCE ROWS"),
            ("target_spend_usd", "SPEND $"),
            ("verified", "VERIFIED"),
        ]
        print(render_table(rows, columns))
        outcome = (
            "verified and committed"
            if report.committed
            else "NOT verified: nothing was committed, the target is left empty"
        )
        print(
            f"\n{report.rows:,} rows from {report.source} to {report.target} in {report.seconds:,.1f} s: {outcome}"
        )
    if not report.committed:
        bad = ", ".join(t.table for t in report.tables if not t.verified)
        print(f"keywatch db copy: verification failed ({bad}): the target was rolled back", file=sys.stderr)
        return 1
    return 0


def _reader(settings: Settings) -> UsageReader:
    from monitor.store import UsageReader, open_engine

    return UsageReader(open_engine(settings.database))


def _stored_states(reader: UsageReader, settings: Settings) -> list[TokenState]:
    """Every stored token, its day and month spend taken as of its provider's last successful
    poll. The stored figures describe that moment (a relay's own day and month figures are from
    it too), so the windows are cut there, not at the wall clock: a stopped daemon's tokens read
    as they were last seen, and the demo's history, written on a clock running ahead of ours,
    reads as the demo left it."""
    from zoneinfo import ZoneInfo

    from monitor.tokens import period_starts, with_windows

    zones = {p.name: p.timezone for p in settings.providers}
    facts = reader.providers()
    out: list[TokenState] = []
    for provider, by_id in reader.token_states().items():
        fact = facts.get(provider)
        if fact is not None and fact.last_success_at is not None:
            day, month = period_starts(fact.last_success_at, ZoneInfo(zones.get(provider, "UTC")))
            by_id = with_windows(by_id, reader.window_sums(provider, day, month))
        out.extend(by_id.values())
    return out


def _stale_notes(reader: UsageReader, settings: Settings, now: float) -> list[str]:
    """A line for each provider whose last poll is older than readiness allows (three poll
    intervals and its poll deadline): its figures are that old."""
    from monitor.views import iso

    facts = reader.providers()
    notes = []
    for ps in settings.providers:
        fact = facts.get(ps.name)
        last = fact.last_success_at if fact else None
        if last is not None and now - last > 3 * ps.poll_interval + ps.poll_deadline:
            age = now - last
            ago = f"{age / 3600:,.1f} hours" if age < 2 * 86400 else f"{age / 86400:,.0f} days"
            notes.append(f"{ps.name}: figures as of its last poll, {iso(last)} ({ago} ago)")
    return notes


def _tokens(args: argparse.Namespace) -> int:
    from monitor.policy import PolicyBook
    from monitor.table import render_table
    from monitor.views import token_rows

    settings = load(args)
    reader = _reader(settings)
    states = _stored_states(reader, settings)
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
    for note in _stale_notes(reader, settings, time.time()):
        print(note)
    return 0


def _history(args: argparse.Namespace) -> int:
    from monitor.durations import parse_duration
    from monitor.store.reader import TokenLookupError
    from monitor.table import render_table
    from monitor.views import iso, present

    settings = load(args)
    try:
        span = parse_duration(args.since)
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
    fact = reader.providers().get(token.provider)
    now = present(time.time(), [fact.last_success_at if fact else None])
    since = now - span
    # Raw deltas while they are kept, hourly rollups beyond.
    raw = since >= now - settings.retention.raw
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


_COMMANDS: dict[str, Handler] = {
    "run": _run,
    "demo": _demo,
    "simulate": _simulate,
    "check-config": _check_config,
    "config": _config,
    "db": _db,
    "tokens": _tokens,
    "history": _history,
}
