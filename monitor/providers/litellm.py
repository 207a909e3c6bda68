"""The `litellm` platform: a LiteLLM proxy's virtual keys (docs/relay-adapters.md). The provider's
`admin_token` is the proxy's master key (or a proxy-admin key), sent as `Authorization: Bearer`;
a plain virtual key would list only its own keys.

A poll lists every key (`GET /key/list?return_full_object=true&page=N&size=100`: without the flag
the proxy answers bare hashes), newest first with `total_count`/`total_pages`, then reads the
spend log for a closed window (`litellm_logs`). Newest-first offset pages shift while keys come
and go: a repeated entry is dropped by hash, a total that moves while paging makes the list
incomplete, and before keys are called deleted each one that vanished since the last complete
list is looked up (`GET /key/info?key=<hash>`: 404 once it is gone).

Spend. A key's `spend` is a counter of its current budget period: LiteLLM's reset job sets it to 0
once `budget_reset_at` has passed, up to ~10 minutes late (it runs every 597-605 s) and wiping
what was spent in between; admins lower it (`/key/{key}/reset_spend`, `/global/spend/reset`,
`/key/update`); `/key/regenerate` gives the same row, spend included, a new hash. None of that is
a lifetime counter keywatch could difference, so every key's spend is the sum of its spend-log
rows (`Observation.spend_from_logs`), each counted once by `request_id` whatever the resets, and
the counter is used for the budget state only. The log reaches further than the counter on one
condition: the proxy writes it (`general_settings.disable_spend_logs` is off, the default). When
keys' counters rise and the log stays empty for a few polls, each poll says so (reason
`spend_logs_missing`): the spend keywatch shows is then short.

Quarantine blocks the key (`POST /key/block {"key": <hash>}`; `delete` deletes it:
`POST /key/delete {"keys": [<hash>]}`), restore unblocks it (`POST /key/unblock`). Verified when
`/key/info` reports the key blocked (or gone). The proxy that took the call drops its cached key at
once; other instances of a proxy without Redis may serve the key from their cache for up to
`user_api_key_cache_ttl` (60 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, Final

from monitor.model import PollResult, RequestRecord, RevokeOutcome, Skip
from monitor.providers.base import ProviderError
from monitor.providers.http import RelayHTTP, RelayResponse, decode_json
from monitor.providers.litellm_keys import (
    HASH,
    PAGE,
    UI_SESSION_TEAM,
    LiteLLMKey,
    key_page_parts,
    parse_key,
    skip_key,
    still_same,
)
from monitor.providers.litellm_logs import LOG_SKIP, SILENT_LOG, SilenceWatch, SpendLog, error_type, parse_row
from monitor.providers.logwindow import LogWindow
from monitor.providers.parse import Malformed, entry_print
from monitor.providers.relaytime import relay_now
from monitor.settings import ProviderSettings

__all__ = ["LOG_SKIP", "MAX_KEYS", "PAGE", "SILENT_LOG", "LiteLLMProvider"]

log = logging.getLogger("keywatch.providers.litellm")

MAX_KEYS: Final = 1_000_000  # keys in one list: more is not a proxy, it is a relay that never stops
MAX_LOOKUPS: Final = 200  # vanished keys looked up per poll; beyond, the list stays incomplete
_CONCURRENCY: Final = 8


class LiteLLMProvider:
    kind = "litellm"
    # Log windows end `log_lag` s in the proxy's past and re-read `log_overlap` s: LiteLLM writes a
    # row when its request ends (a long stream's `startTime` is minutes old by then), in batches.
    log_lag: ClassVar[float] = 30.0
    log_overlap: ClassVar[float] = 600.0
    log_max_span: ClassVar[float] = 3600.0
    log_initial_lookback: ClassVar[float] = 3600.0
    silent_after: ClassVar[float] = 90.0  # counters up and no log row for this long: say so

    def __init__(
        self,
        settings: ProviderSettings,
        http: RelayHTTP,
        *,
        log_cursor: float | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.name = settings.name
        self._settings = settings
        self._http = http
        self._log = SpendLog(http, settings.admin_token, max_pages=settings.max_pages)
        self._window = LogWindow(
            lag=self.log_lag,
            overlap=self.log_overlap,
            max_span=self.log_max_span,
            initial_lookback=self.log_initial_lookback,
            cursor=log_cursor,
        )
        self._now = now
        self._seen: dict[str, tuple[bytes | None, LiteLLMKey]] = {}  # last poll's entries, by hash
        self._previous: set[str] = set()  # hashes of the last complete list
        self._stored: set[str] = set()  # request ids of the last stored window's overlap
        self._silence = SilenceWatch(self.silent_after)

    # --- poll ----------------------------------------------------------------------------------
    async def poll(self) -> PollResult:
        entries, first, consistent = await self._list_keys()
        relay_time = relay_now(first, None)
        now = relay_time or self._now()
        keys, skipped = self._parse(entries, now)
        ids = {k.obs.token_id for k in keys} | {s.token_id for s in skipped if s.token_id is not None}
        complete = consistent and all(s.token_id is not None for s in skipped)
        complete = complete and await self._vanished_really(ids)
        if complete:
            self._previous = ids
        names = {k.obs.token_id: k.obs.name for k in keys}
        records, log_skips, committed, rows_read = await self._poll_logs(now, names)
        silent = self._silence.check([(k.obs.token_id, k.spend, k.reset_at) for k in keys], rows_read, now)
        return PollResult(
            [k.obs for k in keys],
            [*skipped, *log_skips, *silent],
            complete,
            requests=records,
            committed=committed,
            relay_time=relay_time,
        )

    async def _list_keys(self) -> tuple[list[Any], RelayResponse, bool]:
        """Every page's entries, the first answer (its Date is the proxy's clock), and whether
        the list held still while it was read."""
        body, first = await self._key_page(1)
        entries, total, last = key_page_parts(body)
        if last > self._settings.max_pages or total > MAX_KEYS:
            raise ProviderError(
                "too_large",
                f"/key/list: the proxy claims {total} keys in {last} pages,"
                f" more than max_pages ({self._settings.max_pages}); raise it if the proxy is that big",
            )
        totals = {total}
        for start in range(2, last + 1, _CONCURRENCY):
            pages = await asyncio.gather(
                *(self._key_page(p) for p in range(start, min(start + _CONCURRENCY, last + 1)))
            )
            for page_body, _ in pages:
                more, page_total, _ = key_page_parts(page_body)
                entries.extend(more)
                totals.add(page_total)
            if len(entries) > MAX_KEYS:  # pages that keep coming whatever page 1 claimed
                raise ProviderError("too_large", f"/key/list: more than {MAX_KEYS} keys")
        unique = {
            token if isinstance(e, dict) and isinstance(token := e.get("token"), str) else id(e)
            for e in entries
        }
        return entries, first, len(totals) == 1 and len(unique) == total

    async def _key_page(self, page: int) -> tuple[Any, RelayResponse]:
        params = {"page": page, "size": PAGE, "return_full_object": "true"}
        return await self._get_json("/key/list", params)

    def _parse(self, entries: list[Any], now: float) -> tuple[list[LiteLLMKey], list[Skip]]:
        keys: list[LiteLLMKey] = []
        skipped: list[Skip] = []
        previous, seen = self._seen, {}
        for entry in entries:
            token = entry.get("token") if isinstance(entry, dict) else None
            if isinstance(token, str) and token in seen:
                continue  # a page shifted by a new key repeats an entry
            if isinstance(entry, dict) and entry.get("team_id") == UI_SESSION_TEAM:
                continue  # the admin UI's session keys: not keys anyone was given
            fields = entry_print(entry)
            before = previous.get(token) if isinstance(token, str) else None
            if (
                before is not None
                and fields is not None
                and before[0] == fields
                and still_same(before[1].obs, now)
            ):
                key = before[1]  # the same object tells ingest that nothing changed
            else:
                try:
                    key = parse_key(entry, now)
                except Malformed as exc:
                    skipped.append(skip_key(entry, exc))
                    continue
            seen[key.obs.token_id] = (fields, key)
            keys.append(key)
        self._seen = seen
        return keys, skipped

    async def _vanished_really(self, ids: set[str]) -> bool:
        """A key deleted while paging shifts the later pages and hides another: before keys are
        called deleted, each one that vanished since the last complete list is looked up
        (MAX_LOOKUPS a poll: a mass deletion is confirmed over a few polls)."""
        vanished = sorted(self._previous - ids)
        if not vanished:
            return True
        batch = vanished[:MAX_LOOKUPS]
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def exists(key_hash: str) -> bool:
            async with gate:
                response = await self._info(key_hash)
            return response.status_code != 404

        if any(await asyncio.gather(*(exists(h) for h in batch))):
            log.info("%s: the key list shifted while paging; not treating missing keys as deleted", self.name)
            return False
        if len(vanished) > len(batch):
            self._previous -= set(batch)  # confirmed gone; the rest are looked up next poll
            log.info("%s: %d keys vanished; confirming they are gone", self.name, len(vanished))
            return False
        return True

    # --- spend log -----------------------------------------------------------------------------
    async def _poll_logs(
        self, now: float, names: dict[str, str]
    ) -> tuple[list[RequestRecord], list[Skip], Callable[[], None] | None, int | None]:
        """The window's records, what to do once they are stored (move the cursor past them), and
        how many rows the log gave (None: it was not read)."""
        window = self._window.next(now)
        if window is None:
            return [], [], None, None
        start, end = window
        try:
            rows = await self._log.rows(start, end)
        except ProviderError as exc:
            return [], [Skip(LOG_SKIP, exc.reason, str(exc))], None, None  # read again next poll
        records: list[RequestRecord] = []
        bad = 0
        stored, carried, seen = self._stored, set(), set()
        overlap_from = end - self._window.overlap
        for row in rows:
            rid = row.get("request_id") if isinstance(row, dict) else None
            if isinstance(rid, str) and (rid in stored or rid in seen):
                if rid in stored:
                    carried.add(rid)  # stored by the last window: not parsed again
                continue
            try:
                record = parse_row(row, names)
            except Malformed:
                bad += 1
                continue
            if record is None:
                continue
            seen.add(record.request_id)
            records.append(record)
            if record.ts >= overlap_from:
                carried.add(record.request_id)

        def committed() -> None:
            self._window.advance(end)
            self._stored = carried

        skips = (
            [Skip(LOG_SKIP, "malformed", f"{bad} spend log rows without the documented fields")]
            if bad
            else []
        )
        return records, skips, committed, len(rows)

    # --- quarantine ----------------------------------------------------------------------------
    async def revoke(self, token_id: str, *, delete: bool = False) -> RevokeOutcome:
        if not HASH.fullmatch(token_id):
            return RevokeOutcome(False, False, f"not a LiteLLM key hash: {token_id[:16]!r}")
        before = await self._blocked(token_id)
        if before is None:  # block and delete answer a missing key with a 500
            return RevokeOutcome(False, False, "no such token at the proxy (deleted already?)")
        if before and not delete:  # blocked by someone else: keywatch changes nothing (nor undoes it)
            return RevokeOutcome(True, True, "already blocked at the proxy before keywatch acted")
        if delete:
            response = await self._post("/key/delete", {"keys": [token_id]})
            done = "deleted"
        else:
            response = await self._post("/key/block", {"key": token_id})
            done = "blocked"
        if response.status_code == 404:
            return RevokeOutcome(False, False, "no such token at the proxy (deleted already?)")
        if response.status_code != 200:
            return RevokeOutcome(False, False, f"{error_type(response)} ({response.status_code})")
        verified = await self.verify_refused(token_id)
        if verified:
            return RevokeOutcome(True, True, f"{done}; the proxy reports the key {done}")
        return RevokeOutcome(True, False, f"{done}; the proxy does not report it {done} yet")

    async def restore(self, token_id: str) -> RevokeOutcome:
        if not HASH.fullmatch(token_id):
            return RevokeOutcome(False, False, f"not a LiteLLM key hash: {token_id[:16]!r}")
        gone = await self._blocked(token_id) is None
        response = None if gone else await self._post("/key/unblock", {"key": token_id})
        if response is None or response.status_code == 404:
            return RevokeOutcome(False, False, "no such token at the proxy: a deleted key cannot be restored")
        if response.status_code != 200:
            return RevokeOutcome(False, False, f"{error_type(response)} ({response.status_code})")
        blocked = await self._blocked(token_id)
        if blocked is False:
            return RevokeOutcome(True, True, "unblocked; the proxy reports the key active")
        # The proxy's own record is authoritative: still blocked is a failed restore.
        return RevokeOutcome(False, False, "the proxy still reports the key blocked after /key/unblock")

    async def verify_refused(self, token_id: str) -> bool | None:
        """True once the proxy reports the key blocked, or no longer has it."""
        if not HASH.fullmatch(token_id):
            return None
        return await self._blocked(token_id) is not False

    async def _blocked(self, token_id: str) -> bool | None:
        """The key's `blocked` as `/key/info` reports it; None once the key is gone."""
        response = await self._info(token_id)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ProviderError(
                f"http_{response.status_code}",
                f"GET /key/info: {error_type(response)} ({response.status_code})",
            )
        body = decode_json(response)
        info = body.get("info") if isinstance(body, dict) else None
        if not isinstance(info, dict):
            raise ProviderError("malformed", "GET /key/info: no 'info' object")
        return info.get("blocked") is True

    # --- calls ---------------------------------------------------------------------------------
    async def _info(self, token_id: str) -> RelayResponse:
        return await self._http.request(
            "GET", "/key/info", credential=self._settings.admin_token, params={"key": token_id}
        )

    async def _post(self, path: str, body: Any) -> RelayResponse:
        return await self._http.request("POST", path, credential=self._settings.admin_token, json=body)

    async def _get_json(self, path: str, params: dict[str, Any]) -> tuple[Any, RelayResponse]:
        response = await self._http.request("GET", path, credential=self._settings.admin_token, params=params)
        if 300 <= response.status_code < 400:
            raise ProviderError("redirect", f"GET {path}: the proxy redirects (check base_url)")
        if response.status_code != 200:
            raise ProviderError(
                f"http_{response.status_code}", f"GET {path}: {error_type(response)} ({response.status_code})"
            )
        return decode_json(response), response

    async def aclose(self) -> None:
        return None
