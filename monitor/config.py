"""Load and validate the YAML config (docs/config.md) into frozen, typed `Settings`.

Every problem is one `ConfigError` that names the key path (`providers[0].base_url`) and the reason on
one line, and never quotes a secret. Validation is complete before anything is returned, so a reload
can swap a new `Settings` in whole or keep the old one.

The keys themselves are described once, in monitor.settings; pydantic validates them
(monitor.config_model) and `json_schema()` is their JSON Schema. This module reads the file: YAML,
`${VAR}` interpolation, and the summary `keywatch check-config` prints. pydantic is imported only when
a config is read.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import yaml

from monitor.config_fields import type_name, zone_exists
from monitor.durations import format_duration
from monitor.settings import Settings

__all__ = [
    "BusinessHours",
    "ConfigError",
    "Interpolated",
    "json_schema",
    "load_settings",
    "parse_business_hours",
    "parse_settings",
    "summarize",
]

_MAX_VALUES = 100_000  # YAML aliases can make a tiny file expand into a huge tree


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
    from pydantic import ValidationError

    from monitor.config_errors import describe
    from monitor.config_model import adapter

    if data is None:
        raise ConfigError("(root)", "the config is empty")
    if not isinstance(data, dict):
        raise ConfigError("(root)", f"expected a mapping at the top level, got {type_name(data)}")
    try:
        data = _Expander(env).expand(data, "")
    except RecursionError:
        raise ConfigError("(root)", "the document nests too deeply") from None
    try:
        settings = adapter().validate_python(data, context={"base_dir": base_dir})
    except ValidationError as e:  # its inputs may be secrets: raised below, so it is not the __context__
        key, reason = describe(e)
    else:
        return dataclasses.replace(settings, source=source)
    raise ConfigError(key, reason)


def json_schema() -> dict[str, object]:
    """The JSON Schema (draft 2020-12) of the config file, every key described (docs/keywatch.schema.json)."""
    from monitor.config_schema import json_schema as build

    return build()


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


# --- interpolation ----------------------------------------------------------------------------------------


class Interpolated(str):
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
            for k in node:
                if not isinstance(k, str):
                    raise ConfigError(
                        f"{path}.{k}" if path else str(k), f"keys must be strings, got {type_name(k)}"
                    )
            return {k: self.expand(v, f"{path}.{k}" if path else k) for k, v in node.items()}
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
        return Interpolated(result) if used_env else result


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
    # Each reason is raised outside its `except`: the YAML error (its snippet of the file may show a
    # secret) must not ride along as the ConfigError's __context__.
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader
    except _DuplicateKey as e:
        reason = f"duplicate key '{e.key}' at line {e.line}"
    except yaml.MarkedYAMLError as e:  # not str(e): its snippet of the file may show a secret
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        reason = f"YAML syntax error{where}: {e.problem or e.context or 'invalid YAML'}"
    except yaml.YAMLError as e:
        reason = f"YAML syntax error: {str(e).splitlines()[0]}"
    except RecursionError:  # PyYAML composes nested nodes recursively
        reason = "the document nests too deeply"
    raise ConfigError("(root)", reason)


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
    if not zone_exists(zone):
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
