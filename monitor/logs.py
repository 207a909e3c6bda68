"""Logging: human text or one JSON object per line (`--log-format json`), with secrets scrubbed.

Secrets are wrapped in `Secret` everywhere, so they should never reach a log call; the scrubber
is the second line of defence for the day a library logs a URL or a header with one inside."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

import orjson

from monitor.redact import escape_controls

__all__ = ["JsonFormatter", "SecretScrubber", "TextFormatter", "configure_logging"]

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class SecretScrubber(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            scrubbed = message
            for secret in self.secrets:
                if secret in scrubbed:
                    scrubbed = scrubbed.replace(secret, "**********")
            if scrubbed is not message:
                record.msg, record.args = scrubbed, None
            if record.exc_info and record.exc_info[1] is not None:
                text = logging.Formatter().formatException(record.exc_info)
                for secret in self.secrets:
                    text = text.replace(secret, "**********")
                record.exc_info, record.exc_text = None, text
        return True


class TextFormatter(logging.Formatter):
    """One record, one line: control characters in the message (a relay's text with a newline
    and a forged line after it) are escaped. A traceback, when there is one, follows as itself."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


def configure_logging(
    fmt: str = "text", level: str = "info", scrubber: SecretScrubber | None = None
) -> SecretScrubber:
    scrubber = scrubber or SecretScrubber()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(scrubber)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "uvicorn", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return scrubber
