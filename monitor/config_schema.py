"""The JSON Schema (draft 2020-12) of the config file users write, generated from monitor.settings.

It describes the YAML before keywatch reads it, as an editor sees it: a `${VAR}` may stand where a
number, a boolean or a checked string goes, and null means "not set" wherever a key is optional.
docs/keywatch.schema.json is this schema, committed; docs/config.md is generated from it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from typing import Any, Final

from pydantic.json_schema import GenerateJsonSchema

from monitor.config_fields import DURATION_PATTERN, INTERPOLATED_PATTERN
from monitor.durations import format_duration

__all__ = ["branches", "child", "json_schema", "shared_schema"]

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
    from monitor.config_model import adapter

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
