"""Telling people a quarantine was undone: the same tags that hear of a leak hear of its restore,
through the durable outbox (the running daemon sends it; it survives restarts)."""

from __future__ import annotations

import time

from sqlalchemy import Engine

from alerts.lifecycle.records import OutboxItem
from alerts.lifecycle.store import AlertStore
from monitor.settings import Settings

__all__ = ["announce_restore"]


def announce_restore(
    settings: Settings, engine: Engine, provider: str, token: str, outcome: str, reason: str, who: str
) -> OutboxItem | None:
    """Queue the notice; None when no target would hear it (it is logged by the caller's output)."""
    tags = tuple(settings.notify.routes.get("security", ()))
    if not tags or not (settings.notify.urls or settings.notify.apprise_config):
        return None
    now = time.time()
    item = OutboxItem(
        id=None,
        created_at=now,
        group_key=f"restore:{provider}/{token}",
        receiver=",".join(tags),
        tags=tags,
        title=f"[RESTORED] leak_suspected · {provider}/{token} — re-enabled after review",
        body=(
            f"{provider}/{token} was quarantined as leaked and is enabled again: {outcome}.\n"
            f"Reason: {reason}\nBy: {who}\n"
            "The audit trail (quarantine_actions, mode restore) has the record. A new leak of this "
            "token is still quarantined."
        ),
        notify_type="warning",
        severity="security",  # retried until delivered, like the leak notice it answers
        next_attempt_at=now,
    )
    return AlertStore(engine).enqueue(item)
