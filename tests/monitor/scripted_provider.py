"""A relay in the test's own process: a `Provider` (monitor/providers/base.py) that answers each
poll with the next scripted PollResult or raises the next scripted exception, and remembers what
it was asked to revoke. For the poller's and the alert engine's unit tests."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from monitor.model import Observation, PollResult, RevokeOutcome

__all__ = ["ScriptedProvider", "Stall", "active"]


class Stall:
    """A scripted answer that never comes: the poll waits until it is cancelled."""


Answer = PollResult | BaseException | Stall


class ScriptedProvider:
    def __init__(self, name: str = "lz", *, kind: str = "newapi", answers: Iterable[Answer] = ()) -> None:
        self.name = name
        self.kind = kind
        self.answers: deque[Answer] = deque(answers)
        self.revoked: list[tuple[str, bool]] = []  # (token id, delete)
        self.restored: list[str] = []
        self.refuses: bool | None = True  # what verify_refused says once a token is revoked

    async def poll(self) -> PollResult:
        answer = self.answers.popleft()
        if isinstance(answer, Stall):
            await asyncio.Event().wait()
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, PollResult)
        return answer

    async def revoke(self, token_id: str, *, delete: bool = False) -> RevokeOutcome:
        self.revoked.append((token_id, delete))
        return RevokeOutcome(done=True, verified=False)

    async def restore(self, token_id: str) -> RevokeOutcome:
        self.restored.append(token_id)
        return RevokeOutcome(done=True, verified=self.refuses is not None)

    async def verify_refused(self, token_id: str) -> bool | None:
        return self.refuses

    async def aclose(self) -> None:
        return None


def active(
    token_id: str,
    name: str,
    *,
    today: float | None,
    month: float | None,
    requests: int | None = None,
    created_at: float | None = None,
) -> Observation:
    """An active token as a relay with day and month windows shows it."""
    return Observation(
        token_id,
        name,
        "active",
        created_at=created_at,
        today_usd=today,
        month_usd=month,
        today_requests=requests,
    )
