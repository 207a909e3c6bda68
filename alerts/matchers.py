"""Label matchers (`token=dev-*`, `rule=spend_anomaly`, `provider!=lz`, `token=~dev-.*`), as in amtool.

A missing label matches as the empty string, like Alertmanager: `provider!=lz` matches an alert
without a provider label. `=`/`!=` glob when the value contains `*` (fnmatch's `*`, `?`, `[seq]`);
`=~`/`!~` are anchored regexes in RE2 syntax, as Alertmanager's are. Both run on RE2, whose
matching time is linear in the label's length whatever the pattern, so no silence can stall the
event loop (Python's `re` took seconds on `(a+)+`). RE2 has no backreferences or lookarounds.

`parse_matcher` refuses anything a user must not store: long names or values, text that is not
UTF-8, regexes RE2 refuses or that compile too large. A `Matcher` built directly (a row an older
version stored) never raises: a regex RE2 cannot compile makes it match nothing, so its silence
mutes nothing rather than breaking every read of the silences table.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

import re2

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_REGEX_MEMORY",
    "MAX_REGEX_PROGRAM_SIZE",
    "MAX_VALUE_CHARS",
    "Matcher",
    "MatcherError",
    "Op",
    "check_matcher",
    "parse_matcher",
    "parse_matchers",
]

# Label names are identifiers like `token` or `provider`: anything longer is a mistake.
MAX_NAME_CHARS: Final = 128
# Far above any token name or regex an operator types; bounds parse and compile work per matcher.
MAX_VALUE_CHARS: Final = 1024
# RE2 instructions: `dev-.*` is 16, `[a-z]{1,64}` 131. Matching costs at most label length x this.
MAX_REGEX_PROGRAM_SIZE: Final = 1000
# RE2's memory budget per regex (program and DFA cache); its default, 8 MiB, is for big patterns.
MAX_REGEX_MEMORY: Final = 1 << 20

Op = Literal["=", "!=", "=~", "!~"]
_OPS: Final = frozenset(get_args(Op))
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYNTAX: Final = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")
# Operator, quotes and blanks around the name and value: the most a well-formed matcher adds.
_SYNTAX_SLACK: Final = 16
_RE2_HINT: Final = "keywatch uses RE2 syntax, like Alertmanager: no backreferences or lookarounds"


class MatcherError(ValueError):
    """A matcher string that cannot be parsed, or a regex that does not compile."""


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str
    # The compiled RE2 pattern for `=~`, `!~` and globs; None for an exact `=`/`!=`.
    _regex: Any = field(init=False, repr=False, compare=False, default=None)
    # Why the pattern did not compile ("" when it did): such a matcher matches nothing.
    _error: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        pattern = _pattern(self.op, self.value)
        if pattern is not None:
            regex, error = _compile(pattern) if len(self.value) <= MAX_VALUE_CHARS else (None, "too long")
            object.__setattr__(self, "_regex", regex)
            object.__setattr__(self, "_error", error)

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self._error:
            return False
        actual = labels.get(self.name, "")
        if self._regex is None:
            hit = actual == self.value
        else:  # bytes: no offset bookkeeping, and a lone surrogate in a label cannot raise
            hit = self._regex.fullmatch(actual.encode("utf-8", "surrogatepass")) is not None
        return hit if self.op in ("=", "=~") else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def check_matcher(m: Matcher) -> Matcher:
    """`m` if a user may store it; MatcherError saying what is wrong otherwise."""
    if m.op not in _OPS:
        raise MatcherError(f"{m.name}: unknown operator {m.op!r} (use =, !=, =~ or !~)")
    if len(m.name) > MAX_NAME_CHARS or not _NAME.fullmatch(m.name):
        raise MatcherError(
            f"label name {m.name[:40]!r}: use [A-Za-z_][A-Za-z0-9_]*, at most {MAX_NAME_CHARS} characters"
        )
    if len(m.value) > MAX_VALUE_CHARS:
        raise MatcherError(f"{m.name}{m.op}...: the value is longer than {MAX_VALUE_CHARS} characters")
    if not _is_utf8(m.value):
        raise MatcherError(f"{m.name}{m.op}...: the value is not valid UTF-8 text")
    if m._error and m.op in ("=~", "!~"):
        raise MatcherError(f"{m}: bad regex: {m._error} ({_RE2_HINT})")
    if m._error:
        raise MatcherError(f"{m}: glob too complex: {m._error}")
    return m


def parse_matcher(text: str) -> Matcher:
    if len(text) > MAX_NAME_CHARS + MAX_VALUE_CHARS + _SYNTAX_SLACK:
        raise MatcherError(f"a matcher is at most {MAX_VALUE_CHARS} characters of value")
    found = _SYNTAX.match(text)
    if found is None:
        raise MatcherError(f"{text!r}: expected NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX")
    name, op, value = found.groups()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]  # `token="dev-*"` as typed in a shell with quotes kept
    return check_matcher(Matcher(name, op, value))  # type: ignore[arg-type]  # the regex only yields the four ops


def parse_matchers(texts: Iterable[str | Matcher]) -> tuple[Matcher, ...]:
    return tuple(check_matcher(t) if isinstance(t, Matcher) else parse_matcher(t) for t in texts)


# --- RE2 ------------------------------------------------------------------------------------------


def _pattern(op: str, value: str) -> str | None:
    """The RE2 pattern a matcher runs, or None when it compares exactly."""
    if op in ("=~", "!~"):
        return value
    return _glob(value) if "*" in value else None


def _options() -> Any:
    options = re2.Options()
    options.max_mem = MAX_REGEX_MEMORY
    options.log_errors = False  # a refused regex is the user's MatcherError, not a line on stderr
    return options


_OPTIONS: Final = _options()


@functools.lru_cache(maxsize=512)  # every flush reloads the silences: compile each pattern once
def _compile(pattern: str) -> tuple[Any, str]:
    """(compiled regex, "") or (None, why it was refused)."""
    if not _is_utf8(pattern):
        return None, "not valid UTF-8"
    try:
        regex = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "does not compile"
        return None, reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    if regex.programsize > MAX_REGEX_PROGRAM_SIZE:
        return None, f"compiles to {regex.programsize} RE2 instructions (at most {MAX_REGEX_PROGRAM_SIZE})"
    return regex, ""


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. from a non-UTF-8 command line
        return False
    return True


def _glob(pattern: str) -> str:
    """fnmatchcase's language (`*`, `?`, `[seq]`, `[!seq]`; no escapes) as an RE2 pattern."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not out or out[-1] != ".*":  # `**` is `*`
                out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and (end := _bracket_end(pattern, i)) >= 0:
            out.append(_bracket(pattern[i:end]))
            i = end + 1
        else:
            out.append(re2.escape(c))
    return "(?s:" + "".join(out) + ")"


def _bracket_end(pattern: str, start: int) -> int:
    """Index of the `]` closing the set opened before `start`, or -1 (then `[` is a literal).
    As fnmatch: a `]` right after `[` or `[!` is a member, not the end."""
    j = start
    if j < len(pattern) and pattern[j] == "!":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    return pattern.find("]", j)


def _bracket(body: str) -> str:
    """One fnmatch set as an RE2 class. `a-z` is a range; a `-` first, last or right after a range
    is a member; a reversed range (`z-a`) has no members (fnmatch drops it)."""
    negate = body.startswith("!")
    chars = body[1:] if negate else body
    parts: list[str] = []
    k = 0
    while k < len(chars):
        if k + 2 < len(chars) and chars[k + 1] == "-":
            lo, hi = chars[k], chars[k + 2]
            if lo <= hi:
                parts.append(f"{_cp(lo)}-{_cp(hi)}")
            k += 3
        else:
            parts.append(_cp(chars[k]))
            k += 1
    if not parts:  # no members: `[z-a]` matches nothing, `[!z-a]` any one character
        return "(?s:.)" if negate else r"[^\x00-\x{10FFFF}]"
    return ("[^" if negate else "[") + "".join(parts) + "]"


def _cp(char: str) -> str:
    return f"\\x{{{ord(char):X}}}"  # by code point: no character is special inside the class
