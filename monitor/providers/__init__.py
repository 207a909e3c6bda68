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
    RequestRecord,
    RevokeOutcome,
    Skip,
    TokenLimits,
)
from monitor.providers.http import RelayHTTP, make_client
from monitor.providers.laozhang import LaozhangProvider
from monitor.providers.newapi import NewAPIProvider
from monitor.providers.oneapi import OneAPIProvider
from monitor.providers.openai import OpenAIProvider
from monitor.settings import ProviderSettings

__all__ = [
    "AuthError",
    "Observation",
    "PollResult",
    "Provider",
    "ProviderError",
    "RequestRecord",
    "RevokeOutcome",
    "Skip",
    "TokenLimits",
    "UnsupportedKind",
    "build_provider",
    "make_client",
]

SUPPORTED_KINDS = ("laozhang", "oneapi", "newapi", "openai")


class UnsupportedKind(Exception):
    pass


def build_provider(
    settings: ProviderSettings,
    client: httpx.AsyncClient,
    *,
    on_retry: Callable[[str], None] | None = None,
    log_cursor: float | None = None,
) -> Provider:
    """`log_cursor`: where request-log polling resumes after a restart (`UsageReader.log_cursor`);
    without it the first window reaches an hour back and the store drops the rows it has."""
    http = RelayHTTP(
        client,
        settings.base_url,
        retries=settings.retries,
        on_retry=on_retry,
        max_bytes=settings.max_response_mb * 1024 * 1024,
    )
    if settings.kind == "laozhang":
        return LaozhangProvider(settings, http)
    if settings.kind == "oneapi":
        return OneAPIProvider(settings, http, log_cursor=log_cursor)
    if settings.kind == "newapi":
        return NewAPIProvider(settings, http, log_cursor=log_cursor)
    if settings.kind == "openai":
        return OpenAIProvider(settings, http, log_cursor=log_cursor)
    raise UnsupportedKind(
        f"providers.{settings.name}: kind '{settings.kind}' is not supported by this build yet"
    )
