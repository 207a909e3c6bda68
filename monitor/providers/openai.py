"""The `openai` relay: an OpenAI project's API keys through the Admin API (docs/relay-adapters.md).

A poll lists the project's keys (`.../projects/{project_id}/api_keys`, `after` paging) and reads
usage for a closed window of 1-minute buckets; each key's spend is the sum of its priced usage
rows (`spend_from_logs`, see `openai_usage` for how money is derived and calibrated).

OpenAI has no disable: quarantine deletes the key, for good, and only when the operator asked
for it (`response.action: delete`, or the provider's `action: delete`), which reaches `revoke`
as `delete=True`. Verified when the key is gone from the project.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from monitor.model import Observation, PollResult, RequestRecord, RevokeOutcome, Skip
from monitor.providers.base import ProviderError
from monitor.providers.http import RelayHTTP, RelayResponse, decode_json
from monitor.providers.logwindow import LogWindow
from monitor.providers.openai_usage import OpenAIUsage
from monitor.providers.parse import Malformed, opt_time, req_str
from monitor.providers.relaytime import relay_now
from monitor.settings import ProviderSettings

__all__ = ["NO_DISABLE", "USAGE_SKIP", "OpenAIProvider"]

NO_DISABLE = "openai has no disable; set response.action: delete to allow deleting keys"
USAGE_SKIP = "(usage)"  # the Skip.token of a usage window that could not be read this cycle
_KEYS_PAGE = 100


class OpenAIProvider:
    kind = "openai"
    # Usage windows: 1-minute buckets at least `usage_settle` s old (OpenAI fills them late).
    usage_settle = 300.0
    usage_overlap = 600.0
    usage_max_span = 1440 * 60.0  # one page of 1m buckets
    usage_initial_lookback = 3600.0

    def __init__(
        self,
        settings: ProviderSettings,
        http: RelayHTTP,
        *,
        log_cursor: float | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not settings.project_id:
            raise ValueError(f"providers.{settings.name}: project_id is required for kind openai")
        self.name = settings.name
        self._settings = settings
        self._http = http
        self._keys_path = f"/v1/organization/projects/{settings.project_id}/api_keys"
        self._usage = OpenAIUsage(http, settings.admin_token, settings.project_id)
        self._window = LogWindow(
            lag=self.usage_settle,
            overlap=self.usage_overlap,
            max_span=self.usage_max_span,
            initial_lookback=self.usage_initial_lookback,
            cursor=log_cursor,
            align=60,
        )
        self._now = now
        self._seen: dict[str, tuple[Any, Observation]] = {}  # last cycle's key entries (no secrets)
        self._stored: set[tuple[str, str]] = set()  # rows of the last stored window's overlap

    async def poll(self) -> PollResult:
        entries, first = await self._list_keys()
        observations: list[Observation] = []
        skipped: list[Skip] = []
        previous, seen = self._seen, {}
        for entry in entries:
            key_id = entry.get("id") if isinstance(entry, dict) else None
            before = previous.get(key_id) if isinstance(key_id, str) else None
            if before is not None and before[0] == entry:
                obs = before[1]  # the same object tells ingest that nothing changed
            else:
                try:
                    obs = _parse_key(entry)
                except Malformed as exc:
                    label = entry.get("name") or key_id if isinstance(entry, dict) else None
                    skipped.append(Skip(str(label or "?"), "malformed", str(exc)))
                    continue
            seen[obs.token_id] = (entry, obs)
            observations.append(obs)
        self._seen = seen
        names = {o.token_id: o.name for o in observations}
        records, usage_skips, committed = await self._poll_usage(relay_now(first, self._now()), names)
        return PollResult(
            observations,
            [*skipped, *usage_skips],
            complete=not skipped,
            requests=records,
            committed=committed,
        )

    async def _list_keys(self) -> tuple[list[Any], RelayResponse]:
        entries: list[Any] = []
        after: str | None = None
        first: RelayResponse | None = None
        seen: set[str] = set()
        while True:
            if len(seen) >= self._settings.max_pages:
                raise ProviderError(
                    "too_large", f"GET {self._keys_path}: more than {len(seen)} pages of keys"
                )
            params: dict[str, Any] = {"limit": _KEYS_PAGE, **({"after": after} if after else {})}
            response = await self._http.request(
                "GET", self._keys_path, credential=self._settings.admin_token, params=params
            )
            if response.status_code != 200:
                raise ProviderError(
                    f"http_{response.status_code}", f"GET {self._keys_path}: HTTP {response.status_code}"
                )
            first = first or response
            body = decode_json(response)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise ProviderError("malformed", f"GET {self._keys_path}: no 'data' list")
            entries.extend(data)
            last = body.get("last_id")
            if not body.get("has_more") or not isinstance(last, str) or last in seen:
                return entries, first
            seen.add(last)
            after = last

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
            records, carried = await self._usage.records(
                start, end, names, self._stored, int(end - self._window.overlap)
            )
        except ProviderError as exc:
            return [], [Skip(USAGE_SKIP, exc.reason, str(exc))], None  # read again next cycle

        def committed() -> None:
            self._window.advance(end)
            self._stored = carried

        return records, [], committed

    async def revoke(self, token_id: str, *, delete: bool = False) -> RevokeOutcome:
        if not delete:
            return RevokeOutcome(done=False, verified=False, detail=NO_DISABLE)
        response = await self._http.request(
            "DELETE", f"{self._keys_path}/{token_id}", credential=self._settings.admin_token
        )
        if response.status_code == 404:
            return RevokeOutcome(False, False, "no such key in the project")
        if response.status_code != 200:
            return RevokeOutcome(False, False, f"HTTP {response.status_code}")
        body = decode_json(response)
        if not isinstance(body, dict) or body.get("deleted") is not True:
            return RevokeOutcome(False, False, "the relay did not confirm the deletion")
        verified = bool(await self.verify_refused(token_id))
        return RevokeOutcome(True, verified, "deleted" if verified else "deleted; the key is still listed")

    async def restore(self, token_id: str) -> RevokeOutcome:
        return RevokeOutcome(
            False, False, "OpenAI project keys cannot be re-enabled: a quarantine deletes the key"
        )

    async def verify_refused(self, token_id: str) -> bool | None:
        """True once the key is gone from the project (a deleted key can never be used again)."""
        response = await self._http.request(
            "GET", f"{self._keys_path}/{token_id}", credential=self._settings.admin_token
        )
        return response.status_code == 404

    async def aclose(self) -> None:
        return None


def _parse_key(entry: Any) -> Observation:
    if not isinstance(entry, dict):
        raise Malformed("list entry is not an object")
    key_id, name = req_str(entry, "id"), req_str(entry, "name")
    last_used = opt_time(entry, "last_used_at")
    return Observation(
        token_id=key_id,
        name=name,
        status="active" if last_used is not None else "unused",
        created_at=opt_time(entry, "created_at"),
        last_used_at=last_used,
        spend_from_logs=True,
    )
