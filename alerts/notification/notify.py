"""Apprise at the edge: build targets from `notify.urls` and `notify.apprise_config`, send to tags.

Rules name tags, never URLs, so credentials live in one place. Nothing here prints or stores a
URL: targets are shown as scheme + tags and identified by Apprise's url_id (a hash).

Apprise's notify() answers True (sent), False (failed) or "no target matched" (None in Apprise
1.x, an AppriseResult with status NOMATCH in 2.x). The last is a configuration problem and raises
NoTargetError. Each matched target is sent to separately so a partial failure retries only the
targets that failed (the outbox remembers which ones accepted).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from apprise import Apprise, AppriseAsset, AppriseConfig

from alerts.notification.render import render
from monitor.settings import Notify, Settings

__all__ = [
    "Delivery",
    "NoTargetError",
    "Notifier",
    "NotifyConfigError",
    "Target",
    "build_apprise",
    "notify_test",
    "render",
    "validate_routes",
]

log = logging.getLogger(__name__)


class NoTargetError(RuntimeError):
    """No notify target carries any of the tags: a configuration error, not a delivery failure."""

    def __init__(self, tags: Sequence[str]) -> None:
        super().__init__(f"no notify target has any of the tags {list(tags)} (check notify.routes)")
        self.tags = tuple(tags)


class NotifyConfigError(ValueError):
    """`config error: <key>: <reason>` material for check-config and reloads."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    id: str  # Apprise url_id: a hash, safe to store
    scheme: str
    tags: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.scheme} [{','.join(self.tags)}]" if self.tags else self.scheme


@dataclass(frozen=True, slots=True)
class Delivery:
    delivered: frozenset[str]  # target ids that have it now (including ones skipped as done)
    failed: tuple[Target, ...]

    @property
    def ok(self) -> bool:
        return not self.failed

    def error(self) -> str:
        return "; ".join(f"{t.describe()}: not delivered" for t in self.failed)


@cache
def _load_plugins() -> None:
    # Apprise 2.x's email plugin imports `imghdr`, deprecated on 3.11-3.12; under `-W error`
    # (our pytest config) that import would fail the first mailto:// add. Load plugins once here.
    from apprise.manager_plugins import NotificationManager

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*imghdr.*", category=DeprecationWarning)
        NotificationManager().load_modules()  # type: ignore[no-untyped-call]


def _asset() -> AppriseAsset:
    # storage_mode=memory: Apprise would otherwise keep a persistent cache on disk.
    return AppriseAsset(
        app_id="keywatch", app_desc="keywatch token monitor", app_url="", storage_mode="memory"
    )


def build_apprise(notify: Notify) -> Apprise:
    """Raises NotifyConfigError naming the bad key (never the URL, which holds credentials)."""
    _load_plugins()
    asset = _asset()
    apobj = Apprise(asset=asset)
    for i, target in enumerate(notify.urls):
        url = target.url.reveal()
        if not apobj.add(url, tag=list(target.tags)):
            scheme = url.split("://", 1)[0] if "://" in url else "?"
            raise NotifyConfigError(f"notify.urls[{i}].url", f"not a valid Apprise URL (scheme {scheme!r})")
    if notify.apprise_config:
        path = notify.apprise_config
        if not os.path.isfile(path):
            raise NotifyConfigError("notify.apprise_config", f"no such file: {path}")
        config = AppriseConfig(asset=asset)
        if not config.add(path):
            raise NotifyConfigError("notify.apprise_config", f"cannot load {path}")
        apobj.add(config)
        probe = Apprise(asset=asset)
        probe.add(config)
        if not any(True for _ in probe.find()):
            raise NotifyConfigError("notify.apprise_config", f"{path} defines no valid notification URL")
    return apobj


def _target(service: Any) -> Target:
    ident = service.url_id()
    if not ident:  # a plugin without a url_id: hash the URL ourselves, never store it
        ident = hashlib.sha256(service.url(privacy=False).encode()).hexdigest()[:8]
    scheme = str(service.url(privacy=True)).split("://", 1)[0]
    return Target(str(ident), scheme, tuple(sorted(str(t) for t in service.tags)))


class Notifier:
    def __init__(self, notify: Notify, *, apprise: Apprise | None = None) -> None:
        self._apprise = apprise if apprise is not None else build_apprise(notify)
        self._asset = self._apprise.asset
        if not self.has_targets:
            log.warning("notify: no notification targets configured; alerts are only logged")

    def _services(self, tags: Sequence[str] | None) -> list[Any]:
        # A list of tags is OR in Apprise; None is "every target".
        found = self._apprise.find() if tags is None else self._apprise.find(tag=list(tags))
        return list(found)

    def targets(self, tags: Sequence[str] | None = None) -> list[Target]:
        return [_target(s) for s in self._services(tags)]

    @property
    def has_targets(self) -> bool:
        return bool(self._services(None))

    async def deliver(
        self,
        title: str,
        body: str,
        tags: Sequence[str],
        notify_type: str,
        *,
        skip: Iterable[str] = (),
    ) -> Delivery:
        """Send to every target with any of `tags`, except those in `skip` (already delivered)."""
        services = self._services(tags)
        if not services:
            raise NoTargetError(tags)
        done = frozenset(skip)
        todo = [(s, _target(s)) for s in services]
        todo = [(s, t) for s, t in todo if t.id not in done]
        results = await asyncio.gather(*(self._send_one(s, title, body, notify_type) for s, _ in todo))
        delivered = done | {t.id for (_, t), ok in zip(todo, results, strict=True) if ok}
        failed = tuple(t for (_, t), ok in zip(todo, results, strict=True) if not ok)
        return Delivery(delivered, failed)

    async def send(self, title: str, body: str, tags: Sequence[str], notify_type: str) -> bool:
        return (await self.deliver(title, body, tags, notify_type)).ok

    async def _send_one(self, service: Any, title: str, body: str, notify_type: str) -> bool:
        single = Apprise(asset=self._asset)
        single.add(service)
        try:
            # async_notify runs blocking plugins (smtplib) in Apprise's own thread pool.
            result = await single.async_notify(body=body, title=title, notify_type=notify_type)
        except Exception as exc:  # a plugin bug must not kill the sender loop
            log.warning("notify: %s raised %s", _target(service).describe(), type(exc).__name__)
            return False
        return bool(result)

    async def test(self, tag: str | None = None) -> dict[str, bool]:
        """`keywatch notify-test`: one test message per target; keys are scheme and tags."""
        services = self._services(None if tag is None else [tag])
        if not services:
            raise NoTargetError([tag] if tag else [])
        title = "keywatch test notification"
        body = "This is a test from `keywatch notify-test`. If you can read it, this target works."
        oks = await asyncio.gather(*(self._send_one(s, title, body, "info") for s in services))
        report: dict[str, bool] = {}
        for service, ok in zip(services, oks, strict=True):
            name = _target(service).describe()
            key, n = name, 1
            while key in report:
                n += 1
                key = f"{name} #{n}"
            report[key] = ok
        return report


def validate_routes(settings: Settings | Notify) -> None:
    """Check notify.* at start and on reload: every URL loads, the Apprise config file loads, and
    (when there are targets at all) every routed tag matches at least one target. Raises
    NotifyConfigError; with no targets it passes (the Notifier then logs one warning)."""
    notify = settings.notify if isinstance(settings, Settings) else settings
    notifier_apprise = build_apprise(notify)
    services = list(notifier_apprise.find())
    if not services:
        return
    for severity, tags in sorted(notify.routes.items()):
        for tag in tags:
            # Apprise: the filter tag `all` matches every target; a target tagged `always` gets everything
            if tag != "all" and not any(tag in s or "always" in s for s in services):
                raise NotifyConfigError(f"notify.routes.{severity}", f"tag {tag!r} matches no notify target")


async def notify_test(settings: Settings | Notify, tag: str | None = None) -> dict[str, bool]:
    notify = settings.notify if isinstance(settings, Settings) else settings
    return await Notifier(notify).test(tag)
