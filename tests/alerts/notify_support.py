"""Real receivers on loopback and small factories for the notification tests (no mocks of Apprise)."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from alerts.lifecycle.store import AlertStore
from alerts.model import Finding, Severity
from monitor.secret import Secret
from monitor.settings import Notify, NotifyTarget
from monitor.store import open_engine

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def finding(
    rule: str = "spend_anomaly",
    *,
    provider: str = "lz",
    token: str = "dev-webapp-api-2026-01",
    severity: Severity = "warning",
    value: float = 12.5,
    for_polls: int = 1,
    keep_firing_for: float = 0.0,
    annotations: Mapping[str, str] | None = None,
    **extra: str,
) -> Finding:
    labels = {"provider": provider, **({"token": token} if token else {}), **extra}
    return Finding(
        rule=rule,
        labels=labels,
        severity=severity,
        value=value,
        summary=f"{rule} on {provider}/{token}",
        annotations=dict(annotations or {}),
        for_polls=for_polls,
        keep_firing_for=keep_firing_for,
    )


def notify_settings(*targets: tuple[str, tuple[str, ...]], **options: Any) -> Notify:
    return Notify(urls=tuple(NotifyTarget(Secret(url), tags) for url, tags in targets), **options)


@contextmanager
def sqlite_store(path: Path) -> Iterator[AlertStore]:
    """A store on a real SQLite file; the engine is disposed on exit (filterwarnings=error)."""
    with store_at(f"sqlite:///{path}") as store:
        yield store


@contextmanager
def store_at(url: str) -> Iterator[AlertStore]:
    """A store on any database URL (the `store_url` fixture: SQLite and PostgreSQL)."""
    engine = open_engine(url)
    try:
        store = AlertStore(engine)
        store.ensure_schema()
        yield store
    finally:
        engine.dispose()


class Webhook:
    """An HTTP receiver for json:// and ntfy:// targets. `status` other than 200 simulates an
    outage; only accepted requests are recorded in `received`."""

    def __init__(self) -> None:
        self.status = 200
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        if self.status != 200:
            self.refused += 1
            return web.Response(status=self.status, text="down")
        payload = await request.json()
        self.received.append({"path": request.path, **payload})
        return web.json_response({"ok": True})

    async def __aenter__(self) -> Webhook:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class SmtpSink:
    """A plain SMTP server (aiosmtpd) on an ephemeral loopback port, in the test's event loop."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self.messages.append(email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default))
        return "250 OK"

    async def __aenter__(self) -> SmtpSink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: SMTP(self, hostname="localhost"), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self) -> str:
        # mailto:// (not mailtos://) without user: plain SMTP, no STARTTLS, no login
        return f"mailto://127.0.0.1:{self.port}?from=keywatch@example.com&to=ops@example.com"


_HELD: list[object] = []


def closed_port() -> int:
    """A loopback port with nothing listening (connection refused). The socket stays bound, never
    listening, for the whole test process: a port merely closed again could be taken by a server
    in a parallel test and the "refused" target would suddenly answer."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return int(s.getsockname()[1])
