"""The settings dataclasses as pydantic validates them: how a YAML mapping becomes each of them.

pydantic checks the types and bounds declared in monitor.settings. What YAML adds on top is here,
once for every section: `<key>_file` secrets, `${VAR}` values read as numbers and booleans, keys
nested in a sub-mapping (`rules.expiry.warn_before`), keys the loader sets itself (`source`), and a
null meaning "not set". The rules that span keys are in monitor.config_checks. Problems become
pydantic errors, put into words by monitor.config_errors.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, cast

from pydantic import GetCoreSchemaHandler, TypeAdapter
from pydantic_core import PydanticCustomError, core_schema

from monitor.config_checks import CHECKS, SHORTCUTS
from monitor.config_fields import Check, KeyProblem, Routes, Tag, not_text, resolve, type_name, unknown_key
from monitor.secret import Secret
from monitor.settings import Settings

__all__ = [
    "Plan",
    "Problem",
    "adapter",
    "check_core_schema",
    "plan",
    "routes_core_schema",
    "section_core_schema",
]

Problem: Final = "config"  # the pydantic error type of a KeyProblem; its ctx holds reason and loc


@functools.cache
def adapter() -> TypeAdapter[Settings]:
    return TypeAdapter(Settings)


# --- what each section's YAML holds beyond its fields ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a section's YAML keys map onto its dataclass fields."""

    keys: tuple[str, ...]  # every key the mapping may hold, for "did you mean"
    not_keys: frozenset[str]  # fields the loader sets itself
    nested: dict[str, tuple[str, str]]  # field -> (sub-mapping, key in it)
    secrets: dict[str, bool]  # Secret field -> required; `<field>_file` reads it from a file
    secret_maps: tuple[str, ...]  # dict[str, Secret] fields; `<name>_file` inside reads one from a file
    scalars: dict[str, tuple[type, bool]]  # yaml key -> int/float/bool, and whether a list of them


@functools.cache
def plan(cls: type) -> Plan:
    hints = typing.get_type_hints(cls, include_extras=True)
    keys: list[str] = []
    not_keys: set[str] = set()
    nested: dict[str, tuple[str, str]] = {}
    secrets: dict[str, bool] = {}
    secret_maps: list[str] = []
    scalars: dict[str, tuple[type, bool]] = {}
    for f in dataclasses.fields(cast(Any, cls)):
        hint, name = hints[f.name], f.metadata.get("alias", f.name)
        yaml = f.metadata.get("yaml")
        if yaml == ():
            not_keys.add(f.name)
            continue
        if yaml is not None:
            nested[f.name] = yaml
            name = yaml[0]
        if name not in keys:
            keys.append(name)
        if hint is Secret:  # a bare Secret: a notify URL (checked by Apprise) takes no file
            secrets[f.name] = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            keys.append(f"{f.name}_file")
        elif hint == dict[str, Secret]:
            secret_maps.append(f.name)
        elif (scalar := _scalar(hint)) is not None:
            scalars[".".join(yaml) if yaml else name] = scalar
    return Plan(tuple(keys), frozenset(not_keys), nested, secrets, tuple(secret_maps), scalars)


def _scalar(hint: object, many: bool = False) -> tuple[type, bool] | None:
    """int, float or bool when `hint` is one (or one or None), and whether it is a list of them."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:  # a check that reads the raw value (durations) reads text itself
        return None if any(isinstance(m, Check) and m.plain for m in args[1:]) else _scalar(args[0], many)
    if origin is tuple and args and args[-1] is Ellipsis:
        return _scalar(args[0], True)
    if origin is not None and len(args) == 1:  # X | None
        return _scalar(args[0], many)
    return (cast(type, hint), many) if hint in (int, float, bool) else None


# --- core schema: the hooks of monitor.config_fields --------------------------------------------------------


def section_core_schema(cls: type, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    schema = cast(core_schema.DataclassSchema, handler(source))
    schema["strict"] = False  # a mapping builds the dataclass; the config's strictness is for its values
    keys = plan(cls)
    for f in cast(core_schema.DataclassArgsSchema, schema["schema"])["fields"]:
        if f["name"] in keys.nested:
            path: list[str | int] = [*keys.nested[f["name"]]]
            f["validation_alias"] = path
    shortcut, check = SHORTCUTS.get(cls), CHECKS.get(cls)

    def read(
        data: Any, inner: core_schema.ValidatorFunctionWrapHandler, info: core_schema.ValidationInfo
    ) -> Any:
        if shortcut is not None and not isinstance(data, Mapping):
            return shortcut(data)
        if not isinstance(data, Mapping):
            return inner(data)  # pydantic's "expected a mapping"
        data = _prepare(keys, _set(data, keys.keys), _base_dir(info))
        value = inner(data)
        _check_secrets(keys, value)
        return value if check is None else check(value, data)

    def validate(
        data: Any, inner: core_schema.ValidatorFunctionWrapHandler, info: core_schema.ValidationInfo
    ) -> Any:
        try:
            return read(data, inner, info)
        except KeyProblem as e:
            raise PydanticCustomError(Problem, "{reason}", {"reason": e.reason, "loc": e.loc}) from None

    return core_schema.with_info_wrap_validator_function(validate, schema)


def check_core_schema(check: Check, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    def run(value: Any, info: core_schema.ValidationInfo) -> Any:
        return check.check(value, _base_dir(info))

    if check.plain:
        return core_schema.with_info_plain_validator_function(run)
    return core_schema.with_info_after_validator_function(run, handler(source))


def routes_core_schema(routes: Routes, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    tags = handler.generate_schema(list[typing.Annotated[str, Tag()]])
    fields = {severity: core_schema.typed_dict_field(tags, required=False) for severity in routes.defaults}

    def merge(given: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
        return {**routes.defaults, **{k: tuple(dict.fromkeys(v)) for k, v in given.items()}}

    schema = core_schema.typed_dict_schema(fields, extra_behavior="forbid")
    unset = core_schema.no_info_before_validator_function(
        lambda v: _set(v, routes.defaults) if isinstance(v, Mapping) else v, schema
    )
    as_lists = core_schema.plain_serializer_function_ser_schema(lambda r: {k: list(v) for k, v in r.items()})
    return core_schema.no_info_after_validator_function(merge, unset, serialization=as_lists)


def _base_dir(info: core_schema.ValidationInfo) -> Path | None:
    context = info.context
    return cast(Path | None, context.get("base_dir")) if isinstance(context, dict) else None


def _set(data: Mapping[str, Any], known: typing.Container[str]) -> dict[str, Any]:
    """The keys that are set: a missing key and an explicit null both mean "not set" (an unknown key
    stays, to be refused)."""
    return {k: v for k, v in data.items() if v is not None or k not in known}


def _prepare(plan: Plan, data: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """The mapping as the dataclass's fields take it."""
    for name in data:
        if name in plan.not_keys:
            raise KeyProblem((name,), unknown_key(name, plan.keys))
    for section, inner in _sections(plan).items():
        sub = data.get(section)
        if sub is None:
            continue
        if not isinstance(sub, Mapping):
            raise KeyProblem((section,), f"expected a mapping, got {type_name(sub)}")
        data[section] = sub = _set(sub, inner)
        for name in sub:
            if name not in inner:
                raise KeyProblem((section, name), unknown_key(name, inner))
        if not sub:  # nothing set: the keys in it keep their defaults
            del data[section]
    for name, required in plan.secrets.items():
        _read_secret_file(data, name, (), base_dir, required=required)
    for name in plan.secret_maps:
        data[name] = _secret_map(data.get(name), name, base_dir)
    for path, (kind, many) in plan.scalars.items():
        _read_scalar(data, path.split("."), kind, many)
    return data


def _sections(plan: Plan) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    for section, name in plan.nested.values():
        sections.setdefault(section, []).append(name)
    return sections


def _read_secret_file(
    data: dict[str, Any], name: str, loc: tuple[str | int, ...], base_dir: Path | None, *, required: bool
) -> None:
    """`name: value` or `name_file: path` (the file's text without its trailing newline) -> `name`."""
    file_key = f"{name}_file"
    if data.get(file_key) is None:
        data.pop(file_key, None)
        return
    if name in data:
        raise KeyProblem((*loc, name), f"give either {name} or {file_key}, not both")
    path_text = data.pop(file_key)
    if not isinstance(path_text, str):
        raise KeyProblem((*loc, file_key), not_text(path_text))
    if not path_text.strip():
        raise KeyProblem((*loc, file_key), "must not be empty")
    path = resolve(path_text, base_dir)
    try:
        data[name] = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as e:
        raise KeyProblem((*loc, file_key), f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise KeyProblem((*loc, file_key), f"cannot read {path}: not UTF-8 text") from None


def _secret_map(raw: object, field: str, base_dir: Path | None) -> object:
    """`keys:` — token name -> key, where `<token name>_file: path` reads the key from a file."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise KeyProblem((field,), f"expected a mapping of token name to key, got {type_name(raw)}")
    data = dict(raw)
    names = dict.fromkeys(k.removesuffix("_file") or k for k in raw)
    for name in names:
        _read_secret_file(data, name, (field,), base_dir, required=True)
        if data.get(name) is None:
            raise KeyProblem((field, name), f"required (or {name}_file)")
    return {name: data[name] for name in names}


_WORDS: Final = dict.fromkeys(("true", "yes", "on", "1"), True) | dict.fromkeys(
    ("false", "no", "off", "0"), False
)


def _read_scalar(data: dict[str, Any], path: list[str], kind: type, many: bool) -> None:
    """`${PORT}` cannot be written unquoted in YAML, so a value that took text from the environment
    may stand for a number or a boolean. Other text stays text, and fails as such."""
    from monitor.config import Interpolated

    *sections, name = path
    for section in sections:
        sub = data.get(section)
        if not isinstance(sub, Mapping):
            return
        data[section] = data = dict(sub)
    value = data.get(name)
    if many and isinstance(value, list):
        data[name] = [_as_scalar(v, kind) for v in value]
    elif not many and isinstance(value, Interpolated):
        data[name] = _as_scalar(value, kind)


def _as_scalar(value: object, kind: type) -> object:
    from monitor.config import Interpolated

    if not isinstance(value, Interpolated):
        return value
    text = value.strip()
    try:
        if kind is bool:
            return _WORDS.get(text.lower(), value)
        return kind(text) if kind is float or text.lstrip("+-").isdigit() else value
    except ValueError:
        return value


def _check_secrets(plan: Plan, value: Any) -> None:
    for name, required in plan.secrets.items():
        if required and not getattr(value, name):
            raise KeyProblem((name,), "is empty")
    for name in plan.secret_maps:
        for token, secret in getattr(value, name).items():
            if not secret:
                raise KeyProblem((name, token), "is empty")
