"""Load and validate the YAML config (DESIGN §3.2) into frozen, typed `Settings`.

Every problem is one `ConfigError` that names the key path (`providers[0].base_url`) and the reason on
one line, and never quotes a secret. Validation is complete before anything is returned, so a reload
can swap a new `Settings` in whole or keep the old one.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal, TypeVar, cast, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from monitor.durations import MAX_DURATION_SECONDS, format_duration, parse_duration
from monitor.model import ProviderKind, Severity
from monitor.secret import Secret
from monitor.settings import (
    AnomalyRule,
    Budget,
    BudgetRule,
    ForecastRule,
    LeakReports,
    LeakRule,
    Notify,
    NotifyTarget,
    ProviderSettings,
    Response,
    Retention,
    Rules,
    Settings,
    TokenPolicy,
)

__all__ = [
    "BusinessHours",
    "ConfigError",
    "load_settings",
    "parse_business_hours",
    "parse_settings",
    "summarize",
]

_Action = Literal["disable", "delete"]
_T = TypeVar("_T")
_D = TypeVar("_D")

# The keys each mapping may hold. A secret key `x` may also be given as `x_file` (see _Reader.secret).
_KEYS: Final[dict[str, tuple[str, ...]]] = {
    section: tuple(keys.split())
    for section, keys in {
        "(root)": "database listen api_token providers tokens rules notify response leak_reports retention",
        "providers": "name kind base_url admin_token user_id project_id poll_interval timeout keys concurrency"
        " retries timezone quota_per_unit reveal_keys action poll_timeout max_response_mb max_pages",
        "tokens": "match budget protected business_hours",
        "tokens.budget": "daily_usd monthly_usd",
        "rules": "budget forecast anomaly leak expiry unused rotation provider_down",
        "rules.budget": "enabled thresholds",
        "rules.forecast": "enabled",
        "rules.anomaly": "enabled sensitivity min_impact_usd min_impact_pct for min_requests keep_firing_for",
        "rules.leak": "enabled for",
        "rules.expiry": "warn_before",
        "rules.unused": "after",
        "rules.rotation": "prod default",
        "rules.provider_down": "after",
        "notify": "urls apprise_config routes group_by group_wait group_interval repeat_interval send_resolved"
        " grafana_url",
        "notify.urls": "url tags",
        "response": "auto_revoke dry_run action max_per_hour protect",
        "leak_reports": "hmac_secret github_public_keys",
        "retention": "raw hourly",
    }.items()
}
_KINDS: Final = get_args(ProviderKind)
_SEVERITIES: Final = get_args(Severity)
_ACTIONS: Final = ("disable", "delete")
_PROVIDER_NAME = re.compile(r"[a-z0-9_-]+")
_TAG = re.compile(r"[a-z0-9][a-z0-9_-]*")  # what Apprise accepts as a tag (it lowercases them)
_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")
_SQLITE = re.compile(r"(sqlite(?:\+\w+)?):///(.*)", re.DOTALL)
_MAX_VALUES = 100_000  # YAML aliases can make a tiny file expand into a huge tree
_DAY = 86_400.0


class ConfigError(Exception):
    """A config problem. `key` is the path (`providers[0].base_url`, `(root)` or `(file)`)."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = _one_line(key)
        self.reason = _one_line(reason)
        super().__init__(f"config error: {self.key}: {self.reason}")


def load_settings(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Read, interpolate (from `env`, default os.environ) and validate the config file at `path`."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError("(file)", f"cannot read {file}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError("(file)", f"cannot read {file}: not UTF-8 text") from None
    data = _load_yaml(text)
    # absolute(), not resolve(): a symlinked config (Kubernetes ConfigMap) keeps its own folder
    base_dir = file.absolute().parent
    env = os.environ if env is None else env
    return parse_settings(data, base_dir=base_dir, env=env, source=str(file.absolute()))


def parse_settings(data: object, *, base_dir: Path, env: Mapping[str, str], source: str | None) -> Settings:
    """Validate an already-parsed YAML document. Relative paths resolve against `base_dir`."""
    if data is None:
        raise ConfigError("(root)", "the config is empty")
    if not isinstance(data, dict):
        raise ConfigError("(root)", f"expected a mapping at the top level, got {_type_name(data)}")
    try:
        data = _Expander(env).expand(data, "")
    except RecursionError:
        raise ConfigError("(root)", "the document nests too deeply") from None
    r = _Reader(data, "", "(root)", base_dir, secrets=("api_token",))
    return Settings(
        database=_database(r.key("database"), r.text("database", "sqlite:///keywatch.db"), base_dir),
        listen=r.value("listen", _listen, "127.0.0.1:9477"),
        api_token=r.secret("api_token"),
        providers=_providers(r),
        tokens=tuple(_policy(p) for p in r.sections("tokens", "tokens")),
        rules=_rules(r.section("rules", "rules")),
        notify=_notify(r.section("notify", "notify")),
        response=_response(r.section("response", "response")),
        leak_reports=_leak_reports(r.section("leak_reports", "leak_reports", secrets=("hmac_secret",))),
        retention=_retention(r.section("retention", "retention")),
        source=source,
    )


# --- sections -------------------------------------------------------------------------------------


def _providers(root: _Reader) -> tuple[ProviderSettings, ...]:
    readers = root.sections("providers", "providers", secrets=("admin_token",))
    if not readers:
        raise root.error("providers", "at least one provider is required")
    providers: list[ProviderSettings] = []
    for r in readers:
        p = _provider(r)
        if any(p.name == other.name for other in providers):
            raise r.error("name", f"duplicate provider name '{p.name}'")
        providers.append(p)
    return tuple(providers)


def _provider(r: _Reader) -> ProviderSettings:
    r.require("name", "kind", "base_url")
    name = r.text("name", "")
    if not _PROVIDER_NAME.fullmatch(name):
        raise r.error("name", f"invalid provider name '{name}' (use a-z, 0-9, '_' and '-')")
    kind = cast(ProviderKind, r.choice("kind", _KINDS, ""))
    user_id = r.integer("user_id", None, lo=1)
    project_id = r.text("project_id", None)
    if kind == "newapi" and user_id is None:
        raise r.error("user_id", "required for kind newapi (the New-Api-User header)")
    if kind == "openai" and not project_id:
        raise r.error("project_id", "required for kind openai")
    return ProviderSettings(
        name=name,
        kind=kind,
        base_url=r.value("base_url", _http_url, ""),
        admin_token=r.secret("admin_token", required=True),
        poll_interval=r.duration("poll_interval", 60.0, most=_DAY),
        timeout=r.duration("timeout", 10.0, most=600.0),
        poll_timeout=r.duration("poll_timeout", None, most=_DAY),
        max_response_mb=r.integer("max_response_mb", 64, lo=1, hi=4096),
        max_pages=r.integer("max_pages", 20_000, lo=1, hi=10_000_000),
        user_id=user_id,
        project_id=project_id,
        keys=r.secret_map("keys"),
        concurrency=r.integer("concurrency", 32, lo=1, hi=512),
        retries=r.integer("retries", 3, lo=0, hi=10),
        timezone=r.value("timezone", _timezone, "UTC"),
        quota_per_unit=r.number("quota_per_unit", 500_000.0, gt=0),
        reveal_keys=r.boolean("reveal_keys", False),
        action=cast(_Action | None, r.choice("action", _ACTIONS, None)),
    )


def _policy(r: _Reader) -> TokenPolicy:
    r.require("match")
    budget = r.section("budget", "tokens.budget")
    business_hours = r.text("business_hours", None)
    if business_hours is not None:
        try:
            parse_business_hours(business_hours)
        except ValueError as e:
            raise r.error("business_hours", str(e)) from None
    return TokenPolicy(
        match=r.value("match", _nonempty, ""),
        budget=Budget(
            daily_usd=budget.number("daily_usd", None, ge=0),
            monthly_usd=budget.number("monthly_usd", None, ge=0),
        ),
        protected=r.boolean("protected", False),
        business_hours=business_hours,
    )


def _rules(r: _Reader) -> Rules:
    d = Rules()
    budget, anomaly, leak = (r.section(name, f"rules.{name}") for name in ("budget", "anomaly", "leak"))
    thresholds = budget.values("thresholds", lambda k, v: _number(k, v, gt=0, le=10), d.budget.thresholds)
    if not thresholds:
        raise budget.error("thresholds", "give at least one threshold (or set enabled: false)")
    rotation = r.section("rotation", "rules.rotation")
    return Rules(
        budget=BudgetRule(thresholds=tuple(sorted(set(thresholds))), enabled=budget.boolean("enabled", True)),
        forecast=ForecastRule(enabled=r.section("forecast", "rules.forecast").boolean("enabled", True)),
        anomaly=AnomalyRule(
            enabled=anomaly.boolean("enabled", d.anomaly.enabled),
            sensitivity=anomaly.number("sensitivity", d.anomaly.sensitivity, gt=0),
            min_impact_usd=anomaly.number("min_impact_usd", d.anomaly.min_impact_usd, ge=0),
            min_impact_pct=anomaly.number("min_impact_pct", d.anomaly.min_impact_pct, ge=0),
            min_requests=anomaly.integer("min_requests", d.anomaly.min_requests, lo=0),
            for_polls=anomaly.integer("for", d.anomaly.for_polls, lo=1),
            keep_firing_for=anomaly.duration("keep_firing_for", d.anomaly.keep_firing_for, positive=False),
        ),
        leak=LeakRule(
            enabled=leak.boolean("enabled", d.leak.enabled), for_polls=leak.integer("for", 1, lo=1)
        ),
        expiry_warn_before=r.section("expiry", "rules.expiry").duration(
            "warn_before", d.expiry_warn_before, positive=False
        ),
        unused_after=r.section("unused", "rules.unused").duration("after", d.unused_after),
        rotation_prod=rotation.duration("prod", d.rotation_prod),
        rotation_default=rotation.duration("default", d.rotation_default),
        provider_down_after=r.section("provider_down", "rules.provider_down").integer(
            "after", d.provider_down_after, lo=1
        ),
    )


def _notify(r: _Reader) -> Notify:
    d = Notify()
    targets = tuple(t for t in r.values("urls", lambda k, v: _target(r, k, v), ()) if t is not None)
    apprise_config = r.file_path("apprise_config")
    routes_reader = r.section("routes", _SEVERITIES)
    routes = dict(d.routes)
    for severity in _SEVERITIES:
        tags = routes_reader.values(severity, _tag, None)
        if tags is not None:
            routes[severity] = tuple(dict.fromkeys(tags))
    # Tags of the targets in an apprise_config file come from Apprise's own parser (TEXT and YAML). A file
    # that includes other configs has tags we cannot know here: then the route check is skipped.
    file_tags = (
        [] if apprise_config is None else _apprise_config_tags(r.key("apprise_config"), apprise_config)
    )
    tag_sets = [frozenset(t.tags) for t in targets] + (file_tags or [])
    if file_tags is not None and tag_sets:  # no targets at all: alerts are only logged, nothing to check
        _check_routes(routes_reader, routes, tag_sets)
    return Notify(
        urls=targets,
        apprise_config=apprise_config,
        routes=routes,
        group_by=r.values("group_by", _nonempty, d.group_by),
        group_wait=r.duration("group_wait", d.group_wait, positive=False),
        group_interval=r.duration("group_interval", d.group_interval),
        repeat_interval=r.duration("repeat_interval", d.repeat_interval),
        send_resolved=r.boolean("send_resolved", d.send_resolved),
        grafana_url=r.value("grafana_url", lambda k, v: _http_url(k, v) if v != "" else "", ""),
    )


def _target(notify: _Reader, key: str, item: object) -> NotifyTarget | None:
    """A `urls` entry: a bare Apprise URL or {url, tags}. An empty URL (`${CHAT_URL:-}`) is no target."""
    tags: tuple[str, ...]
    if isinstance(item, str):
        url, tags = str(item), ()
    else:
        t = notify.child(item, key, "notify.urls")
        t.require("url")
        url, tags, key = t.text("url", ""), t.values("tags", _tag, ()), t.key("url")
    if not url.strip():
        return None
    _check_apprise_url(key, url)
    return NotifyTarget(url=Secret(url), tags=tuple(dict.fromkeys(tags)))


def _check_routes(
    routes_reader: _Reader, routes: dict[str, tuple[str, ...]], targets: list[frozenset[str]]
) -> None:
    """Every routed tag reaches a target: Apprise's `all` tag matches any target, a target tagged
    `always` gets everything. Otherwise notify() would find no target, which DESIGN makes a config error."""
    for severity, tags in routes.items():
        for tag in tags:
            if tag != "all" and not any(tag in t or "always" in t for t in targets):
                hint = (
                    ""
                    if routes_reader.get(severity) is not None
                    else " (a default route: set it, [] to log only)"
                )
                raise routes_reader.error(severity, f"tag '{tag}' matches no notify target{hint}")


def _response(r: _Reader) -> Response:
    return Response(
        auto_revoke=r.boolean("auto_revoke", False),
        dry_run=r.boolean("dry_run", False),
        action=cast(_Action, r.choice("action", _ACTIONS, "disable")),
        max_per_hour=r.integer("max_per_hour", 3, lo=0),
        protect=r.values("protect", _nonempty, ()),
    )


def _leak_reports(r: _Reader) -> LeakReports:
    return LeakReports(
        hmac_secret=r.secret("hmac_secret"), github_public_keys=r.file_path("github_public_keys")
    )


def _retention(r: _Reader) -> Retention:
    d = Retention()
    return Retention(raw=r.duration("raw", d.raw), hourly=r.duration("hourly", d.hourly))


# --- values: each converter takes (key path, raw YAML value) and returns the typed value ----------------
# Values of non-secret keys may be quoted in messages; values of secret keys and notify URLs never are.


def _text(key: str, v: object) -> str:
    if not isinstance(v, str):
        quote = " (quote it)" if isinstance(v, int | float) else ""
        raise ConfigError(key, f"expected a string, got {_type_name(v)}{quote}")
    return str(v)


def _nonempty(key: str, v: object) -> str:
    text = _text(key, v)
    if not text.strip():
        raise ConfigError(key, "must not be empty")
    return text


def _int(key: str, v: object, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, _Interpolated) and re.fullmatch(r"\s*[-+]?\d+\s*", v):
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(key, f"expected an integer, got {_type_name(v)}")
    if lo is not None and hi is not None and not lo <= v <= hi:
        raise ConfigError(key, f"must be between {lo} and {hi}, got {v}")
    if lo is not None and v < lo:
        raise ConfigError(key, f"must be at least {lo}, got {v}")
    if hi is not None and v > hi:
        raise ConfigError(key, f"must be at most {hi}, got {v}")
    return v


def _number(
    key: str, v: object, *, gt: float | None = None, ge: float | None = None, le: float | None = None
) -> float:
    if isinstance(v, _Interpolated):
        with contextlib.suppress(ValueError):
            v = float(v)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(key, f"expected a number, got {_type_name(v)}")
    if not math.isfinite(v):
        raise ConfigError(key, f"must be a finite number, got {v}")
    if gt is not None and v <= gt:
        raise ConfigError(key, f"must be greater than {gt:g}, got {v:g}")
    if ge is not None and v < ge:
        raise ConfigError(key, f"must be at least {ge:g}, got {v:g}")
    if le is not None and v > le:
        raise ConfigError(key, f"must be at most {le:g}, got {v:g}")
    return float(v)


def _bool(key: str, v: object) -> bool:
    if isinstance(v, _Interpolated) and v.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[v.strip().lower()]
    if not isinstance(v, bool):
        raise ConfigError(key, f"expected true or false, got {_type_name(v)}")
    return v


def _duration(key: str, v: object, positive: bool = True, most: float = MAX_DURATION_SECONDS) -> float:
    if isinstance(v, str):
        try:
            seconds = parse_duration(v)
        except ValueError as e:
            raise ConfigError(key, str(e)) from None
    elif isinstance(v, int | float) and not isinstance(v, bool):
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(key, f"invalid duration '{v}' (use e.g. 30s, 5m, 1h, 14d)")
        seconds = float(v)
    else:
        raise ConfigError(key, f"expected a duration like 30s or 5m, got {_type_name(v)}")
    if positive and seconds <= 0:
        raise ConfigError(key, "must be longer than 0s")
    if seconds > most:
        raise ConfigError(key, f"must be at most {format_duration(most)}")
    return seconds


def _choice(key: str, v: object, options: tuple[str, ...]) -> str:
    text = _text(key, v)
    if text not in options:
        raise ConfigError(key, f"must be one of {', '.join(options)}; got '{text}'")
    return text


def _tag(key: str, v: object) -> str:
    tag = _text(key, v).strip().lower()
    if not _TAG.fullmatch(tag):
        raise ConfigError(key, f"invalid tag '{tag}' (use letters, digits, '_' and '-')")
    return tag


def _http_url(key: str, v: object) -> str:
    url = _text(key, v).strip()
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
    except ValueError:  # a bad port or IPv6 literal
        ok = False
    if not ok:  # the URL is not quoted: it may carry credentials
        raise ConfigError(key, "must be an http(s) URL like https://host[:port][/path]")
    if "@" in parts.netloc:  # settings keep URLs as plain strings, which are printed and logged
        raise ConfigError(key, "must not contain a user or password (put credentials in secret keys)")
    return url.rstrip("/")


def _timezone(key: str, v: object) -> str:
    name = _text(key, v)
    if not _zone_exists(name):
        raise ConfigError(key, f"unknown time zone '{name}' (use an IANA name like Europe/Berlin)")
    return name


def _listen(key: str, v: object) -> str:
    text = _text(key, v).strip()
    m = _LISTEN.fullmatch(text)
    if m is None:
        raise ConfigError(key, f"expected HOST:PORT like 127.0.0.1:9477, got '{text}'")
    if not 1 <= int(m[2]) <= 65535:
        raise ConfigError(key, f"port must be between 1 and 65535, got {m[2]}")
    return text


def _database(key: str, url: str, base_dir: Path) -> str:
    """A SQLAlchemy URL; a relative SQLite file (`sqlite:///keywatch.db`) moves next to the config."""
    if "://" not in url:  # the URL is not quoted: it may carry a password
        raise ConfigError(key, "expected a SQLAlchemy URL like sqlite:///keywatch.db")
    scheme = url.split("://", 1)[0].lower()
    if scheme.startswith(("postgresql", "postgres")) and not _installed("psycopg"):
        raise ConfigError(key, "PostgreSQL needs its driver: pip install 'keywatch[postgres]' (psycopg 3)")
    m = _SQLITE.fullmatch(url)
    if m is None or m[2] == "" or m[2].startswith(("/", ":memory:", "file:")):
        return url
    return f"{m[1]}:///{base_dir / m[2]}"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _zone_exists(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _type_name(v: object) -> str:
    for kind, name in _TYPE_NAMES:
        if isinstance(v, kind):
            return name
    return "null" if v is None else f"a {type(v).__name__}"


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _unknown_key(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"unknown key (did you mean '{close[0]}'?)" if close else "unknown key"


_BOOL_WORDS: Final = dict.fromkeys(("true", "yes", "on", "1"), True) | dict.fromkeys(
    ("false", "no", "off", "0"), False
)
_TYPE_NAMES: Final[tuple[tuple[type, str], ...]] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "a mapping"),
    (datetime, "a timestamp"),
    (date, "a date"),
)


# --- the reader -----------------------------------------------------------------------------------------


class _Reader:
    """One mapping of the document and its key path. It rejects unknown keys up front (so a typo is
    reported as such, not as the missing key it causes); its typed reads fail as ConfigErrors naming
    the key. A missing key and an explicit null both mean "not set"."""

    def __init__(
        self,
        data: object,
        path: str,
        keys: str | tuple[str, ...],
        base_dir: Path,
        secrets: tuple[str, ...] = (),
    ) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path or "(root)", f"expected a mapping, got {_type_name(data)}")
        self.path, self.base_dir = path, base_dir
        self._known = {*(_KEYS[keys] if isinstance(keys, str) else keys), *(f"{s}_file" for s in secrets)}
        for k in data:
            if not isinstance(k, str):
                raise ConfigError(self.key(str(k)), f"keys must be strings, got {_type_name(k)}")
            if k not in self._known:
                raise ConfigError(self.key(k), _unknown_key(k, self._known))
        self._data: dict[str, object] = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, reason: str) -> ConfigError:
        return ConfigError(self.key(name), reason)

    def get(self, name: str) -> object:
        assert name in self._known, f"{name} is missing from _KEYS"
        return self._data.get(name)

    def require(self, *names: str) -> None:
        for name in names:
            if self.get(name) is None:
                raise self.error(name, "required")

    def value(self, name: str, convert: Callable[[str, object], _T], default: _D) -> _T | _D:
        raw = self.get(name)
        return default if raw is None else convert(self.key(name), raw)

    def values(self, name: str, convert: Callable[[str, object], _T], default: _D) -> tuple[_T, ...] | _D:
        raw = self.get(name)
        if raw is None:
            return default
        if not isinstance(raw, list):
            raise self.error(name, f"expected a list, got {_type_name(raw)}")
        return tuple(convert(f"{self.key(name)}[{i}]", item) for i, item in enumerate(raw))

    def text(self, name: str, default: _D) -> str | _D:
        return self.value(name, _text, default)

    def integer(self, name: str, default: _D, *, lo: int | None = None, hi: int | None = None) -> int | _D:
        return self.value(name, lambda k, v: _int(k, v, lo, hi), default)

    def number(
        self,
        name: str,
        default: _D,
        *,
        gt: float | None = None,
        ge: float | None = None,
        le: float | None = None,
    ) -> float | _D:
        return self.value(name, lambda k, v: _number(k, v, gt=gt, ge=ge, le=le), default)

    def boolean(self, name: str, default: bool) -> bool:
        return self.value(name, _bool, default)

    def duration(
        self, name: str, default: _D, *, positive: bool = True, most: float = MAX_DURATION_SECONDS
    ) -> float | _D:
        return self.value(name, lambda k, v: _duration(k, v, positive, most), default)

    def choice(self, name: str, options: tuple[str, ...], default: _D) -> str | _D:
        return self.value(name, lambda k, v: _choice(k, v, options), default)

    def child(
        self, data: object, path: str, keys: str | tuple[str, ...], secrets: tuple[str, ...] = ()
    ) -> _Reader:
        return _Reader(data, path, keys, self.base_dir, secrets)

    def section(self, name: str, keys: str | tuple[str, ...], secrets: tuple[str, ...] = ()) -> _Reader:
        raw = self.get(name)
        return self.child({} if raw is None else raw, self.key(name), keys, secrets)

    def sections(self, name: str, keys: str, secrets: tuple[str, ...] = ()) -> list[_Reader]:
        return list(self.values(name, lambda k, v: self.child(v, k, keys, secrets), ()))

    def resolve(self, text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def file_path(self, name: str) -> str | None:
        """A file that must exist and be readable, resolved against the config's folder; "" is unset."""
        text = self.text(name, "")
        if not text:
            return None
        path = self.resolve(text)
        try:
            with path.open("rb"):
                pass
        except OSError as e:
            raise self.error(name, f"cannot read {path}: {e.strerror or e}") from None
        return str(path)

    def secret(self, name: str, *, required: bool = False) -> Secret:
        """`name: value` or `name_file: path` (the file's text without its trailing newline)."""
        inline, file = self.get(name), self.get(f"{name}_file")
        if inline is not None and file is not None:
            raise self.error(name, f"give either {name} or {name}_file, not both")
        if file is not None:
            value = self._read_secret(f"{name}_file")
        elif inline is not None:
            if not isinstance(inline, str):  # never the value itself
                raise self.error(name, f"expected a string, got {_type_name(inline)} (quote it)")
            value = str(inline)
        else:
            value = ""
        if required and not value:
            raise self.error(
                name, f"required (or {name}_file)" if inline is None and file is None else "is empty"
            )
        return Secret(value)

    def _read_secret(self, name: str) -> str:
        path = self.resolve(self.value(name, _nonempty, ""))
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as e:
            raise self.error(name, f"cannot read {path}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise self.error(name, f"cannot read {path}: not UTF-8 text") from None

    def secret_map(self, name: str) -> dict[str, Secret]:
        """`keys:` — token name -> key, where `<token name>_file: path` reads the key from a file."""
        raw = self.get(name)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.error(name, f"expected a mapping of token name to key, got {_type_name(raw)}")
        names = tuple(dict.fromkeys(k.removesuffix("_file") or k for k in raw if isinstance(k, str)))
        m = self.child(raw, self.key(name), names, secrets=names)
        return {token: m.secret(token, required=True) for token in names}


# --- interpolation ----------------------------------------------------------------------------------------


class _Interpolated(str):
    """A string that took (part of) its value from the environment: typed reads may take it as a number
    or a boolean, since `${PORT}` cannot be written unquoted in YAML."""

    __slots__ = ()


_REFERENCE = re.compile(r"\$\$|\$\{(?P<body>[^}]*)(?P<end>\}?)")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


class _Expander:
    """Replaces `${VAR}` and `${VAR:-default}` (default when unset or empty) in every string value, and
    `$$` with `$`. Caps the number of values visited: aliases can make a tiny file a huge tree."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._left = _MAX_VALUES

    def expand(self, node: object, path: str) -> object:
        self._left -= 1
        if self._left < 0:
            raise ConfigError("(root)", f"the document holds more than {_MAX_VALUES} values")
        if isinstance(node, str):
            return self._text(node, path) if "$" in node else node
        if isinstance(node, list):
            return [self.expand(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, dict):
            return {k: self.expand(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        return node

    def _text(self, text: str, key: str) -> str:
        used_env = False

        def replace(m: re.Match[str]) -> str:
            nonlocal used_env
            if m[0] == "$$":
                return "$"
            variable = _VARIABLE.fullmatch(m["body"])
            if not m["end"]:  # the text is not quoted: it may be a secret
                raise ConfigError(key, "unterminated '${' (write '$$' for a literal '$')")
            if variable is None:
                raise ConfigError(
                    key, "invalid '${...}': use ${VAR} or ${VAR:-default} ('$$' is a literal '$')"
                )
            name, default = variable.groups()
            value = self._env.get(name)
            if value is None and default is None:
                raise ConfigError(key, f"environment variable {name} is not set")
            used_env = True
            return default if default is not None and not value else cast(str, value)

        result = _REFERENCE.sub(replace, text)
        return _Interpolated(result) if used_env else result


# --- YAML -------------------------------------------------------------------------------------------------


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int) -> None:
        self.key, self.line = key, line


class _Loader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice is an error instead of the last one silently winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    raise _DuplicateKey(str(key)[:80], key_node.start_mark.line + 1)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text: str) -> object:
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader
    except _DuplicateKey as e:
        raise ConfigError("(root)", f"duplicate key '{e.key}' at line {e.line}") from None
    except yaml.MarkedYAMLError as e:  # not str(e): its snippet of the file may show a secret
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            "(root)", f"YAML syntax error{where}: {e.problem or e.context or 'invalid YAML'}"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError("(root)", f"YAML syntax error: {str(e).splitlines()[0]}") from None
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise ConfigError("(root)", "the document nests too deeply") from None


# --- Apprise (validation only; sending lives in alerts.notification.notify) ---------------------------------------------


@contextlib.contextmanager
def _apprise() -> Iterator[ModuleType]:
    """Apprise, quietly: its log lines would echo (masked) URLs to stderr, and its plugin imports raise
    DeprecationWarnings on Python 3.11+ (imghdr), which our test settings turn into errors."""
    log = logging.getLogger("apprise")
    disabled, log.disabled = log.disabled, True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import apprise

            yield apprise
    finally:
        log.disabled = disabled


def _check_apprise_url(key: str, url: str) -> None:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):  # only the scheme is ever quoted
        raise ConfigError(key, "not an Apprise URL (expected scheme://...)")
    with _apprise() as apprise:
        usable = apprise.Apprise.instantiate(url) is not None
    if not usable:
        raise ConfigError(key, f"Apprise cannot use this {scheme}:// URL (unknown scheme or incomplete URL)")


def _apprise_config_tags(key: str, path: str) -> list[frozenset[str]] | None:
    """The tags of each target in an Apprise TEXT or YAML config; None if it includes other configs."""
    try:
        content = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            key, f"cannot read {path}: {getattr(e, 'strerror', None) or 'not UTF-8 text'}"
        ) from None
    with _apprise() as apprise:
        services, includes = apprise.ConfigBase.config_parse(content)
    if includes:
        return None
    if not services:
        raise ConfigError(
            key, f"no usable notification URLs in {path} (is it an Apprise TEXT or YAML config?)"
        )
    return [frozenset(str(tag) for tag in getattr(service, "tags", ())) for service in services]


# --- business hours -------------------------------------------------------------------------------------

_DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)")


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """`mon-fri 08:00-20:00 Europe/Berlin`: weekdays (0 = Monday) and [start, end) in minutes after local
    midnight (end 1440 = 24:00) in an IANA time zone."""

    days: frozenset[int]
    start: int
    end: int
    timezone: str

    def contains(self, ts: float) -> bool:
        """Whether the Unix time `ts` falls within these hours."""
        local = datetime.fromtimestamp(ts, ZoneInfo(self.timezone))
        return local.weekday() in self.days and self.start <= local.hour * 60 + local.minute < self.end


def parse_business_hours(text: str) -> BusinessHours:
    """Parse `"<days> HH:MM-HH:MM <IANA zone>"`; days like `mon-fri`, `sat-sun`, `mon,wed,fri`, `mon-wed,fri`.
    Raises ValueError naming what is wrong."""

    def bad(detail: str) -> ValueError:
        return ValueError(
            f"invalid business hours '{text}': {detail} (write e.g. 'mon-fri 08:00-20:00 Europe/Berlin')"
        )

    parts = text.split()
    if len(parts) != 3:
        raise bad("expected '<days> HH:MM-HH:MM <time zone>'")
    days_text, hours, zone = parts
    days: set[int] = set()
    for item in days_text.lower().split(","):
        first, dash, last = item.partition("-")
        last = last if dash else first
        if first not in _DAYS or last not in _DAYS:
            raise bad(f"unknown day in '{days_text}'")
        a, b = _DAYS.index(first), _DAYS.index(last)
        days.update(range(a, b + 1) if a <= b else (*range(a, 7), *range(b + 1)))  # fri-mon wraps
    m = _HOURS.fullmatch(hours)
    if m is None:
        raise bad(f"bad time range '{hours}'")
    start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    if not start < end <= 1440:
        raise bad(f"'{hours}' must start before it ends, within one day")
    if not _zone_exists(zone):
        raise bad(f"unknown time zone '{zone}'")
    return BusinessHours(frozenset(days), start, end, zone)


# --- summary ----------------------------------------------------------------------------------------------


def summarize(settings: Settings) -> list[str]:
    """A few lines for `keywatch check-config`. No secrets, and no notification URLs (they carry
    credentials): only their schemes."""
    s, n, r = settings, settings.notify, settings.response
    lines = [f"database: {_redacted(s.database)}"]
    lines.append(
        f"listen: {s.listen} (/api/v1 {'needs the API token' if s.api_token else 'is open: no api_token'})"
    )
    lines.append(f"providers: {len(s.providers)}")
    for p in s.providers:
        keys = f", {_count(len(p.keys), 'key')}" if p.keys else ""
        lines.append(
            f"  {p.name}: {p.kind} {_redacted(p.base_url)} every {format_duration(p.poll_interval)}{keys}"
        )
    lines.append(f"token policies: {len(s.tokens)}")
    if n.urls or n.apprise_config:
        schemes = ", ".join(dict.fromkeys(f"{t.url.reveal().split('://', 1)[0]}://…" for t in n.urls))
        line = f"notify: {_count(len(n.urls), 'target')}" + (f" ({schemes})" if schemes else "")
        lines.append(line + (f", apprise_config {n.apprise_config}" if n.apprise_config else ""))
    else:
        lines.append("notify: no targets (alerts are only logged)")
    mode = f"on ({r.action}, at most {r.max_per_hour}/hour)"
    if not r.auto_revoke or r.dry_run:
        mode = "off" if not r.auto_revoke else f"dry run (would {r.action})"
    lines.append(f"response: auto-revoke {mode}, {_count(len(r.protect), 'protected pattern')}")
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _redacted(url: str) -> str:
    """The URL without user, password, query or fragment."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
