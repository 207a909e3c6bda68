"""The `openrouter` platform: an OpenRouter account's API keys through its management API
(docs/relay-adapters.md). The provider's `admin_token` is a management key (`Authorization:
Bearer`); `base_url` is the host (`https://openrouter.ai`), though the API root
(`https://openrouter.ai/api/v1`, what OpenRouter's SDKs are given) works as well.

A poll lists every key: `GET /api/v1/keys?include_disabled=true&offset=N`, newest first, 100 a
page, no total and no "more" flag, so pages are read until one is shorter than the first (a
few at a time once the first is full). Without `include_disabled=true` OpenRouter leaves
disabled keys out, and a quarantined key would look deleted. A key deleted while paging shifts
the later pages and hides another key, so before keys are called deleted, each key that vanished
since the last complete list is read by hash (`GET /api/v1/keys/{hash}`: 404 when it is gone).
There is no request log: spend is each key's lifetime `usage` (see `openrouter_keys`).

Quarantine disables (`PATCH /api/v1/keys/{hash} {"disabled": true}`; `delete` deletes), restore
re-enables (`{"disabled": false}`); both are verified by reading the key back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Literal
from urllib.parse import urlsplit

from monitor.model import Observation, PollResult, RevokeOutcome, Skip
from monitor.pacing import Pacer
from monitor.providers.base import AuthError, ProviderError
from monitor.providers.http import RelayHTTP, RelayResponse, decode_json
from monitor.providers.openrouter_keys import HASH, hint_matches, parse_key, skip_key, utc_aligned
from monitor.providers.parse import Malformed, entry_print
from monitor.providers.relaytime import relay_now
from monitor.secret import key_sha256
from monitor.settings import ProviderSettings

__all__ = ["MAX_KEYS", "PAGE", "OpenRouterProvider", "api_root"]

log = logging.getLogger("keywatch.providers.openrouter")

PAGE = 100  # OpenRouter's page ("the most recent 100 API keys"); not settable
MAX_KEYS = 1_000_000  # keys in one list: more is not an account, it is a relay that never stops
MAX_LOOKUPS = 1_000  # vanished keys read one by one per poll; the rest wait for the next poll
_CONCURRENCY = 4  # pages (or single keys) in flight

KeyState = Literal["enabled", "disabled", "gone"]


def api_root(base_url: str) -> str:
    """The path prefix of the API under `base_url`: the host takes `/api/v1`, the root none."""
    return "" if urlsplit(base_url).path.rstrip("/").endswith("/api/v1") else "/api/v1"


class OpenRouterProvider:
    kind = "openrouter"

    def __init__(
        self, settings: ProviderSettings, http: RelayHTTP, *, now: Callable[[], float] = time.time
    ) -> None:
        self.name = settings.name
        self._settings = settings
        self._http = http
        self._now = now
        self._keys_path = api_root(settings.base_url) + "/keys"
        self._windows = utc_aligned(settings.timezone, now())
        if not self._windows:
            log.info(
                "%s: OpenRouter resets its day and month usage at midnight UTC, not in %s: day and"
                " month spend come from keywatch's own history",
                self.name,
                settings.timezone,
            )
        self._digests: dict[str, str] = {}  # token name -> SHA-256 of its configured key
        self._seen: dict[str, tuple[bytes | None, Observation]] = {}  # last poll's entries
        self._previous: set[str] = set()  # hashes the last poll knew to be listed
        self._used: dict[str, float] = {}  # hash -> latest last use known (see _last_use)

    # --- poll ----------------------------------------------------------------------------------
    async def poll(self) -> PollResult:
        entries, first = await self._list()
        now = relay_now(first, self._now())
        observations, skipped, listed = await self._parse(entries, now)
        # Complete: every listed key accounted for (an entry that names its key is still listed)
        # and every key that vanished since the last poll is known to be gone.
        complete = all(s.token_id is not None for s in skipped)
        vanished = sorted(self._previous - listed)
        if vanished:
            found, found_skips, unresolved = await self._look_up(vanished[:MAX_LOOKUPS], now)
            unresolved |= set(vanished[MAX_LOOKUPS:])
            observations.extend(found)
            skipped.extend(found_skips)
            listed |= {o.token_id for o in found} | {s.token_id for s in found_skips if s.token_id}
            complete = complete and not unresolved
            if found or found_skips:
                log.info(
                    "%s: the key list shifted while paging; %d key(s) read one by one",
                    self.name,
                    len(found) + len(found_skips),
                )
        else:
            unresolved = set()
        self._previous = listed | unresolved
        return PollResult(observations, skipped, complete, relay_time=relay_now(first, None))

    async def _list(self) -> tuple[list[Any], RelayResponse]:
        """Every entry of every page. A relay decides how many pages there are, so the walk is
        bounded: `max_pages` pages, MAX_KEYS entries, and a full page of keys already read
        (an ignored offset) is an error, never a loop."""
        data, first = await self._page(0)
        entries, size = list(data), len(data)
        if size == 0:
            return entries, first
        hashes = {_hash_of(e) for e in data}
        pages, offset = 1, size
        batch = _CONCURRENCY if size >= PAGE else 1  # a short first page is most likely the last
        while True:
            if pages >= self._settings.max_pages or len(entries) >= MAX_KEYS:
                raise ProviderError(
                    "too_large",
                    f"GET {self._keys_path}: more than {pages} pages ({len(entries)} keys) and still full;"
                    " raise max_pages if the account is that big",
                )
            count = min(batch, self._settings.max_pages - pages)
            answers = await asyncio.gather(*(self._page(offset + i * size) for i in range(count)))
            for page, _ in answers:
                pages += 1
                fresh = {_hash_of(e) for e in page} - hashes
                if len(page) >= size and not fresh:
                    raise ProviderError(
                        "malformed",
                        f"GET {self._keys_path}: the page at offset {offset} repeats keys already read"
                        " (the relay ignores offset?)",
                    )
                hashes |= fresh
                entries.extend(page)
                if len(page) < size:
                    return entries, first
                offset += size
            batch = _CONCURRENCY

    async def _page(self, offset: int) -> tuple[list[Any], RelayResponse]:
        path = self._keys_path
        response = await self._call("GET", path, params={"include_disabled": "true", "offset": offset})
        self._check(response, "GET", path)
        body = decode_json(response)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise ProviderError("malformed", f"GET {path}: no 'data' list in the answer")
        return data, response

    async def _parse(
        self, entries: Iterable[Any], now: float
    ) -> tuple[list[Observation], list[Skip], set[str]]:
        observations: list[Observation] = []
        skipped: list[Skip] = []
        listed: set[str] = set()
        previous, seen = self._seen, {}
        pacer = Pacer()  # 100,000 entries are a second of parsing: the event loop gets turns
        for entry in entries:
            await pacer.turn()
            raw = entry.get("hash") if isinstance(entry, dict) else None
            if isinstance(raw, str) and raw in listed:
                continue  # a page that shifted while paging repeats an entry: keep one
            printed = entry_print(entry)
            before = previous.get(raw) if isinstance(raw, str) else None
            if before is not None and printed is not None and before[0] == printed and _same(before[1], now):
                obs = before[1]  # the same object tells ingest that nothing changed
            else:
                try:
                    obs = parse_key(entry, now=now, windows=self._windows, digest=self._digest)
                except Malformed as exc:
                    skip = skip_key(entry, exc)
                    skipped.append(skip)
                    if skip.token_id is not None:
                        listed.add(skip.token_id)
                    continue
                obs = self._last_use(obs, before[1] if before is not None else None, now)
            seen[obs.token_id] = (printed, obs)
            listed.add(obs.token_id)
            observations.append(obs)
        self._seen = seen
        return observations, skipped, listed

    async def _look_up(self, hashes: list[str], now: float) -> tuple[list[Observation], list[Skip], set[str]]:
        """Keys that vanished from the list, read by hash: (still there, unreadable, unknown).
        A 404 means gone; an error leaves the key unknown (the list stays incomplete)."""
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def one(key_hash: str) -> tuple[str, Any, bool]:
            """(hash, its entry or None once gone, whether the relay said which)."""
            async with gate:
                try:
                    _, entry = await self._read(key_hash)
                except AuthError:
                    raise
                except ProviderError:
                    return key_hash, None, False
            return key_hash, entry, True

        found: list[Observation] = []
        skips: list[Skip] = []
        unresolved: set[str] = set()
        for key_hash, entry, known in await asyncio.gather(*(one(h) for h in hashes)):
            if not known:
                unresolved.add(key_hash)
            elif entry is not None:
                try:
                    obs = parse_key(entry, now=now, windows=self._windows, digest=self._digest)
                    found.append(self._last_use(obs, None, now))
                except Malformed as exc:
                    skips.append(skip_key(entry, exc))
        return found, skips, unresolved

    def _last_use(self, obs: Observation, before: Observation | None, now: float) -> Observation:
        """`last_used_at`: the window bound `parse_key` found, or the poll that saw `usage` rise
        (the use was since the poll before), whichever is later; never earlier than known."""
        last = obs.last_used_at
        if before is not None and (obs.total_usd or 0.0) > (before.total_usd or 0.0):
            last = now
        known = self._used.get(obs.token_id)
        if known is not None and (last is None or known > last):
            last = known
        if last is not None:
            self._used[obs.token_id] = last
        return obs if last == obs.last_used_at else replace(obs, last_used_at=last)

    def _digest(self, name: str, label: str | None) -> str | None:
        """SHA-256 of the key configured under this name (`keys:`), unless the key's label shows
        that the configured key is not this one (rotated, or the name moved to another key)."""
        key = self._settings.keys.get(name)
        if key is None or not hint_matches(key.reveal(), label):
            return None
        digest = self._digests.get(name)
        if digest is None:
            digest = self._digests[name] = key_sha256(key.reveal())
        return digest

    # --- quarantine ----------------------------------------------------------------------------
    async def revoke(self, token_id: str, *, delete: bool = False) -> RevokeOutcome:
        if not HASH.fullmatch(token_id):
            return RevokeOutcome(False, False, f"not an OpenRouter key hash: {token_id[:20]!r}")
        if not delete:
            return await self._set_disabled(token_id, True)
        path = f"{self._keys_path}/{token_id}"
        response = await self._call("DELETE", path)
        if response.status_code == 404:
            return RevokeOutcome(False, False, "no such token at the relay")
        self._check(response, "DELETE", path)
        body = decode_json(response)
        if not isinstance(body, dict) or body.get("deleted") is not True:
            return RevokeOutcome(False, False, "the relay did not confirm the deletion")
        verified = bool(await self.verify_refused(token_id))
        return RevokeOutcome(True, verified, "deleted" if verified else "deleted; the key is still listed")

    async def restore(self, token_id: str) -> RevokeOutcome:
        if not HASH.fullmatch(token_id):
            return RevokeOutcome(False, False, f"not an OpenRouter key hash: {token_id[:20]!r}")
        return await self._set_disabled(token_id, False)

    async def _set_disabled(self, token_id: str, disabled: bool) -> RevokeOutcome:
        path = f"{self._keys_path}/{token_id}"
        if disabled:
            before, _ = await self._read(token_id)
            if before == "disabled":  # disabled by someone else: keywatch changes nothing (nor undoes it)
                return RevokeOutcome(True, True, "already disabled at the relay before keywatch acted")
        response = await self._call("PATCH", path, json={"disabled": disabled})
        if response.status_code == 404:
            gone = "no such token at the relay"
            return RevokeOutcome(
                False, False, gone if disabled else f"{gone}: a deleted key cannot be restored"
            )
        self._check(response, "PATCH", path)
        state, _ = await self._read(token_id)  # what counts is what the relay lists, not its echo
        done = "disabled" if disabled else "enabled"
        if state == ("disabled" if disabled else "enabled"):
            return RevokeOutcome(True, True, f"{done}; the relay lists the key as {state}")
        if not disabled:  # the relay's own listing is authoritative: a restore it does not show failed
            return RevokeOutcome(False, False, f"the relay still lists the key as {state} after enabling it")
        return RevokeOutcome(True, False, f"{done}; not verified: the relay lists the key as {state}")

    async def verify_refused(self, token_id: str) -> bool | None:
        """True once OpenRouter lists the key as disabled (or no longer has it)."""
        if not HASH.fullmatch(token_id):
            return None
        state, _ = await self._read(token_id)
        return state != "enabled"

    async def _read(self, token_id: str) -> tuple[KeyState, Any]:
        """The key as `GET /api/v1/keys/{hash}` shows it, and its entry (None once gone)."""
        path = f"{self._keys_path}/{token_id}"
        response = await self._call("GET", path)
        if response.status_code == 404:
            return "gone", None
        self._check(response, "GET", path)
        body = decode_json(response)
        entry = body.get("data") if isinstance(body, dict) else None
        disabled = entry.get("disabled") if isinstance(entry, dict) else None
        if not isinstance(disabled, bool):
            raise ProviderError("malformed", f"GET {path}: no key with a 'disabled' flag in the answer")
        return ("disabled" if disabled else "enabled"), entry

    # --- the wire ------------------------------------------------------------------------------
    async def _call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> RelayResponse:
        try:
            return await self._http.request(
                method, path, credential=self._settings.admin_token, params=params, json=json
            )
        except AuthError as exc:
            raise AuthError(f"{exc}; OpenRouter's key API takes a management key") from None

    def _check(self, response: RelayResponse, method: str, path: str) -> None:
        status = response.status_code
        if status == 200:
            return
        if 300 <= status < 400:
            where = response.headers.get("Location", "?")[:200]
            raise ProviderError(
                "redirect", f"{method} {path}: the relay redirects to {where} (check base_url)"
            )
        hint = " (check base_url: https://openrouter.ai)" if status == 404 else ""
        raise ProviderError(f"http_{status}", f"{method} {path}: HTTP {status}{hint}")

    async def aclose(self) -> None:
        return None


def _hash_of(entry: Any) -> object:
    value = entry.get("hash") if isinstance(entry, dict) else None
    return value if isinstance(value, str) else id(entry)


def _same(obs: Observation, now: float) -> bool:
    """Whether an unchanged entry still parses to `obs`: only the clock can change its status
    (an expiry that passed)."""
    return obs.expires_at is None or obs.expires_at > now or obs.status in ("disabled", "expired")
