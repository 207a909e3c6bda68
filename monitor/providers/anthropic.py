"""The `anthropic` platform: an organization's API keys through Anthropic's Admin API
(docs/relay-adapters.md).

A poll lists every key (`GET /v1/organizations/api_keys`, 1000 a page, `after_id` cursor
paging while `has_more`) and reads the messages usage report for a closed window of settled
1-minute buckets; each key's spend is the sum of its priced usage rows (`spend_from_logs`; see
`anthropic_usage` for how money is derived and calibrated). Keys are never shown again after
creation: only `partial_key_hint`; a key configured under `keys:` whose hint matches is hashed.

Quarantine sets the key `inactive` (`POST /v1/organizations/api_keys/{id} {"status":
"inactive"}`), restore sets it `active` again; both are verified by reading the key back. The
Admin API cannot delete keys: with `action: delete` the key is archived instead, and keywatch
never reactivates an archived key.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from monitor.model import Observation, PollResult, RequestRecord, RevokeOutcome, Skip, TokenStatus
from monitor.providers.anthropic_api import AdminAPI, error_type
from monitor.providers.anthropic_usage import USAGE_SKIP, AnthropicUsage
from monitor.providers.base import ProviderError
from monitor.providers.http import RelayHTTP, RelayResponse, decode_json
from monitor.providers.logwindow import LogWindow
from monitor.providers.parse import MAX_TEXT, Malformed, entry_print, opt_time, req_str, skip_entry
from monitor.providers.relaytime import relay_now
from monitor.secret import key_sha256
from monitor.settings import ProviderSettings

__all__ = ["KEYS_PATH", "MAX_KEYS", "AnthropicProvider"]

log = logging.getLogger("keywatch.providers.anthropic")

KEYS_PATH = "/v1/organizations/api_keys"
KEYS_PAGE = 1000  # the list's maximum (default 20)
MAX_KEYS = 1_000_000  # more keys than any organization holds: a relay that pages forever
STATUSES: dict[str, TokenStatus] = {
    "active": "active",
    "inactive": "disabled",
    "archived": "revoked",
    "expired": "expired",
}
REFUSED = frozenset({"inactive", "archived", "expired"})  # statuses whose key the API refuses
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # what may go into a URL path


class AnthropicProvider:
    kind = "anthropic"
    # Usage windows: 1-minute buckets at least `usage_settle` s old. Anthropic documents usage
    # as "typically" in the report within 5 minutes; a bucket is read once, so twice that.
    usage_settle = 600.0
    usage_overlap = 600.0
    usage_max_span = 86_400.0  # a long gap is caught up a day at a time
    usage_initial_lookback = 3600.0

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
        self._api = AdminAPI(http, settings.admin_token)
        self._usage = AnthropicUsage(self._api, max_pages=settings.max_pages)
        self._window = LogWindow(
            lag=self.usage_settle,
            overlap=self.usage_overlap,
            max_span=self.usage_max_span,
            initial_lookback=self.usage_initial_lookback,
            cursor=log_cursor,
            align=60,
        )
        self._now = now
        self._seen: dict[str, tuple[bytes | None, Observation]] = {}  # last cycle's entries (no secrets)
        self._stored: set[tuple[str, str]] = set()  # rows of the last stored window's overlap
        self._hashes: dict[tuple[str, str], str | None] = {}  # (name, hint) -> key hash

    # --- polling -------------------------------------------------------------------------------
    async def poll(self) -> PollResult:
        entries, first = await self._list_keys()
        observations: list[Observation] = []
        skipped: list[Skip] = []
        previous: dict[str, tuple[bytes | None, Observation]] = self._seen
        seen: dict[str, tuple[bytes | None, Observation]] = {}
        for entry in entries:
            key_id = entry.get("id") if isinstance(entry, dict) else None
            printed = entry_print(entry)
            before = previous.get(key_id) if isinstance(key_id, str) else None
            if before is not None and printed is not None and before[0] == printed:
                obs = before[1]  # the same object tells ingest that nothing changed
            else:
                try:
                    obs = self._parse_key(entry)
                except Malformed as exc:
                    skipped.append(skip_entry(entry, exc))
                    continue
            if obs.token_id in seen:
                continue  # a key listed twice (pages that overlap) is one key
            seen[obs.token_id] = (printed, obs)
            observations.append(obs)
        self._seen = seen
        names = {o.token_id: o.name for o in observations}
        records, usage_skips, committed = await self._poll_usage(relay_now(first, self._now()), names)
        return PollResult(
            observations,
            [*skipped, *usage_skips],
            complete=all(s.token_id is not None for s in skipped),
            requests=records,
            committed=committed,
            relay_time=relay_now(first, None),
        )

    async def _list_keys(self) -> tuple[list[Any], RelayResponse]:
        entries: list[Any] = []
        after: str | None = None
        first: RelayResponse | None = None
        cursors: set[str] = set()
        while True:
            if len(cursors) >= self._settings.max_pages:
                raise ProviderError("too_large", f"GET {KEYS_PATH}: more than {len(cursors)} pages of keys")
            params: dict[str, Any] = {"limit": KEYS_PAGE, **({"after_id": after} if after else {})}
            body, response = await self._api.get_json(KEYS_PATH, params)
            first = first or response
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise ProviderError("malformed", f"GET {KEYS_PATH}: no 'data' list")
            entries.extend(data)
            if len(entries) > MAX_KEYS:
                raise ProviderError("too_large", f"GET {KEYS_PATH}: more than {MAX_KEYS} keys")
            if body.get("has_more") is not True:
                return entries, first
            last = body.get("last_id")
            if not isinstance(last, str) or not last or not data:
                raise ProviderError("malformed", f"GET {KEYS_PATH}: has_more without a last_id to go on from")
            if last in cursors:
                raise ProviderError("malformed", f"GET {KEYS_PATH}: the after_id cursor repeats")
            cursors.add(last)
            after = last

    def _parse_key(self, entry: Any) -> Observation:
        if not isinstance(entry, dict):
            raise Malformed("list entry is not an object")
        key_id = req_str(entry, "id")
        if not _KEY_ID.fullmatch(key_id):
            raise Malformed("'id' is not an API key id")
        raw_name = entry.get("name")
        if not isinstance(raw_name, str) or not raw_name:
            raise Malformed("missing or invalid 'name'")
        name = raw_name[:MAX_TEXT]  # the console allows 500 characters
        raw_status = entry.get("status")
        status = STATUSES.get(raw_status) if isinstance(raw_status, str) else None
        if status is None:
            raise Malformed(f"unknown 'status' {str(raw_status)[:20]!r}")
        return Observation(
            token_id=key_id,
            name=name,
            status=status,
            created_at=opt_time(entry, "created_at"),
            expires_at=opt_time(entry, "expires_at"),
            key_sha256=self._key_hash(name, entry.get("partial_key_hint")),
            spend_from_logs=True,
        )

    def _key_hash(self, name: str, hint: object) -> str | None:
        """SHA-256 of the key configured for `name` under `keys:`, if the listed hint
        (`sk-ant-api03-R2D...igAA`: its start and end) says it is this key."""
        key = self._settings.keys.get(name)
        if key is None or not isinstance(hint, str) or hint.count("...") != 1 or len(hint) > 64:
            return None
        if (name, hint) not in self._hashes:
            head, tail = hint.split("...")
            text = key.reveal()
            fits = bool(head) and bool(tail) and text.startswith(head) and text.endswith(tail)
            self._hashes[(name, hint)] = key_sha256(text) if fits else None
            if not fits:
                log.warning("%s: the key configured for %r is not the one Anthropic lists", self.name, name)
        return self._hashes[(name, hint)]

    async def _poll_usage(
        self, now: float, names: dict[str, str]
    ) -> tuple[list[RequestRecord], list[Skip], Callable[[], None] | None]:
        """The window's usage rows, and what to do once they are stored: move the cursor."""
        await self._usage.calibrate(now)
        window = self._window.next(now)
        if window is None:
            return [], [], None
        start, end = window
        try:
            read = await self._usage.read(start, end, names, self._stored, int(end - self._window.overlap))
        except ProviderError as exc:
            return [], [Skip(USAGE_SKIP, exc.reason, str(exc))], None  # read again next cycle

        def committed() -> None:
            self._window.advance(end)
            self._stored = read.carried

        return read.records, read.skipped, committed

    # --- quarantine ----------------------------------------------------------------------------
    async def _status(self, key_id: str) -> str | None:
        """The key's status as the Admin API reads it; None when there is no such key."""
        path = f"{KEYS_PATH}/{key_id}"
        response = await self._api.get(path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ProviderError(
                f"http_{response.status_code}",
                f"GET {KEYS_PATH}/…: {error_type(response)} ({response.status_code})",
            )
        body = decode_json(response)
        status = body.get("status") if isinstance(body, dict) else None
        if not isinstance(status, str) or len(status) > 40:
            raise ProviderError("malformed", f"GET {KEYS_PATH}/…: no status")
        return status

    async def _set_status(self, key_id: str, status: str) -> RelayResponse:
        return await self._api.post(f"{KEYS_PATH}/{key_id}", {"status": status})

    async def revoke(self, token_id: str, *, delete: bool = False) -> RevokeOutcome:
        """`inactive` (reversible); with delete=True `archived` (the API has no delete)."""
        if not _KEY_ID.fullmatch(token_id):
            return RevokeOutcome(False, False, f"not an Anthropic API key id: {token_id[:20]!r}")
        target, done = ("archived", "archived") if delete else ("inactive", "set inactive")
        if not delete and await self._status(token_id) in REFUSED:
            # made unusable by someone else: keywatch changes nothing (nor undoes it later)
            return RevokeOutcome(True, True, "already inactive at Anthropic before keywatch acted")
        response = await self._set_status(token_id, target)
        if response.status_code == 404:
            return RevokeOutcome(False, False, "no such API key in the organization")
        if response.status_code != 200:
            now = await self._status(token_id)
            if now == target or (not delete and now in REFUSED):
                return RevokeOutcome(True, True, f"the key already reads {now}")
            return RevokeOutcome(False, False, f"Anthropic refused the change: {error_type(response)}")
        now = await self._status(token_id)
        if now == target or now is None:
            return RevokeOutcome(True, True, f"{done}; the key reads {now or 'gone'}")
        return RevokeOutcome(True, False, f"{done}; the key still reads {now}")

    async def restore(self, token_id: str) -> RevokeOutcome:
        """`active` again; verified when the key reads active. Archived and expired keys stay."""
        if not _KEY_ID.fullmatch(token_id):
            return RevokeOutcome(False, False, f"not an Anthropic API key id: {token_id[:20]!r}")
        before = await self._status(token_id)
        if before is None:
            return RevokeOutcome(False, False, "no such API key in the organization")
        if before == "active":
            return RevokeOutcome(True, True, "the key already reads active")
        if before == "archived":
            return RevokeOutcome(
                False, False, "the key is archived: keywatch never reactivates an archived key"
            )
        if before == "expired":
            return RevokeOutcome(False, False, "the key has expired: issue a new one")
        response = await self._set_status(token_id, "active")
        if response.status_code != 200:
            return RevokeOutcome(False, False, f"Anthropic refused the change: {error_type(response)}")
        after = await self._status(token_id)
        if after == "active":
            return RevokeOutcome(True, True, "set active; the key reads active")
        # What the Admin API reads back is authoritative: not active is a failed restore.
        return RevokeOutcome(False, False, f"the key still reads {after or 'gone'} after setting it active")

    async def verify_refused(self, token_id: str) -> bool | None:
        """True once the key reads inactive, archived or expired (or is gone)."""
        if not _KEY_ID.fullmatch(token_id):
            return False
        status = await self._status(token_id)
        return status is None or status in REFUSED

    async def aclose(self) -> None:
        return None
