"""A value that must never be printed: API keys, admin tokens, HMAC secrets."""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["Secret", "key_sha256"]


def key_sha256(key: str) -> str:
    """The only form of a key keywatch stores: hex SHA-256 of the key as the relay issued it."""
    return hashlib.sha256(key.encode()).hexdigest()


class Secret:
    """Wraps a secret string so that repr(), str(), f-strings and logs show a mask, not the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> str | tuple[Any, ...]:  # never pickled into a cache or a subprocess by accident
        raise TypeError("Secret values cannot be pickled")

    # pydantic (monitor.config reads YAML through it): a string in, a Secret out; dumped masked, never as
    # its value. Imported lazily: secrets are everywhere, pydantic only where a config is read.
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.str_schema(strict=True),
            serialization=core_schema.plain_serializer_function_ser_schema(repr),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, core: Any, handler: Any) -> dict[str, Any]:
        return {"type": "string", "writeOnly": True}
