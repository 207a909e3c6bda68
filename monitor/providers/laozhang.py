"""The `laozhang` relay: the token API of the product's token guide (docs/relay-adapters.md).

Tokens come from one admin list call. Usage comes from the list entries when the relay puts
`today_usage`/`month_usage` on them; otherwise from `GET /v1/usage` called with each token's own
key (configured by the operator, since keys are shown only once), with bounded concurrency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from monitor.model import Observation, PollResult, RevokeOutcome, Skip, TokenLimits, TokenStatus
from monitor.pacing import Pacer
from monitor.providers.base import ProviderError
from monitor.providers.http import RelayHTTP, decode_json
from monitor.providers.parse import (
    Malformed,
    entry_print,
    opt_int,
    opt_money,
    opt_time,
    req_str,
    skip_entry,
    str_list,
)
from monitor.providers.relaytime import relay_now
from monitor.secret import Secret, key_sha256
from monitor.settings import ProviderSettings

__all__ = ["LaozhangProvider", "parse_token"]

log = logging.getLogger("keywatch.providers.laozhang")

_STATUSES: Mapping[str, TokenStatus] = {
    "active": "active",
    "unused": "unused",
    "not used": "unused",
    "revoked": "revoked",
    "expired": "expired",
    "disabled": "disabled",
}


class LaozhangProvider:
    kind = "laozhang"

    def __init__(self, settings: ProviderSettings, http: RelayHTTP) -> None:
        self.name = settings.name
        self._settings = settings
        self._http = http
        self._keys: dict[str, Secret] = dict(settings.keys)
        self._hashes = {name: key_sha256(key.reveal()) for name, key in self._keys.items() if key}
        self._ids_to_names: dict[str, str] = {}
        self._previous: dict[str, tuple[bytes, Observation]] = {}  # id -> (entry_print, parsed)

    async def poll(self) -> PollResult:
        response = await self._http.request("GET", "/v1/api-keys", credential=self._settings.admin_token)
        if response.status_code != 200:
            raise ProviderError(
                f"http_{response.status_code}", f"GET /v1/api-keys: HTTP {response.status_code}"
            )
        body = decode_json(response)
        entries = body.get("data") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise ProviderError("malformed", "GET /v1/api-keys: no 'data' list in the answer")

        observations: list[Observation] = []
        skipped: list[Skip] = []
        unaccounted = 0  # entries that do not even say which token they are
        need_usage: list[Observation] = []
        seen: dict[str, tuple[bytes, Observation]] = {}
        pacer = Pacer()  # 100,000 entries are a second of parsing: the event loop gets turns
        for entry in entries:
            await pacer.turn()
            try:
                key = entry.get("id") if isinstance(entry, dict) else None
                previous = self._previous.get(key) if isinstance(key, str) else None
                printed = entry_print(entry)
                # An entry equal to last cycle's parses to the same Observation: reuse the object,
                # which also tells ingest that nothing changed (idle fleets cost a compare).
                if previous is not None and printed is not None and previous[0] == printed:
                    obs = previous[1]
                else:
                    obs = parse_token(entry, self._hashes)
            except Malformed as exc:
                skipped.append(skip_entry(entry, exc))
                unaccounted += skipped[-1].token_id is None
                continue
            self._ids_to_names[obs.token_id] = obs.name
            if printed is not None:
                seen[obs.token_id] = (printed, obs)
            # A revoked or expired token's key is refused and its usage can no longer move.
            if (
                obs.month_usd is None
                and obs.today_usd is None
                and obs.name in self._keys
                and obs.status in _LIVE
            ):
                need_usage.append(obs)
            else:
                observations.append(obs)
        self._previous = seen
        if need_usage:
            fetched, failed = await self._usage_by_key(need_usage)
            observations.extend(fetched)
            skipped.extend(failed)
        # Complete: every token the relay listed is accounted for (a token whose figures could
        # not be read is still listed). Only an entry that names no token leaves doubt.
        return PollResult(
            observations, skipped, complete=unaccounted == 0, relay_time=relay_now(response, None)
        )

    async def _usage_by_key(self, tokens: list[Observation]) -> tuple[list[Observation], list[Skip]]:
        """GET /v1/usage with each token's own key, `concurrency` at a time."""
        queue = list(reversed(tokens))
        done: list[Observation] = []
        failed: list[Skip] = []

        async def worker() -> None:
            while queue:
                obs = queue.pop()
                try:
                    done.append(await self._usage_of(obs))
                except ProviderError as exc:
                    failed.append(Skip(obs.name, exc.reason, str(exc), token_id=obs.token_id))
                except Malformed as exc:
                    failed.append(Skip(obs.name, exc.reason, str(exc), token_id=obs.token_id))

        workers = min(self._settings.concurrency, len(tokens))
        await asyncio.gather(*(worker() for _ in range(workers)))
        return done, failed

    async def _usage_of(self, obs: Observation) -> Observation:
        response = await self._http.request("GET", "/v1/usage", credential=self._keys[obs.name], admin=False)
        if response.status_code in (401, 403):
            raise ProviderError("key_rejected", "GET /v1/usage: the token's key was refused")
        if response.status_code != 200:
            raise ProviderError(f"http_{response.status_code}", f"GET /v1/usage: HTTP {response.status_code}")
        body = decode_json(response)
        if not isinstance(body, dict):
            raise Malformed("usage answer is not an object")
        today, month = opt_money(body, "today_usage"), opt_money(body, "month_usage")
        if today is None and month is None:
            raise Malformed("missing 'today_usage' and 'month_usage'")
        return replace(obs, today_usd=today, month_usd=month)

    async def revoke(self, token_id: str, *, delete: bool = False) -> RevokeOutcome:
        """The guide has one revoke: DELETE, which revokes for good (there is no disable)."""
        response = await self._http.request(
            "DELETE", f"/v1/api-keys/{token_id}", credential=self._settings.admin_token
        )
        if response.status_code in (200, 204):
            verified = await self.verify_refused(token_id)
            return RevokeOutcome(True, bool(verified), "revoked" if verified else "revoked, not verified")
        if response.status_code == 404:
            return RevokeOutcome(False, False, "no such token at the relay")
        return RevokeOutcome(False, False, f"HTTP {response.status_code}")

    async def restore(self, token_id: str) -> RevokeOutcome:
        return RevokeOutcome(
            False, False, "laozhang cannot re-enable a key: its quarantine deletes it for good"
        )

    async def verify_refused(self, token_id: str) -> bool | None:
        key = self._keys.get(self._ids_to_names.get(token_id, ""))
        if not key:
            return None
        response = await self._http.request("GET", "/v1/models", credential=key, admin=False)
        return response.status_code == 401

    async def aclose(self) -> None:
        return None


def parse_token(entry: Any, hashes: Mapping[str, str]) -> Observation:
    """One entry of GET /v1/api-keys."""
    if not isinstance(entry, dict):
        raise Malformed("list entry is not an object")
    token_id, name = req_str(entry, "id"), req_str(entry, "name")
    status = _STATUSES.get(str(entry.get("status", "")).lower())
    if status is None:
        raise Malformed(f"unknown status {str(entry.get('status'))[:20]!r}")
    return Observation(
        token_id=token_id,
        name=name,
        status=status,
        created_at=opt_time(entry, "created_at"),
        last_used_at=opt_time(entry, "last_used_at"),
        expires_at=opt_time(entry, "expires_at"),
        today_usd=opt_money(entry, "today_usage"),
        month_usd=opt_money(entry, "month_usage"),
        today_requests=opt_int(entry, "today_requests"),
        limits=_limits(entry.get("limits")),
        ip_whitelist=str_list(entry, "ip_whitelist"),
        key_sha256=hashes.get(name),
    )


_LIVE = ("active", "unused")


def _limits(raw: Any) -> TokenLimits:
    if raw is None:
        return TokenLimits()
    if not isinstance(raw, dict):
        raise Malformed("'limits' is not an object")
    daily = raw.get("daily_limit") or {}
    monthly = raw.get("monthly_limit") or {}
    if not isinstance(daily, dict) or not isinstance(monthly, dict):
        raise Malformed("'limits' windows are not objects")
    return TokenLimits(
        daily_usd=opt_money(daily, "amount"),
        monthly_usd=opt_money(monthly, "amount"),
        daily_requests=opt_int(daily, "requests"),
        allowed_models=str_list(raw, "allowed_models"),
    )
