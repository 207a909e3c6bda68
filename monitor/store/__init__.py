"""The usage history in SQL: schema and migrations, the cycle writer, readers and retention."""

from monitor.store.db import StoreUnavailable, apply_migrations, describe_fault, open_engine, store_error_text
from monitor.store.reader import HistoryPoint, LoggedRequest, ProviderFacts, UsageReader
from monitor.store.retention import Pruned, prune
from monitor.store.writer import PollRun, UsageWriter

__all__ = [
    "HistoryPoint",
    "LoggedRequest",
    "PollRun",
    "ProviderFacts",
    "Pruned",
    "StoreUnavailable",
    "UsageReader",
    "UsageWriter",
    "apply_migrations",
    "describe_fault",
    "open_engine",
    "prune",
    "store_error_text",
]
