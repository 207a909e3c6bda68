"""Errors a command reports in one line and exits 1 on (the config's are ConfigError, exit 2)."""

from __future__ import annotations

__all__ = ["StartupError"]


class StartupError(Exception):
    """The daemon cannot start: the port is taken, the address cannot be bound, and the like."""
