"""Which adapter serves which relay kind: `build_provider` for the daemon, the CLI and the tests."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from monitor.model import PROVIDER_KINDS
from monitor.providers.base import Provider
from monitor.providers.http import RelayHTTP
from monitor.providers.laozhang import LaozhangProvider
from monitor.providers.newapi import NewAPIProvider
from monitor.providers.oneapi import OneAPIProvider
from monitor.providers.openai import OpenAIProvider
from monitor.settings import ProviderSettings

__all__ = ["SUPPORTED_KINDS", "UnsupportedKind", "build_provider"]

SUPPORTED_KINDS = PROVIDER_KINDS


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
    # The platforms added in issue 14, imported when configured.
    if settings.kind == "litellm":
        from monitor.providers.litellm import LiteLLMProvider

        return LiteLLMProvider(settings, http, log_cursor=log_cursor)
    if settings.kind == "openrouter":
        from monitor.providers.openrouter import OpenRouterProvider

        return OpenRouterProvider(settings, http)
    if settings.kind == "anthropic":
        from monitor.providers.anthropic import AnthropicProvider

        return AnthropicProvider(settings, http, log_cursor=log_cursor)
    raise UnsupportedKind(
        f"providers.{settings.name}: kind '{settings.kind}' is not supported by this build yet"
    )
