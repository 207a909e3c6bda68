"""Label matchers (`token=dev-*`, `rule=spend_anomaly`, `provider!=lz`, `token=~dev-.*`), as in amtool.

A missing label matches as the empty string, like Alertmanager: `provider!=lz` matches an alert
without a provider label. `=`/`!=` glob when the value contains `*`; `=~`/`!~` are anchored regexes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

__all__ = ["Matcher", "MatcherError", "Op", "parse_matcher", "parse_matchers"]

Op = Literal["=", "!=", "=~", "!~"]

_SYNTAX = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


class MatcherError(ValueError):
    """A matcher string that cannot be parsed, or a regex that does not compile."""


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise MatcherError(f"{self.name}{self.op}{self.value}: bad regex: {exc}") from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op in ("=", "!="):
            hit = fnmatchcase(actual, self.value) if "*" in self.value else actual == self.value
            return hit if self.op == "=" else not hit
        hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def parse_matcher(text: str) -> Matcher:
    found = _SYNTAX.match(text)
    if found is None:
        raise MatcherError(f"{text!r}: expected NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX")
    name, op, value = found.groups()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]  # `token="dev-*"` as typed in a shell with quotes kept
    return Matcher(name, op, value)  # type: ignore[arg-type]  # the regex only yields the four ops


def parse_matchers(texts: Iterable[str | Matcher]) -> tuple[Matcher, ...]:
    return tuple(t if isinstance(t, Matcher) else parse_matcher(t) for t in texts)
