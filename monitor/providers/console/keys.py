"""Key hashes for one-api family tokens, and keys for verifying a quarantine.

keywatch stores SHA-256 of a key (of `sk-<key>`, the form clients send and leak reports carry),
never the key. A list that shows keys in full is hashed on sight; a masked list
(`abcd**********wxyz`) needs `reveal_keys: true`, and then each token's key is revealed once
(`POST /api/token/{id}/key`, or new-api's batch call) and dropped as soon as it is hashed. The
first and last four characters (what a masked list shows anyway) tell when a token's key changed.

The one exception: verifying a quarantine calls the relay with the key until it is refused, so a
token being verified keeps its key here, wrapped in Secret, until the relay refuses it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from monitor.providers.base import ProviderError
from monitor.providers.console.api import ConsoleAPI
from monitor.secret import Secret, key_sha256

__all__ = ["ConsoleKeys", "is_masked"]

log = logging.getLogger("keywatch.providers.keys")
_BATCH = 100


def is_masked(key: str) -> bool:
    return "*" in key


def _as_issued(key: str) -> str:
    return key if key.startswith("sk-") else "sk-" + key


def _hint(key: str) -> str:
    return key[:4] + key[-4:]


class ConsoleKeys:
    def __init__(self, api: ConsoleAPI, *, reveal: bool, batch: bool, concurrency: int) -> None:
        self._api = api
        self._reveal = reveal
        self._batch = batch
        self._concurrency = max(1, concurrency)
        self._hashes: dict[str, tuple[str, str]] = {}  # token id -> (hint, sha256)
        self._verifying: dict[str, Secret] = {}  # token id -> key, only while a quarantine is verified

    def hash_for(self, token_id: str, listed: object) -> str | None:
        """The hash for a list entry's `key`; None when it must be revealed first (or cannot be)."""
        if not isinstance(listed, str) or len(listed) < 8:
            return None
        hint = _hint(listed)
        known = self._hashes.get(token_id)
        if known is not None and known[0] == hint:
            return known[1]
        if is_masked(listed):
            return None
        digest = key_sha256(_as_issued(listed))
        self._hashes[token_id] = (hint, digest)
        return digest

    def wanted(self, entries: Iterable[tuple[str, object]]) -> list[tuple[str, str]]:
        """(token id, hint) of masked entries worth revealing this cycle."""
        if not self._reveal:
            return []
        out = []
        for token_id, listed in entries:
            if isinstance(listed, str) and is_masked(listed) and len(listed) >= 8:
                known = self._hashes.get(token_id)
                if known is None or known[0] != _hint(listed):
                    out.append((token_id, _hint(listed)))
        return out

    async def reveal(self, wanted: list[tuple[str, str]]) -> dict[str, str]:
        """Hashes of the wanted tokens' keys, revealed; failures are retried next cycle."""
        found: dict[str, str] = {}
        if self._batch:
            for i in range(0, len(wanted), _BATCH):
                chunk = wanted[i : i + _BATCH]
                try:
                    data, _ = await self._api.call(
                        "POST", "/api/token/batch/keys", json={"ids": [int(t) for t, _ in chunk]}
                    )
                except ProviderError as exc:
                    log.debug("batch key reveal failed (%s); revealing one by one", exc.reason)
                    self._batch = False
                    break
                keys = data.get("keys") if isinstance(data, dict) else None
                for token_id, hint in chunk:
                    key = keys.get(token_id) if isinstance(keys, dict) else None
                    if isinstance(key, str) and key:
                        found[token_id] = self._remember(token_id, hint, key)
        rest = [(t, h) for t, h in wanted if t not in found]
        gate = asyncio.Semaphore(self._concurrency)

        async def one(token_id: str, hint: str) -> None:
            async with gate:
                key = await self._reveal_one(token_id)
            if key is not None:
                found[token_id] = self._remember(token_id, hint, key.reveal())

        await asyncio.gather(*(one(t, h) for t, h in rest))
        return found

    def _remember(self, token_id: str, hint: str, key: str) -> str:
        digest = key_sha256(_as_issued(key))
        self._hashes[token_id] = (hint, digest)
        return digest

    async def _reveal_one(self, token_id: str) -> Secret | None:
        try:
            data, _ = await self._api.call("POST", f"/api/token/{token_id}/key")
        except ProviderError as exc:
            log.debug("revealing the key of token %s failed: %s", token_id, exc.reason)
            return None
        key = data.get("key") if isinstance(data, dict) else None
        return Secret(_as_issued(key)) if isinstance(key, str) and key and not is_masked(key) else None

    # --- verification ------------------------------------------------------------------------
    async def for_verification(self, token_id: str) -> Secret | None:
        """The token's key, fetched once and held until `refused()`; None if it cannot be had."""
        held = self._verifying.get(token_id)
        if held is not None:
            return held
        try:
            data, _ = await self._api.call("GET", f"/api/token/{token_id}")
        except ProviderError:
            return None
        listed = data.get("key") if isinstance(data, dict) else None
        key: Secret | None = None
        if isinstance(listed, str) and listed and not is_masked(listed):
            key = Secret(_as_issued(listed))
        elif self._reveal:
            key = await self._reveal_one(token_id)
        if key is not None:
            self._verifying[token_id] = key
        return key

    def held(self, token_id: str) -> Secret | None:
        return self._verifying.get(token_id)

    def refused(self, token_id: str) -> None:
        """The relay refuses the key now: forget it."""
        self._verifying.pop(token_id, None)
