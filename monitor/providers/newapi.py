"""The `newapi` relay: new-api (docs/relay-adapters.md), one-api's console with these differences:

- every /api call carries `New-Api-User: <user_id>`;
- pages are `{items, total, page, page_size}` (p from 1, up to 100 a page) on current builds and
  plain arrays (p from 0) on builds before mid-2025: `console.paging` tells them apart;
- `used_quota` counts unlimited tokens too, so every token's spend is its `used_quota`;
- `quota_per_unit` is read from `/api/status` (the setting is the fallback);
- keys are masked in lists and revealed in batches;
- a disable takes effect at once; it is verified with `GET /api/usage/token/` and the key.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from monitor.providers.base import ProviderError
from monitor.providers.console.tokens import Dialect
from monitor.providers.oneapi import OneAPIProvider
from monitor.settings import ProviderSettings

__all__ = ["NewAPIProvider"]

log = logging.getLogger("keywatch.providers.newapi")

PAGE_SIZE = 100  # new-api's maximum


class NewAPIProvider(OneAPIProvider):
    kind = "newapi"
    dialect: ClassVar[Dialect] = "newapi"
    page_size: ClassVar[int | None] = None  # legacy plain arrays: whatever size the build honours
    list_params: ClassVar[dict[str, Any]] = {"page_size": PAGE_SIZE, "size": PAGE_SIZE}
    probe_path: ClassVar[str] = "/api/usage/token/"
    _status_read = False

    def _user_id(self, settings: ProviderSettings) -> int | None:
        return settings.user_id

    async def _prepare(self) -> None:
        if self._status_read:
            return
        try:
            data, _ = await self._api.call("GET", "/api/status")
        except ProviderError as exc:
            log.debug(
                "%s: /api/status unreadable (%s); quota_per_unit from the config", self.name, exc.reason
            )
            return
        self._status_read = True
        value = data.get("quota_per_unit") if isinstance(data, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            if value != self._settings.quota_per_unit:
                log.info("%s: the relay publishes quota_per_unit %s; using it", self.name, value)
            self._quota_per_unit = float(value)

    def _stale_note(self) -> str:
        return "the relay still accepts the key"
