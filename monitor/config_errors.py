"""pydantic's validation errors in keywatch's words: the key path and the reason of one
`config error: <key.path>: <reason>` line.

Reasons are built from the error's kind, the schema at its key, and the *type* of the offending value
(numbers are quoted for bounds). pydantic's own messages and inputs are never passed on: an input may
be a secret.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from monitor.config_fields import not_text, type_name, unknown_key
from monitor.config_model import Problem
from monitor.config_schema import branches, child, shared_schema

__all__ = ["describe", "key_path"]

_UNKNOWN: Final = frozenset({"extra_forbidden", "unexpected_keyword_argument"})
_MAPPING: Final = frozenset(
    {"dataclass_type", "dataclass_exact_type", "dict_type", "model_type", "model_attributes_type"}
)


def describe(error: ValidationError) -> tuple[str, str]:
    """The key path and reason of the first problem; a typo is reported before what it causes."""
    errors = error.errors(include_url=False)

    def unknown(e: ErrorDetails) -> bool:
        return e["type"] in _UNKNOWN or (e["type"] == Problem and _ctx(e)["reason"].startswith("unknown key"))

    first = next((e for e in errors if unknown(e)), errors[0])
    loc = (*first["loc"], *_ctx(first).get("loc", ())) if first["type"] == Problem else tuple(first["loc"])
    return key_path(loc), _reason(first, loc)


def key_path(loc: tuple[str | int, ...]) -> str:
    """`providers[0].keys.prod-a`; the empty path is `(root)`."""
    text = ""
    for step in loc:
        text += f"[{step}]" if isinstance(step, int) else f".{step}" if text else str(step)
    return text or "(root)"


def _ctx(e: ErrorDetails) -> dict[str, Any]:
    return dict(e.get("ctx") or {})


def _reason(e: ErrorDetails, loc: tuple[str | int, ...]) -> str:
    kind, value, ctx = e["type"], e.get("input"), _ctx(e)
    if kind == Problem:
        return str(ctx["reason"])
    if kind == "value_error":  # raised by a check in monitor.config_fields, in its own words
        return str(ctx["error"])
    if kind in _UNKNOWN:
        return _unknown(str(loc[-1]), _node(loc[:-1]))
    if kind == "missing":
        name = str(loc[-1])
        return f"required (or {name}_file)" if _node((*loc[:-1], f"{name}_file")) else "required"
    if kind in ("string_type", "literal_error") and not isinstance(value, str):
        secret = any(b.get("writeOnly") for b in branches(_node(loc) or {}, shared_schema()))
        return not_text(value, secret=secret)
    if kind == "literal_error":
        options: list[str] = next(
            (b["enum"] for b in branches(_node(loc) or {}, shared_schema()) if "enum" in b), []
        )
        return f"must be one of {', '.join(options)}; got '{value}'"
    if kind in ("greater_than", "greater_than_equal", "less_than_equal"):
        return _bounds(kind, value, ctx, loc)
    if kind == "finite_number":
        return f"must be a finite number, got {value}"
    simple = {
        "int_type": "expected an integer",
        "float_type": "expected a number",
        "bool_type": "expected true or false",
        "tuple_type": "expected a list",
        "list_type": "expected a list",
    }
    if kind in simple:
        return f"{simple[kind]}, got {type_name(value)}"
    if kind in _MAPPING:
        return f"expected a mapping, got {type_name(value)}"
    return "invalid value"


def _bounds(kind: str, value: Any, ctx: dict[str, Any], loc: tuple[str | int, ...]) -> str:
    whole = next((b for b in branches(_node(loc) or {}, shared_schema()) if b.get("type") == "integer"), None)
    if whole is not None:  # integers are quoted as written; numbers in short form
        if "minimum" in whole and "maximum" in whole:
            return f"must be between {whole['minimum']} and {whole['maximum']}, got {value}"
        if kind == "greater_than_equal":
            return f"must be at least {ctx['ge']}, got {value}"
        if kind == "less_than_equal":
            return f"must be at most {ctx['le']}, got {value}"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']:g}, got {value:g}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']:g}, got {value:g}"
    return f"must be at most {ctx['le']:g}, got {value:g}"


def _node(loc: tuple[str | int, ...]) -> dict[str, Any] | None:
    root = shared_schema()
    node: dict[str, Any] | None = root
    for step in loc:
        node = child(node, step, root)
    return node


def _unknown(name: str, parent: dict[str, Any] | None) -> str:
    return unknown_key(
        name, {k for b in branches(parent or {}, shared_schema()) for k in b.get("properties", {})}
    )
