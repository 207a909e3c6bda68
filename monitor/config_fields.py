"""What a config key is beyond its Python type: its description, bounds and the check its YAML value
must pass. `monitor.settings` declares every field once with these; pydantic validates YAML by them
(monitor.config_model) and the JSON Schema is generated from them (monitor.config_schema).

Nothing here imports pydantic: settings are imported by every process (`keywatch --help` included),
pydantic only when a config file is read. The hooks below are pydantic's documented
`__get_pydantic_core_schema__` / `__get_pydantic_json_schema__` protocol, resolved lazily.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import urlsplit

from monitor.durations import MAX_DURATION_SECONDS, format_duration, parse_duration

if TYPE_CHECKING:
    from monitor.secret import Secret

__all__ = [
    "DURATION_PATTERN",
    "INTERPOLATED_PATTERN",
    "NOT_A_KEY",
    "AppriseUrl",
    "Bounds",
    "BusinessHoursText",
    "Check",
    "DatabaseUrl",
    "Duration",
    "HttpUrl",
    "KeyProblem",
    "Listen",
    "Matches",
    "NonEmpty",
    "ReadableFile",
    "Routes",
    "Section",
    "SortedSet",
    "Tag",
    "TimeZone",
    "Unique",
    "key",
    "not_text",
    "type_name",
    "unknown_key",
]

NOT_A_KEY: Final[dict[str, Any]] = {"yaml": ()}  # a field the loader sets itself (Settings.source)
DURATION_PATTERN: Final = r"^\s*(\d+(\.\d+)?|(\d+(\.\d+)?(ms|[wdhms]))+)\s*$"
INTERPOLATED_PATTERN: Final = r"\$\{"  # `${VAR}` in a value an editor sees before keywatch expands it


def key(
    description: str, *, yaml: tuple[str, str] | None = None, section: str = "", **field: Any
) -> dict[str, Any]:
    """A field's metadata: its description, plus any `pydantic.Field` argument (`alias`, `ge`, `le`, ...),
    which pydantic reads from dataclass field metadata. `yaml=("expiry", "warn_before")` reads the field
    from a nested mapping (`rules.expiry.warn_before`); `section` describes that mapping."""
    meta: dict[str, Any] = {"description": description, **field}
    if yaml is not None:
        meta["yaml"] = yaml
    if section:
        meta["section"] = section
    return meta


class Section:
    """Base of the settings dataclasses: a YAML mapping that pydantic validates (unknown keys refused)."""

    __slots__ = ()
    # Strict: YAML says what it means ('50' is a string). Infinities are no budget. The dataclass itself
    # is made lax again by the hook (a mapping builds it), see monitor.config_model.
    __pydantic_config__: ClassVar[dict[str, Any]] = {
        "extra": "forbid",
        "frozen": True,
        "strict": True,
        "allow_inf_nan": False,
    }

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from monitor.config_model import section_core_schema

        return section_core_schema(cls, source, handler)

    @classmethod
    def __get_pydantic_json_schema__(cls, core: Any, handler: Any) -> Any:
        from monitor.config_schema import section_json_schema

        return section_json_schema(cls, core, handler)


class KeyProblem(ValueError):
    """A problem at `loc`, a key path relative to the mapping being read (`("routes", "info")`)."""

    def __init__(self, loc: tuple[str | int, ...], reason: str) -> None:
        super().__init__(reason)
        self.loc, self.reason = loc, reason


# --- checks: Annotated metadata that checks a value after its type ------------------------------------------
# A check raises ValueError with the reason that follows the key path in `config error: <key>: <reason>`.
# Values of secret keys and notify URLs are never quoted in a reason.


class Check:
    """Runs `check` on the value once it has its annotated type (`plain`: on the raw YAML value)."""

    plain: ClassVar[bool] = False

    def check(self, value: Any, base_dir: Path | None) -> Any:
        raise NotImplementedError

    def input_schema(self) -> dict[str, Any]:
        """What the YAML may hold, as JSON Schema, merged over the type's own."""
        return {}

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from monitor.config_model import check_core_schema

        return check_core_schema(self, source, handler)

    def __get_pydantic_json_schema__(self, core: Any, handler: Any) -> Any:
        if self.plain:  # the raw value: its input schema is all there is
            return self.input_schema()
        return {**handler(core), **self.input_schema()}


class NonEmpty(Check):
    def check(self, value: str, base_dir: Path | None) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    def input_schema(self) -> dict[str, Any]:
        return {"pattern": r"\S"}


class Matches(Check):
    """The whole value matches `pattern`; `message` names the value with `{}`."""

    def __init__(self, pattern: str, message: str) -> None:
        self.pattern, self.message = re.compile(pattern), message

    def check(self, value: str, base_dir: Path | None) -> str:
        if not self.pattern.fullmatch(value):
            raise ValueError(self.message.format(value))
        return value

    def input_schema(self) -> dict[str, Any]:
        return {"pattern": f"^{self.pattern.pattern}$"}


class HttpUrl(Check):
    """An http(s) URL without credentials, kept without its trailing slash; "" too when `optional`."""

    def __init__(self, *, optional: bool = False) -> None:
        self.optional = optional

    def check(self, value: str, base_dir: Path | None) -> str:
        if self.optional and value == "":
            return value
        url = value.strip()
        try:
            parts = urlsplit(url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
        except ValueError:  # a bad port or IPv6 literal
            ok = False
        if not ok:  # the URL is not quoted: it may carry credentials
            raise ValueError("must be an http(s) URL like https://host[:port][/path]")
        if "@" in parts.netloc:  # settings keep URLs as plain strings, which are printed and logged
            raise ValueError("must not contain a user or password (put credentials in secret keys)")
        return url.rstrip("/")

    def input_schema(self) -> dict[str, Any]:
        return {"pattern": "^(https?://.+)?$" if self.optional else "^https?://."}


_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")


class Listen(Check):
    def check(self, value: str, base_dir: Path | None) -> str:
        text = value.strip()
        m = _LISTEN.fullmatch(text)
        if m is None:
            raise ValueError(f"expected HOST:PORT like 127.0.0.1:9477, got '{text}'")
        if not 1 <= int(m[2]) <= 65535:
            raise ValueError(f"port must be between 1 and 65535, got {m[2]}")
        return text

    def input_schema(self) -> dict[str, Any]:
        return {"pattern": rf"^\s*{_LISTEN.pattern}\s*$"}


class TimeZone(Check):
    def check(self, value: str, base_dir: Path | None) -> str:
        if not zone_exists(value):
            raise ValueError(f"unknown time zone '{value}' (use an IANA name like Europe/Berlin)")
        return value


_TAG = re.compile(r"[a-z0-9][a-z0-9_-]*")  # what Apprise accepts as a tag (it lowercases them)


class Tag(Check):
    def check(self, value: str, base_dir: Path | None) -> str:
        tag = value.strip().lower()
        if not _TAG.fullmatch(tag):
            raise ValueError(f"invalid tag '{tag}' (use letters, digits, '_' and '-')")
        return tag

    def input_schema(self) -> dict[str, Any]:
        return {"pattern": r"^\s*[A-Za-z0-9][A-Za-z0-9_-]*\s*$"}


class Duration(Check):
    """Seconds, from `30s`, `5m`, `1h30m`, `14d` or a plain number of seconds."""

    plain = True

    def __init__(self, *, positive: bool = True, most: float = MAX_DURATION_SECONDS) -> None:
        self.positive, self.most = positive, most

    def check(self, value: object, base_dir: Path | None) -> float:
        if isinstance(value, str):
            seconds = parse_duration(value)  # its ValueError is the reason
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"invalid duration '{value}' (use e.g. 30s, 5m, 1h, 14d)")
            seconds = float(value)
        else:
            raise ValueError(f"expected a duration like 30s or 5m, got {type_name(value)}")
        if self.positive and seconds <= 0:
            raise ValueError("must be longer than 0s")
        if seconds > self.most:
            raise ValueError(f"must be at most {format_duration(self.most)}")
        return seconds

    def input_schema(self) -> dict[str, Any]:
        number: dict[str, Any] = {"type": "number", "maximum": self.most}
        number["exclusiveMinimum" if self.positive else "minimum"] = 0
        return {"anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, number]}


class BusinessHoursText(Check):
    def check(self, value: str, base_dir: Path | None) -> str:
        from monitor.config import parse_business_hours

        parse_business_hours(value)  # its ValueError is the reason
        return value

    def input_schema(self) -> dict[str, Any]:
        return {"examples": ["mon-fri 08:00-20:00 Europe/Berlin"]}


class ReadableFile(Check):
    """A file that must exist and be readable, resolved against the config's folder; "" is unset (None)."""

    def check(self, value: str, base_dir: Path | None) -> str | None:
        if not value:
            return None
        path = resolve(value, base_dir)
        try:
            with path.open("rb"):
                pass
        except OSError as e:
            raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
        return str(path)


_SQLITE = re.compile(r"(sqlite(?:\+\w+)?):///(.*)", re.DOTALL)


class DatabaseUrl(Check):
    """A SQLAlchemy URL; a relative SQLite file (`sqlite:///keywatch.db`) moves next to the config."""

    def check(self, value: str, base_dir: Path | None) -> str:
        from monitor import config  # tests stand in for the postgres extra through config._installed

        if "://" not in value:  # the URL is not quoted: it may carry a password
            raise ValueError("expected a SQLAlchemy URL like sqlite:///keywatch.db")
        scheme = value.split("://", 1)[0].lower()
        if scheme.startswith(("postgresql", "postgres")) and not config._installed("psycopg"):
            raise ValueError("PostgreSQL needs its driver: pip install 'keywatch[postgres]' (psycopg 3)")
        m = _SQLITE.fullmatch(value)
        if base_dir is None or m is None or m[2] == "" or m[2].startswith(("/", ":memory:", "file:")):
            return value
        return f"{m[1]}:///{base_dir / m[2]}"

    def input_schema(self) -> dict[str, Any]:
        return {"pattern": "://"}


class AppriseUrl(Check):
    """An Apprise URL Apprise can use; blank (an unset `${VAR:-}`) is no target. Only its scheme is quoted."""

    def check(self, value: Secret, base_dir: Path | None) -> Secret:
        from monitor.config_apprise import usable

        url = value.reveal()
        if not url.strip():
            return value
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
            raise ValueError("not an Apprise URL (expected scheme://...)")
        if not usable(url):
            raise ValueError(f"Apprise cannot use this {scheme}:// URL (unknown scheme or incomplete URL)")
        return value


class SortedSet(Check):
    """A list kept sorted and without repeats, refused when empty (`empty` is the reason)."""

    def __init__(self, empty: str) -> None:
        self.empty = empty

    def check(self, value: tuple[float, ...], base_dir: Path | None) -> tuple[float, ...]:
        if not value:
            raise ValueError(self.empty)
        return tuple(sorted(set(value)))

    def input_schema(self) -> dict[str, Any]:
        return {"minItems": 1}


class Unique(Check):
    """A list without repeats, first one kept."""

    def check(self, value: tuple[str, ...], base_dir: Path | None) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))


class Bounds:
    """Bounds on a list item (a field's own bounds go in its metadata)."""

    def __init__(self, *, gt: float | None = None, le: float | None = None) -> None:
        self.bounds = {k: v for k, v in (("gt", gt), ("le", le)) if v is not None}

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        return {**handler(source), **self.bounds}


class Routes:
    """`notify.routes`: severity -> tags. A severity not given keeps its default route."""

    def __init__(self, defaults: dict[str, tuple[str, ...]], descriptions: dict[str, str]) -> None:
        self.defaults, self.descriptions = defaults, descriptions

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from monitor.config_model import routes_core_schema

        return routes_core_schema(self, handler)

    def __get_pydantic_json_schema__(self, core: Any, handler: Any) -> Any:
        schema = handler(core)
        for severity, prop in schema["properties"].items():
            prop.update(description=self.descriptions[severity], default=list(self.defaults[severity]))
        return schema


# --- helpers shared with monitor.config --------------------------------------------------------------------


def resolve(text: str, base_dir: Path | None) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


def zone_exists(name: str) -> bool:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


_TYPE_NAMES: Final[tuple[tuple[type, str], ...]] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (tuple, "a list"),
    (dict, "a mapping"),
)


def unknown_key(name: str, known: Iterable[str]) -> str:
    """The reason for a key the mapping may not hold, with the likeliest one meant."""
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"unknown key (did you mean '{close[0]}'?)" if close else "unknown key"


def not_text(v: object, *, secret: bool = False) -> str:
    """The reason for a value that should be text. YAML reads an unquoted 12345 as a number: a secret
    is always told to quote it, since its value is never shown to tell."""
    quote = " (quote it)" if secret or isinstance(v, int | float) else ""
    return f"expected a string, got {type_name(v)}{quote}"


def type_name(v: object) -> str:
    """What a YAML value is, in words; never the value itself."""
    from datetime import date, datetime

    for kind, name in (*_TYPE_NAMES, (datetime, "a timestamp"), (date, "a date")):
        if isinstance(v, kind):
            return name
    return "null" if v is None else f"a {type(v).__name__}"
