"""The JSON Schema (draft 2020-12) of the config file users write, generated from monitor.settings.

It describes the YAML before keywatch reads it, as an editor sees it: a `${VAR}` may stand where a
number, a boolean or a checked string goes, and null means "not set" wherever a key is optional.
docs/keywatch.schema.json is this schema, committed; docs/config.md is generated from it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any, Final, cast

from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from monitor.config_fields import DURATION_PATTERN, INTERPOLATED_PATTERN
from monitor.config_model import adapter, plan
from monitor.durations import format_duration
from monitor.settings import NotifyTarget, ProviderSettings, Settings

__all__ = ["branches", "child", "json_schema", "section_json_schema", "shared_schema"]

_INTERPOLATED: Final = {
    "type": "string",
    "pattern": INTERPOLATED_PATTERN,
    "description": "${VAR} or ${VAR:-default}",
}
_NULL: Final = {"type": "null"}
_META: Final = ("description", "default", "examples")


class _Generator(GenerateJsonSchema):
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # titles would only repeat the key


def json_schema() -> dict[str, Any]:
    """A fresh copy: callers may change it."""
    return copy.deepcopy(shared_schema())


@functools.cache
def shared_schema() -> dict[str, Any]:
    """The schema itself, built once, for readers that leave it as it is."""
    generated = adapter().json_schema(mode="validation", schema_generator=_Generator)
    defs: dict[str, Any] = generated.pop("$defs", {})
    root: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "keywatch configuration",
        **{k: v for k, v in generated.items() if k != "title"},
    }
    for node in (root, *defs.values()):
        node.pop("title", None)
        _lenient(node)
    if defs:
        root["$defs"] = dict(sorted(defs.items()))
    _one_line_descriptions(root)
    return root


def _lenient(node: dict[str, Any]) -> None:
    """Let each optional key be null, and each typed or checked value be a `${VAR}`."""
    required = set(node.get("required", ()))
    for name, prop in node.get("properties", {}).items():
        for sub in branches(prop):
            _lenient(sub)
            if isinstance(sub.get("items"), dict):
                item = sub["items"] = _interpolable(sub["items"])
                _lenient(item)
        _format_default(prop)
        node["properties"][name] = _interpolable(prop, nullable=name not in required)
    for rule in node.get("anyOf", ()):
        _lenient(rule)


def _one_line_descriptions(node: object) -> None:
    """Docstrings wrap; a description is one paragraph."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "description" and isinstance(v, str):
                node[k] = " ".join(v.split())
            else:
                _one_line_descriptions(v)
    elif isinstance(node, list):
        for v in node:
            _one_line_descriptions(v)


def _interpolable(prop: dict[str, Any], *, nullable: bool = False) -> dict[str, Any]:
    alternatives = prop["anyOf"] if "anyOf" in prop else [{k: v for k, v in prop.items() if k not in _META}]
    typed = any(_checked(a) for a in alternatives)
    extra = ([_INTERPOLATED] if typed else []) + ([_NULL] if nullable and _NULL not in alternatives else [])
    if not extra:
        return prop
    meta: dict[str, Any] = {k: prop[k] for k in _META if k in prop}
    return {"anyOf": [*alternatives, *extra], **meta}


def _checked(schema: dict[str, Any]) -> bool:
    """A value `${VAR}` text would not pass before keywatch expands it."""
    if "anyOf" in schema:
        return any(_checked(a) for a in schema["anyOf"])
    kind = schema.get("type")
    return kind in ("integer", "number", "boolean") or any(k in schema for k in ("enum", "const", "pattern"))


def _format_default(prop: dict[str, Any]) -> None:
    """Durations default to what users write (`1h`), not to seconds."""
    default = prop.get("default")
    is_duration = any(b.get("pattern") == DURATION_PATTERN for b in prop.get("anyOf", ()))
    if is_duration and isinstance(default, int | float) and not isinstance(default, bool):
        prop["default"] = format_duration(default)


# --- walking it: the error messages and docs/config.md read the schema, not the classes ---------------------


def branches(node: dict[str, Any], root: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """The alternatives that describe a value (not null, not `${VAR}`), with references followed."""
    if root is not None and "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
    alternatives = node.get("anyOf")
    if alternatives is None:
        yield node
        return
    for alternative in alternatives:
        if alternative not in (_NULL, _INTERPOLATED):
            yield from branches(alternative, root)


def child(node: dict[str, Any] | None, step: str | int, root: dict[str, Any]) -> dict[str, Any] | None:
    """The schema of `node[step]`: a key's in a mapping, an item's in a list."""
    if node is None:
        return None
    for b in branches(node, root):
        if isinstance(step, int) and isinstance(b.get("items"), dict):
            return b["items"]  # type: ignore[no-any-return]
        if isinstance(step, str) and step in b.get("properties", {}):
            return b["properties"][step]  # type: ignore[no-any-return]
        if isinstance(step, str) and isinstance(b.get("additionalProperties"), dict):
            return b["additionalProperties"]  # type: ignore[no-any-return]
    return None


# --- each section's part: the hook of monitor.config_fields.Section -----------------------------------------


def section_json_schema(
    cls: type, core: core_schema.CoreSchema, handler: GetJsonSchemaHandler
) -> dict[str, Any]:
    """The section's object schema as YAML has it: nested keys nested, `<key>_file` beside each secret."""
    reference = handler(core)
    schema = handler.resolve_ref_schema(reference)
    keys = plan(cls)
    required: list[str] = schema.get("required", [])
    rules: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    sections = {f.name: f.metadata.get("section", "") for f in dataclasses.fields(cast(Any, cls))}
    for name, prop in schema.get("properties", {}).items():
        if name in keys.not_keys:
            continue
        if name in keys.nested:
            section, inner = keys.nested[name]
            sub = out.setdefault(section, {"type": "object", "properties": {}, "additionalProperties": False})
            if sections[name]:
                sub["description"] = sections[name]
            sub["properties"][inner] = prop
            continue
        out[name] = prop
        if name in keys.secrets:
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
    extra = _EXTRAS.get(cls)
    if extra is not None:
        rules.extend(extra(schema))
    if rules:
        schema["allOf"] = rules
    return reference


def _settings(schema: dict[str, Any]) -> list[dict[str, Any]]:
    schema["required"] = ["providers", *schema.get("required", [])]
    schema["properties"]["providers"]["minItems"] = 1
    return []


def _provider(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"if": {"properties": {"kind": {"const": kind}}}, "then": {"required": [key]}}
        for kind, key in (("newapi", "user_id"), ("openai", "project_id"))
    ]


def _target(schema: dict[str, Any]) -> list[dict[str, Any]]:
    target = dict(schema)
    schema.clear()
    schema["anyOf"] = [
        {"type": "string", "description": "A bare Apprise URL: a target without tags."},
        target,
    ]
    return []


# what monitor.config_checks adds to a section, as far as JSON Schema can say it
_EXTRAS: Final[dict[type, Callable[[dict[str, Any]], list[dict[str, Any]]]]] = {
    Settings: _settings,
    ProviderSettings: _provider,
    NotifyTarget: _target,
}
