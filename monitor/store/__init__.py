"""The usage history in SQL: schema and migrations, the cycle writer, readers and retention."""

from monitor.store.db import apply_migrations, open_engine
from monitor.store.reader import HistoryPoint, LoggedRequest, ProviderFacts, UsageReader
from monitor.store.retention import Pruned, prune
from monitor.store.writer import PollRun, UsageWriter

__all__ = [
    "HistoryPoint",
    "LoggedRequest",
    "PollRun",
    "ProviderFacts",
    "Pruned",
    "UsageReader",
    "UsageWriter",
    "apply_migrations",
    "open_engine",
    "prune",
]
