"""Hostile relay modes (issue 9): answers a buggy or malicious relay was found to give, switched
on at run time through POST /_sim/hostile and scoped to the routes where each makes sense.
Seeded like Faults: the same seed and the same switches give the same behaviour every run.

This module holds the switches and the choices (which request, which list entry, which page);
hostilewire.py carries out the answer modes, absurd.py writes the absurd entry values.

    absurd   list entries with absurd numbers (laozhang list; one-api family token entries)
    paging   pages that lie: new-api claims 2,000,000 pages of one item; one-api pages are never
             short (one-api family token list, optionally the request log)
    trickle  the answer one byte per `interval` seconds, headers at once
    huge     a `size`-byte JSON answer (whitespace, then the real answer), chunked, made lazily
    bomb     a gzip body that inflates to `size` bytes of zeros
    hang     no answer at all, until the client gives up
    echo     an error that echoes the caller's credential and forges a log line
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "ABSURD_KINDS",
    "ANSWER_MODES",
    "LIE_TOTAL",
    "MODES",
    "Hostile",
    "Mode",
    "page_of",
]

MIB = 1 << 20
ANSWER_MODES = ("hang", "echo", "bomb", "huge", "trickle")  # precedence when several match a route
MODES = ("absurd", "paging", *ANSWER_MODES)
ABSURD_KINDS = ("huge", "epoch_ms", "negative", "nan", "overflow")
LIE_TOTAL = 2_000_000  # new-api's claimed total under `paging`, with a page size of 1

# Where entry and paging modes make sense, per flavour (route names). Answer modes: any API route.
_ENTRY_ROUTES: dict[str, tuple[str, ...]] = {
    "laozhang": ("list",),
    "oneapi": ("token.list", "token.get"),
    "newapi": ("token.list", "token.get"),
    "openrouter": ("keys.list", "keys.get"),
    "anthropic": ("keys.list", "keys.get", "usage.messages"),
    "litellm": ("key.list", "key.info", "spend.logs.v2", "spend.logs.ui"),
}
_PAGED_ROUTES: dict[str, tuple[str, ...]] = {
    "oneapi": ("token.list", "log.self"),
    "newapi": ("token.list", "log.self"),
    "openrouter": ("keys.list",),
    "anthropic": ("keys.list", "usage.messages"),
    "litellm": ("key.list", "spend.logs.v2", "spend.logs.ui"),
}
# The paging mode's routes when the request names none: each flavour's own key list.
_DEFAULT_PAGED: dict[str, tuple[str, ...]] = {
    "openrouter": ("keys.list",),
    "anthropic": ("keys.list",),
    "litellm": ("key.list",),
}
_PARAMS: dict[str, tuple[str, ...]] = {
    "absurd": ("kind", "token", "fraction"),
    "paging": (),
    "trickle": ("interval",),
    "huge": ("size",),
    "bomb": ("size",),
    "hang": (),
    "echo": ("status",),
}
_DEFAULT_SIZE = {"huge": 200 * MIB, "bomb": 1024 * MIB}
_COMMON = ("mode", "off", "routes", "rate", "times")

T = TypeVar("T")


@dataclass(eq=False)
class Mode:
    name: str
    routes: frozenset[str] | None  # None: every API route of the flavour
    rate: float = 1.0  # share of matching requests it takes (seeded draws)
    times: int | None = None  # it switches itself off after this many requests; None: until reset
    interval: float = 1.0  # trickle: seconds per byte
    size: int = 0  # huge: body bytes; bomb: inflated bytes (whole MiB)
    status: int = 0  # echo: HTTP status; 0: the flavour's (500, one-api family 200)
    kind: str = "huge"  # absurd: one of ABSURD_KINDS, or "mixed" (a seeded kind per token)
    token: str | None = None  # absurd: only this token (relay id) ...
    fraction: float = 1.0  # ... else this share of tokens, chosen by id (stable across polls)
    released: bool = False  # switched off or replaced: requests it holds (hang, trickle) end now
    generation: int = 0  # the Hostile.generation it was set in: a reset ends what it holds too
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "routes": None if self.routes is None else sorted(self.routes),
            "rate": self.rate,
            "times": self.times,
        }
        out.update({p: getattr(self, p) for p in _PARAMS[self.name]})
        return out


def _unit(text: str) -> float:
    """A stable draw in [0, 1) from a string: the same token is chosen on every poll."""
    return zlib.crc32(text.encode()) / 2**32


def _number(body: Mapping[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'"{name}" must be a number')
    return float(value)


def _integer(body: Mapping[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'"{name}" must be an integer')
    return value


class Hostile:
    """The hostile modes switched on, at most one of each, each with its own routes."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._modes: dict[str, Mode] = {}
        self.generation = 0  # bumped by reset: ends held requests, even of modes whose times ran out

    # --- switches ------------------------------------------------------------------------------
    def set(
        self,
        flavor: str,
        body: Mapping[str, Any],
        *,
        known_routes: Collection[str],
        resolve: Callable[[str], str],
    ) -> None:
        """Switch one mode on (replacing its earlier settings) or off (`"off": true`), from a
        control body. `resolve` turns a token ref into its relay id (KeyError if unknown).
        ValueError on bad input, before anything changes."""
        name = body.get("mode")
        if name not in MODES:
            raise ValueError(f'"mode" must be one of {", ".join(MODES)}')
        if body.get("off"):
            self._release(name)
            return
        unknown = set(body) - set(_COMMON) - set(_PARAMS[name])
        if unknown:
            raise ValueError(f"unknown parameter(s) for {name}: {', '.join(sorted(unknown))}")
        mode = Mode(
            name,
            routes=self._routes(name, flavor, body.get("routes"), known_routes),
            rate=_number(body, "rate", 1.0),
            generation=self.generation,
            rng=random.Random(f"{self.seed}:hostile:{name}"),
        )
        if not 0.0 <= mode.rate <= 1.0:
            raise ValueError('"rate" must be within [0, 1]')
        if body.get("times") is not None:
            mode.times = _integer(body, "times", 1)
            if mode.times < 1:
                raise ValueError('"times" must be >= 1 (or null: until reset)')
        self._params(mode, flavor, body, resolve)
        self._release(name)
        self._modes[name] = mode

    def reset(self) -> None:
        """Every mode off; requests held by hang or trickle are cut (the connection closes)."""
        for name in list(self._modes):
            self._release(name)
        self.generation += 1

    def holds(self, mode: Mode) -> bool:
        """Whether a request `mode` took may still be held (not switched off, replaced or reset)."""
        return not mode.released and mode.generation == self.generation

    def as_dict(self) -> dict[str, Any]:
        return {"modes": {name: mode.as_dict() for name, mode in self._modes.items()}}

    def _release(self, name: str) -> None:
        mode = self._modes.pop(name, None)
        if mode is not None:
            mode.released = True

    @staticmethod
    def _routes(name: str, flavor: str, raw: object, known: Collection[str]) -> frozenset[str] | None:
        if name == "absurd":
            allowed: Collection[str] | None = _ENTRY_ROUTES.get(flavor)
            default: Collection[str] | None = allowed
        elif name == "paging":
            allowed = _PAGED_ROUTES.get(flavor)
            default = _DEFAULT_PAGED.get(flavor, ("token.list",))
        else:
            allowed, default = known, None
        if allowed is None:
            raise ValueError(f"{name} does not apply to the {flavor} flavour")
        if raw is None:
            return None if default is None else frozenset(default)
        if not isinstance(raw, list) or not raw or not all(isinstance(r, str) for r in raw):
            raise ValueError('"routes" must be a non-empty list of route names, or null')
        bad = set(raw) - set(allowed)
        if bad:
            raise ValueError(
                f"{name} on {flavor} applies to routes {', '.join(sorted(allowed))}; "
                f"not {', '.join(sorted(bad))}"
            )
        return frozenset(raw)

    @staticmethod
    def _params(mode: Mode, flavor: str, body: Mapping[str, Any], resolve: Callable[[str], str]) -> None:
        if mode.name == "trickle":
            mode.interval = _number(body, "interval", 1.0)
            if not 0.0 < mode.interval <= 3600.0:
                raise ValueError('"interval" must be within (0, 3600] seconds')
        elif mode.name in ("huge", "bomb"):
            mode.size = _integer(body, "size", _DEFAULT_SIZE[mode.name])
            if mode.size < 0 or (mode.name == "bomb" and mode.size % MIB):
                raise ValueError('"size" must be >= 0 bytes (bomb: a whole number of MiB)')
        elif mode.name == "echo":
            mode.status = _integer(body, "status", 200 if flavor in ("oneapi", "newapi") else 500)
            if not 200 <= mode.status <= 599:
                raise ValueError('"status" must be an HTTP status')
        elif mode.name == "absurd":
            mode.kind = str(body.get("kind", "huge"))
            if mode.kind not in (*ABSURD_KINDS, "mixed"):
                raise ValueError(f'"kind" must be one of {", ".join(ABSURD_KINDS)}, mixed')
            if "token" in body and "fraction" in body:
                raise ValueError('give "token" or "fraction", not both')
            if "token" in body:
                ref = body["token"]
                if not isinstance(ref, str) or not ref:
                    raise ValueError('"token" must be an id or a name')
                mode.token = resolve(ref)
            mode.fraction = _number(body, "fraction", 1.0)
            if not 0.0 <= mode.fraction <= 1.0:
                raise ValueError('"fraction" must be within [0, 1]')

    # --- decisions, per request ----------------------------------------------------------------
    def fires(self, name: str, route: str) -> Mode | None:
        """The mode `name` when it takes this request on `route` (one seeded draw if rate < 1)."""
        mode = self._modes.get(name)
        if mode is None or (mode.routes is not None and route not in mode.routes):
            return None
        if mode.rate < 1.0 and mode.rng.random() >= mode.rate:
            return None
        if mode.times is not None:
            mode.times -= 1
            if mode.times <= 0:
                del self._modes[name]  # not released: the request it takes now still runs its course
        return mode

    def answer_mode(self, route: str) -> Mode | None:
        """The answer mode that takes this request, if any (ANSWER_MODES order)."""
        if not self._modes:
            return None
        for name in ANSWER_MODES:
            if (mode := self.fires(name, route)) is not None:
                return mode
        return None

    def absurd_kind(self, mode: Mode, token_id: str) -> str | None:
        """Which absurd values this token's entry gets under `mode`, or None for a sane entry."""
        if mode.token is not None:
            if token_id != mode.token:
                return None
        elif _unit(f"{self.seed}:absurd:{token_id}") >= mode.fraction:
            return None
        if mode.kind != "mixed":
            return mode.kind
        return ABSURD_KINDS[int(_unit(f"{self.seed}:absurd-kind:{token_id}") * len(ABSURD_KINDS))]


def page_of(rows: list[T], start: int, size: int, *, lie: bool = False) -> list[T]:
    """`size` rows from `start`. A lying page is never short: it wraps around and repeats rows,
    so a client that reads until a short page never stops."""
    if not lie:
        return rows[start : start + size]
    if not rows:
        return []
    return [rows[(start + i) % len(rows)] for i in range(size)]
