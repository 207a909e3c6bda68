"""What the config asks of Apprise: whether it can use a URL, and the tags in an Apprise config file.
Validation only; sending lives in alerts.notification.notify."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

__all__ = ["config_tags", "usable"]


@contextlib.contextmanager
def _apprise() -> Iterator[ModuleType]:
    """Apprise, quietly: its log lines would echo (masked) URLs to stderr, and its plugin imports raise
    DeprecationWarnings on Python 3.11+ (imghdr), which our test settings turn into errors."""
    log = logging.getLogger("apprise")
    disabled, log.disabled = log.disabled, True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import apprise

            yield apprise
    finally:
        log.disabled = disabled


def usable(url: str) -> bool:
    """Whether Apprise has a plugin for the URL and the URL gives that plugin what it needs."""
    with _apprise() as apprise:
        return apprise.Apprise.instantiate(url) is not None


def config_tags(path: str) -> list[frozenset[str]] | None:
    """The tags of each target in an Apprise TEXT or YAML config; None if it includes other configs
    (their tags cannot be known here). Raises ValueError when the file is unreadable or has no target."""
    try:
        content = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {getattr(e, 'strerror', None) or 'not UTF-8 text'}") from None
    with _apprise() as apprise:
        services, includes = apprise.ConfigBase.config_parse(content)
    if includes:
        return None
    if not services:
        raise ValueError(f"no usable notification URLs in {path} (is it an Apprise TEXT or YAML config?)")
    return [frozenset(str(tag) for tag in getattr(service, "tags", ())) for service in services]
