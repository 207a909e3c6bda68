"""Text that came from a relay, made safe to log and to store.

A relay's error message is the relay's to write: it may echo the admin token keywatch sent, run
to megabytes, or carry a newline and a forged log line after it. Before such text reaches a log,
the database (`poll_runs.error`) or a notification, it is cut to a bounded length, every control
character is escaped (`\\n` stays visible but cannot start a line), and every secret keywatch
knows is masked. The log scrubber (`monitor.logs`) is the second line of defence; this is the
first, and the only one for what is stored.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MASK", "Redactor", "escape_controls"]

MASK = "**********"
DEFAULT_LIMIT = 300  # characters: enough for a relay's reason, not for a page of HTML
_MIN_SECRET = 8  # shorter values would mask ordinary words

_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_ESCAPES |= {0x2028: "\\u2028", 0x2029: "\\u2029", 0x85: "\\x85"}  # line breaks outside ASCII


def escape_controls(text: str) -> str:
    return text.translate(_ESCAPES)


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True))

    def __call__(self, text: str, *, limit: int = DEFAULT_LIMIT) -> str:
        # Mask before cutting, so a secret split by the cut cannot survive in part.
        raw = text[: limit + max((len(s) for s in self._secrets), default=0)]
        head = raw
        for secret in self._secrets:
            if secret in head:
                head = head.replace(secret, MASK)
        out = escape_controls(head[:limit])
        # Cut when the masked text is over the limit or the text went on past what was read (the
        # masked text is shorter than what was read, so compare each with its own).
        return out + "…" if len(head) > limit or len(text) > len(raw) else out
