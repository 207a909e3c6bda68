"""The `oneapi` relay: one-api and consoles built on it (docs/relay-adapters.md).

A poll lists every token (`GET /api/token/?p=N`, 10 a page from p=0 until a short page), then
reads the request log for a closed window (`GET /api/log/self?type=2`, see `logwindow`). Spend
is `used_quota` (a lifetime counter) — except for unlimited tokens, which one-api never charges
to `used_quota`: their spend is the sum of their new log rows (`spend_from_logs`).

Quarantine disables (`PUT /api/token/?status_only=true {id, status: 2}`; `delete` deletes) and
is verified by calling the relay with the token's key (`GET /v1/models`) until it is refused:
one-api may serve a disabled key from its token cache for up to 600 s, so `verify_refused`
answers False until then and the responder keeps asking.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

from monitor.model import Observation, PollResult, RequestRecord, RevokeOutcome, Skip
from monitor.pacing import Pacer
from monitor.providers.base import ProviderError
from monitor.providers.console.api import ConsoleAPI, ConsoleRejected
from monitor.providers.console.keys import ConsoleKeys
from monitor.providers.console.logs import parse_log_row, with_row_ids
from monitor.providers.console.paging import Walk, walk_pages
from monitor.providers.console.tokens import Dialect, parse_console_token
from monitor.providers.http import RelayHTTP, RelayResponse
from monitor.providers.logwindow import LogWindow
from monitor.providers.parse import Malformed, entry_print, skip_entry
from monitor.providers.relaytime import relay_now
from monitor.secret import Secret
from monitor.settings import ProviderSettings

__all__ = ["LOG_SKIP", "OneAPIProvider"]

log = logging.getLogger("keywatch.providers.oneapi")

LOG_SKIP = "(request log)"  # the Skip.token of a log window that could not be read this cycle
_PAGE_CONCURRENCY = 8


class OneAPIProvider:
    kind = "oneapi"
    dialect: ClassVar[Dialect] = "oneapi"
    page_size: ClassVar[int | None] = 10  # fixed by one-api (ItemsPerPage), no total in the answer
    list_params: ClassVar[dict[str, Any]] = {}
    probe_path: ClassVar[str] = "/v1/models"  # a relay call with the key: 401 once refused
    # Log windows end `log_lag` s in the relay's past and re-read `log_overlap` s before the last end.
    log_lag: ClassVar[float] = 5.0
    log_overlap: ClassVar[float] = 60.0
    log_max_span: ClassVar[float] = 3600.0
    log_initial_lookback: ClassVar[float] = 3600.0

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
        self._api = ConsoleAPI(http, settings.admin_token, user_id=self._user_id(settings))
        self._quota_per_unit = settings.quota_per_unit
        self._keys = ConsoleKeys(
            self._api,
            reveal=settings.reveal_keys,
            batch=self.dialect == "newapi",
            concurrency=settings.concurrency,
        )
        self._window = LogWindow(
            lag=self.log_lag,
            overlap=self.log_overlap,
            max_span=self.log_max_span,
            initial_lookback=self.log_initial_lookback,
            cursor=log_cursor,
        )
        self._now = now
        self._ids_by_name: dict[str, str] = {}  # current and earlier names: logs name tokens by name
        self._overlap_ids: set[str] = set()  # request ids stored last cycle that the next window re-reads
        self._seen: dict[str, tuple[bytes | None, Observation]] = {}  # last cycle's entry_print
        self._previous: set[str] = set()  # token ids of the last complete list

    def _user_id(self, settings: ProviderSettings) -> int | None:
        return None

    # --- poll ----------------------------------------------------------------------------------
    async def poll(self) -> PollResult:
        await self._prepare()
        walk = await walk_pages(
            self._token_page,
            page_size=self.page_size,
            concurrency=_PAGE_CONCURRENCY,
            what="token list",
            max_pages=self._settings.max_pages,
        )
        observations, skipped = await self._parse_tokens(walk.items)
        ids = {o.token_id for o in observations} | {s.token_id for s in skipped if s.token_id is not None}
        # Complete: every listed token accounted for (a skipped entry that names its token is
        # still listed); an unreadable request log does not make the token list partial.
        accounted = all(s.token_id is not None for s in skipped)
        complete = accounted and walk.consistent and await self._vanished_really(ids)
        if complete:
            self._previous = ids
        relay_time = relay_now(walk.first, None)
        records, log_skips, committed = await self._poll_logs(relay_time or self._now())
        return PollResult(
            observations,
            [*skipped, *log_skips],
            complete,
            requests=records,
            committed=committed,
            relay_time=relay_time,
        )

    async def _prepare(self) -> None:
        """Per-cycle set-up a dialect needs before listing (new-api: its quota_per_unit)."""

    async def _token_page(self, p: int) -> tuple[Any, RelayResponse]:
        return await self._api.call("GET", "/api/token/", params={"p": p, **self.list_params})

    async def _parse_tokens(self, entries: list[Any]) -> tuple[list[Observation], list[Skip]]:
        unique: dict[str, Any] = {}
        for entry in entries:  # a page that shifted while paging repeats an entry: keep one
            key = str(entry.get("id")) if isinstance(entry, dict) else None
            unique.setdefault(key or f"?{len(unique)}", entry)
        revealed: dict[str, str] = {}
        if self._settings.reveal_keys:
            listed = [(tid, e.get("key")) for tid, e in unique.items() if isinstance(e, dict)]
            revealed = await self._keys.reveal(self._keys.wanted(listed))
        observations: list[Observation] = []
        skipped: list[Skip] = []
        previous, seen = self._seen, {}
        qpu = self._quota_per_unit
        pacer = Pacer()  # 100,000 entries are a second of parsing: the event loop gets turns
        for token_id, entry in unique.items():
            await pacer.turn()
            listed_key = entry.get("key") if isinstance(entry, dict) else None
            digest = revealed.get(token_id) or self._keys.hash_for(token_id, listed_key)
            # An entry as it was last cycle (its key aside: never kept) parses to the same
            # Observation; reusing the object also tells ingest that nothing changed.
            fields = entry_print(entry, without="key")
            before = previous.get(token_id)
            if (
                before is not None
                and fields is not None
                and before[0] == fields
                and before[1].key_sha256 == digest
            ):
                obs = before[1]
            else:
                try:
                    obs = parse_console_token(
                        entry, dialect=self.dialect, quota_per_unit=qpu, key_sha256=digest
                    )
                except Malformed as exc:
                    skipped.append(skip_entry(entry, exc))
                    continue
            seen[token_id] = (fields, obs)
            observations.append(obs)
            self._ids_by_name[obs.name] = obs.token_id
        self._seen = seen
        return observations, skipped

    async def _vanished_really(self, ids: set[str]) -> bool:
        """A token deleted while paging shifts the pages after it, hiding another token: before
        the list is called complete, each token that disappeared is looked up by id."""
        gone = self._previous - ids
        if not gone:
            return True

        async def exists(token_id: str) -> bool:
            try:
                await self._api.call("GET", f"/api/token/{token_id}")
            except ConsoleRejected:
                return False  # "record not found"
            return True

        found = await asyncio.gather(*(exists(t) for t in gone))
        if any(found):
            log.info(
                "%s: the token list shifted while paging; not treating missing tokens as deleted", self.name
            )
            return False
        return True

    # --- request log ---------------------------------------------------------------------------
    async def _poll_logs(
        self, now: float
    ) -> tuple[list[RequestRecord], list[Skip], Callable[[], None] | None]:
        """The window's rows, and what to do once they are stored: move the cursor past them."""
        window = self._window.next(now)
        if window is None:
            return [], [], None
        start, end = window
        params = {"type": 2, "start_timestamp": start, "end_timestamp": end, **self.list_params}

        async def page(p: int) -> tuple[Any, RelayResponse]:
            return await self._api.call("GET", "/api/log/self", params={"p": p, **params})

        try:
            walk: Walk = await walk_pages(
                page,
                page_size=self.page_size,
                concurrency=_PAGE_CONCURRENCY,
                what="request log",
                max_pages=self._settings.max_pages,
            )
        except ProviderError as exc:
            return [], [Skip(LOG_SKIP, exc.reason, str(exc))], None  # read again next cycle
        parsed = []
        bad = 0
        qpu, names, stored = self._quota_per_unit, self._ids_by_name, self._overlap_ids
        overlap_from = end - self._window.overlap
        carried: set[str] = set()  # request ids of this window that the next one reads again
        for row in walk.items:
            rid = row.get("request_id") if isinstance(row, dict) else None
            if rid is not None and rid in stored:
                # stored by the previous window: parsing it again would be wasted work
                if _ts(row) >= overlap_from:
                    carried.add(rid)
                continue
            try:
                record = parse_log_row(row, dialect=self.dialect, quota_per_unit=qpu, ids_by_name=names)
            except Malformed:
                bad += 1
                continue
            parsed.append((record, row))
            if record.request_id and record.ts >= overlap_from:
                carried.add(record.request_id)
        records = with_row_ids(parsed)

        def committed() -> None:
            self._window.advance(end)
            self._overlap_ids = carried

        skips = [Skip(LOG_SKIP, "malformed", f"{bad} log rows without the documented fields")] if bad else []
        return records, skips, committed

    # --- quarantine ----------------------------------------------------------------------------
    async def revoke(self, token_id: str, *, delete: bool = False) -> RevokeOutcome:
        if not token_id.isdigit():
            return RevokeOutcome(False, False, f"not a {self.kind} token id: {token_id[:20]!r}")
        await self._keys.for_verification(token_id)  # before the key becomes unrevealable
        try:
            if delete:
                await self._api.call("DELETE", f"/api/token/{token_id}")
            else:
                await self._api.call(
                    "PUT",
                    "/api/token/",
                    params={"status_only": "true"},
                    json={"id": int(token_id), "status": 2},
                )
        except ConsoleRejected as exc:
            return RevokeOutcome(False, False, str(exc))
        done = "deleted" if delete else "disabled"
        verified = await self.verify_refused(token_id)
        if verified:
            return RevokeOutcome(True, True, f"{done}; the relay refuses the key")
        if verified is None:
            return RevokeOutcome(True, False, f"{done}; not verified: no key to try (set reveal_keys: true)")
        return RevokeOutcome(True, False, f"{done}; pending verification: {self._stale_note()}")

    async def restore(self, token_id: str) -> RevokeOutcome:
        """Status back to enabled (1); verified when the relay takes the key again."""
        if not token_id.isdigit():
            return RevokeOutcome(False, False, f"not a {self.kind} token id: {token_id[:20]!r}")
        try:
            await self._api.call(
                "PUT", "/api/token/", params={"status_only": "true"}, json={"id": int(token_id), "status": 1}
            )
        except ConsoleRejected as exc:
            return RevokeOutcome(False, False, str(exc))
        key = self._keys.held(token_id) or await self._keys.for_verification(token_id)
        if key is None:
            return RevokeOutcome(True, False, "enabled; not verified: no key to try (set reveal_keys: true)")
        accepted = not await self._refused(key)
        self._keys.refused(token_id)  # done with the key either way: nothing more to verify with it
        if accepted:
            return RevokeOutcome(True, True, "enabled; the relay takes the key again")
        return RevokeOutcome(True, False, f"enabled; the relay still refuses the key: {self._stale_note()}")

    def _stale_note(self) -> str:
        return "one-api may serve the key from its token cache for up to 600 s"

    async def verify_refused(self, token_id: str) -> bool | None:
        key = self._keys.held(token_id) or await self._keys.for_verification(token_id)
        if key is None:
            return None
        refused = await self._refused(key)
        if refused:
            self._keys.refused(token_id)
        return refused

    async def _refused(self, key: Secret) -> bool:
        return await self._api.probe(self.probe_path, key) in (401, 403)

    async def aclose(self) -> None:
        return None


def _ts(row: dict[str, Any]) -> float:
    value = row.get("created_at")
    return float(value) if isinstance(value, int | float) else 0.0
