"""The `Provider` protocol every relay adapter implements, and the errors it raises; the values it
returns live in `monitor.model`. The rest of keywatch sees relays only through this."""

from __future__ import annotations

from typing import Protocol

from monitor.model import PollResult, RevokeOutcome

__all__ = ["AuthError", "Provider", "ProviderError"]


class ProviderError(Exception):
    """The relay could not be polled at all this cycle. `reason` is a short metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AuthError(ProviderError):
    def __init__(self, message: str = "admin token rejected") -> None:
        super().__init__("auth", message)


class Provider(Protocol):
    name: str
    kind: str

    async def poll(self) -> PollResult:
        """List tokens with usage. Raises ProviderError when nothing usable came back."""
        ...

    async def revoke(self, token_id: str, *, delete: bool = False) -> RevokeOutcome:
        """Disable (or delete) a token at the relay."""
        ...

    async def restore(self, token_id: str) -> RevokeOutcome:
        """Re-enable a token this keywatch disabled (`keywatch restore`); `done` False with the
        reason where the platform cannot (a deleted key is gone for good)."""
        ...

    async def verify_refused(self, token_id: str) -> bool | None:
        """True once the relay refuses the token's key; None when keywatch has no key to try."""
        ...

    async def aclose(self) -> None: ...
