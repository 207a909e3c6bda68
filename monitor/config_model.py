"""The settings dataclasses as pydantic sees them: how a YAML mapping becomes each of them, and the JSON
Schema of what users write.

pydantic validates the types and bounds declared in monitor.settings. What YAML adds on top is here,
once for every section: `<key>_file` secrets, `${VAR}` values read as numbers and booleans, keys
nested in a sub-mapping (`rules.expiry.warn_before`), keys the loader sets itself (`source`), and the
few rules that span keys (a newapi relay needs `user_id`, routed tags need a target). Problems are
raised as pydantic errors and put into words by monitor.config_errors.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, cast

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, TypeAdapter
from pydantic_core import PydanticCustomError, core_schema

from monitor.config_apprise import config_tags
from monitor.config_fields import AppriseUrl, Check, Routes, Tag, not_text, resolve, type_name, unknown_key
from monitor.secret import Secret
from monitor.settings import Notify, NotifyTarget, ProviderSettings, Settings

__all__ = [
    "Problem",
    "adapter",
    "check_core_schema",
    "problem",
    "routes_core_schema",
    "section_core_schema",
    "section_json_schema",
]

Problem: Final = "config"  # the pydantic error type of problems raised here; ctx: reason, loc below


def problem(loc: tuple[str | int, ...], reason: str) -> PydanticCustomError:
    """A problem at `loc`, relative to the mapping being validated."""
    return PydanticCustomError(Problem, "{reason}", {"reason": reason, "loc": loc})


@functools.cache
def adapter() -> TypeAdapter[Settings]:
    return TypeAdapter(Settings)


# --- what each section's YAML holds beyond its fields ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How a section's YAML keys map onto its dataclass fields."""

    keys: tuple[str, ...]  # every key the mapping may hold, for "did you mean"
    not_keys: frozenset[str]  # fields the loader sets itself
    nested: dict[str, tuple[str, str]]  # field -> (sub-mapping, key in it)
    secrets: dict[str, bool]  # Secret field -> required; `<field>_file` reads it from a file
    secret_maps: tuple[str, ...]  # dict[str, Secret] fields; `<name>_file` inside reads one from a file
    scalars: dict[str, tuple[type, bool]]  # yaml key -> int/float/bool, and whether a list of them


@functools.cache
def _plan(cls: type) -> _Plan:
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
        if hint is Secret:
            secrets[f.name] = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            keys.append(f"{f.name}_file")
        elif hint == dict[str, Secret]:
            secret_maps.append(f.name)
        elif (scalar := _scalar(hint)) is not None:
            scalars[".".join(yaml) if yaml else name] = scalar
    return _Plan(tuple(keys), frozenset(not_keys), nested, secrets, tuple(secret_maps), scalars)


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
    plan = _plan(cls)
    for f in cast(core_schema.DataclassArgsSchema, schema["schema"])["fields"]:
        if f["name"] in plan.nested:
            path: list[str | int] = [*plan.nested[f["name"]]]
            f["validation_alias"] = path

    def validate(
        data: Any, inner: core_schema.ValidatorFunctionWrapHandler, info: core_schema.ValidationInfo
    ) -> Any:
        shortcut = _SHORTCUTS.get(cls)
        if shortcut is not None and not isinstance(data, Mapping):
            return shortcut(data)
        if not isinstance(data, Mapping):
            return inner(data)  # pydantic's "expected a mapping"
        data = _prepare(plan, _set(data, plan.keys), _base_dir(info))
        value = inner(data)
        _check_secrets(plan, value)
        check = _CHECKS.get(cls)
        return value if check is None else check(value, data)

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


def _prepare(plan: _Plan, data: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """The mapping as the dataclass's fields take it."""
    for name in data:
        if name in plan.not_keys:
            raise problem((name,), unknown_key(name, plan.keys))
    for section, inner in _sections(plan).items():
        sub = data.get(section)
        if sub is None:
            continue
        if not isinstance(sub, Mapping):
            raise problem((section,), f"expected a mapping, got {type_name(sub)}")
        data[section] = sub = _set(sub, inner)
        for name in sub:
            if name not in inner:
                raise problem((section, name), unknown_key(name, inner))
        if not sub:  # nothing set: the keys in it keep their defaults
            del data[section]
    for name, required in plan.secrets.items():
        _read_secret_file(data, name, (), base_dir, required=required)
    for name in plan.secret_maps:
        data[name] = _secret_map(data.get(name), name, base_dir)
    for path, (kind, many) in plan.scalars.items():
        _read_scalar(data, path.split("."), kind, many)
    return data


def _sections(plan: _Plan) -> dict[str, list[str]]:
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
        raise problem((*loc, name), f"give either {name} or {file_key}, not both")
    path_text = data.pop(file_key)
    if not isinstance(path_text, str):
        raise problem((*loc, file_key), not_text(path_text))
    if not path_text.strip():
        raise problem((*loc, file_key), "must not be empty")
    path = resolve(path_text, base_dir)
    try:
        data[name] = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as e:
        raise problem((*loc, file_key), f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise problem((*loc, file_key), f"cannot read {path}: not UTF-8 text") from None


def _secret_map(raw: object, field: str, base_dir: Path | None) -> object:
    """`keys:` — token name -> key, where `<token name>_file: path` reads the key from a file."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise problem((field,), f"expected a mapping of token name to key, got {type_name(raw)}")
    data = dict(raw)
    names = dict.fromkeys(k.removesuffix("_file") or k for k in raw)
    for name in names:
        _read_secret_file(data, name, (field,), base_dir, required=True)
        if data.get(name) is None:
            raise problem((field, name), f"required (or {name}_file)")
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


def _check_secrets(plan: _Plan, value: Any) -> None:
    for name, required in plan.secrets.items():
        if required and not getattr(value, name):
            raise problem((name,), "is empty")
    for name in plan.secret_maps:
        for token, secret in getattr(value, name).items():
            if not secret:
                raise problem((name, token), "is empty")


# --- the rules that span keys -------------------------------------------------------------------------------


def _settings(s: Settings, data: Mapping[str, Any]) -> Settings:
    if not s.providers:
        raise problem(("providers",), "at least one provider is required")
    names: set[str] = set()
    for i, p in enumerate(s.providers):
        if p.name in names:
            raise problem(("providers", i, "name"), f"duplicate provider name '{p.name}'")
        names.add(p.name)
    return s


def _provider(p: ProviderSettings, data: Mapping[str, Any]) -> ProviderSettings:
    if p.kind == "newapi" and p.user_id is None:
        raise problem(("user_id",), "required for kind newapi (the New-Api-User header)")
    if p.kind == "openai" and not p.project_id:
        raise problem(("project_id",), "required for kind openai")
    return p


def _notify(n: Notify, data: Mapping[str, Any]) -> Notify:
    """Targets with an empty URL are none. Every routed tag must reach a target: Apprise's `all` tag
    matches any target, a target tagged `always` gets everything; otherwise notify() would find no
    target, which DESIGN makes a config error. With no targets at all, alerts are only logged."""
    targets = tuple(t for t in n.urls if t.url.reveal().strip())
    # Tags of the targets in an apprise_config file come from Apprise's own parser. A file that
    # includes other configs has tags we cannot know here: then the route check is skipped.
    try:
        file_tags = [] if n.apprise_config is None else config_tags(n.apprise_config)
    except ValueError as e:
        raise problem(("apprise_config",), str(e)) from None
    tag_sets = [frozenset(t.tags) for t in targets] + (file_tags or [])
    if file_tags is not None and tag_sets:
        given = data.get("routes")
        for severity, tags in n.routes.items():
            for tag in tags:
                if tag != "all" and not any(tag in t or "always" in t for t in tag_sets):
                    set_here = isinstance(given, Mapping) and given.get(severity) is not None
                    hint = "" if set_here else " (a default route: set it, [] to log only)"
                    raise problem(("routes", severity), f"tag '{tag}' matches no notify target{hint}")
    return dataclasses.replace(n, urls=targets)


def _bare_url(url: object) -> NotifyTarget:
    """A `urls` entry that is only a URL: a target without tags."""
    if not isinstance(url, str):
        raise problem((), f"expected a mapping, got {type_name(url)}")
    return NotifyTarget(url=AppriseUrl().check(Secret(str(url)), None))


_CHECKS: Final[dict[type, Callable[[Any, Mapping[str, Any]], Any]]] = {
    Settings: _settings,
    ProviderSettings: _provider,
    Notify: _notify,
}
_SHORTCUTS: Final[dict[type, Callable[[object], Any]]] = {NotifyTarget: _bare_url}


# --- JSON Schema ------------------------------------------------------------------------------------------


def section_json_schema(
    cls: type, core: core_schema.CoreSchema, handler: GetJsonSchemaHandler
) -> dict[str, Any]:
    """The section's object schema as YAML has it: nested keys nested, `<key>_file` beside each secret."""
    reference = handler(core)
    schema = handler.resolve_ref_schema(reference)
    plan = _plan(cls)
    props: dict[str, Any] = schema.get("properties", {})
    required: list[str] = schema.get("required", [])
    rules: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    descriptions = {f.name: f.metadata.get("section", "") for f in dataclasses.fields(cast(Any, cls))}
    for name, prop in props.items():
        if name in plan.not_keys:
            continue
        if name in plan.nested:
            section, inner = plan.nested[name]
            sub = out.setdefault(section, {"type": "object", "properties": {}, "additionalProperties": False})
            if descriptions[name]:
                sub["description"] = descriptions[name]
            sub["properties"][inner] = prop
            continue
        out[name] = prop
        if name in plan.secrets:
            out[f"{name}_file"] = {
                "type": "string",
                "description": f"A file holding `{name}` (its trailing newline dropped), instead of `{name}`.",
            }
            pair = [{"required": [name]}, {"required": [f"{name}_file"]}]
            if name in required:
                required.remove(name)
                rules.append({"oneOf": pair})
            else:
                rules.append({"not": {"allOf": pair}})
    schema["properties"] = out
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    extra = _SCHEMA_EXTRAS.get(cls)
    if extra is not None:
        rules.extend(extra(schema))
    if rules:
        schema["allOf"] = rules
    return reference


def _settings_schema(schema: dict[str, Any]) -> list[dict[str, Any]]:
    schema["required"] = ["providers", *schema.get("required", [])]
    schema["properties"]["providers"]["minItems"] = 1
    return []


def _provider_schema(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"if": {"properties": {"kind": {"const": kind}}}, "then": {"required": [key]}}
        for kind, key in (("newapi", "user_id"), ("openai", "project_id"))
    ]


def _target_schema(schema: dict[str, Any]) -> list[dict[str, Any]]:
    target = dict(schema)
    schema.clear()
    schema["anyOf"] = [
        {"type": "string", "description": "A bare Apprise URL: a target without tags."},
        target,
    ]
    return []


_SCHEMA_EXTRAS: Final[dict[type, Callable[[dict[str, Any]], list[dict[str, Any]]]]] = {
    Settings: _settings_schema,
    ProviderSettings: _provider_schema,
    NotifyTarget: _target_schema,
}
