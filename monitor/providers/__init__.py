"""Relay adapters, one module per relay kind, behind the `Provider` protocol."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from monitor.providers.base import (
    AuthError,
    Observation,
    PollResult,
    Provider,
    ProviderError,
    RevokeOutcome,
    Skip,
    TokenLimits,
)
from monitor.providers.http import RelayHTTP, make_client
from monitor.providers.laozhang import LaozhangProvider
from monitor.settings import ProviderSettings

__all__ = [
    "AuthError",
    "Observation",
    "PollResult",
    "Provider",
    "ProviderError",
    "RevokeOutcome",
    "Skip",
    "TokenLimits",
    "UnsupportedKind",
    "build_provider",
    "make_client",
]

SUPPORTED_KINDS = ("laozhang",)


class UnsupportedKind(Exception):
    pass


def build_provider(
    settings: ProviderSettings, client: httpx.AsyncClient, *, on_retry: Callable[[str], None] | None = None
) -> Provider:
    http = RelayHTTP(client, settings.base_url, retries=settings.retries, on_retry=on_retry)
    if settings.kind == "laozhang":
        return LaozhangProvider(settings, http)
    raise UnsupportedKind(
        f"providers.{settings.name}: kind '{settings.kind}' is not supported by this build yet"
    )
