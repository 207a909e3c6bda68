"""The notification log (Alertmanager's nflog): what each receiver was last told about each group.

The dedup stage reads it to decide whether a group has news; the outbox stage writes an entry in
the same transaction as the outbox row it belongs to. It lives in the store, so a restarted daemon
does not tell anyone again what it already told them, and is mirrored in memory for the reads.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection

from alerts.lifecycle.records import LogEntry, OutboxItem
from alerts.lifecycle.store import AlertStore

__all__ = ["NotificationLog"]


class NotificationLog:
    def __init__(self, store: AlertStore) -> None:
        self._store = store
        self._entries: dict[tuple[str, str], LogEntry] = store.load_log()

    def reload(self) -> None:
        """Read the log again: providers taken over from another instance come with what that
        instance told people (monitor.cluster), so nothing is told twice."""
        self._entries = self._store.load_log()

    def get(self, group_key: str, receiver: str) -> LogEntry | None:
        return self._entries.get((group_key, receiver))

    def told_firing(self, group_key: str, receiver: str, fingerprint: str) -> bool:
        """Was this receiver last told that this alert fires? Only then does its resolution notify."""
        entry = self._entries.get((group_key, receiver))
        return entry is not None and fingerprint in entry.firing

    def record(
        self, entry: LogEntry, item: OutboxItem | None, *, guard: Callable[[Connection], None] | None = None
    ) -> OutboxItem | None:
        """Store the entry (and the outbox row, if any) in one transaction; returns the stored row.
        Memory follows only once the store has it, so a failed write is decided again next time."""
        stored = self._store.record_notification(entry, item, guard=guard)
        self._entries[(entry.group_key, entry.receiver)] = entry
        return stored

    def prune(self, before: float) -> int:
        """Forget groups that went quiet before `before` (see AlertStore.prune_log), in both places."""
        gone = self._store.prune_log(before)
        for key in gone:
            self._entries.pop(key, None)
        return len(gone)
