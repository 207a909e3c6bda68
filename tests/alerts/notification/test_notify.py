"""Real Apprise against real receivers on loopback: SMTP (aiosmtpd), a JSON webhook, ntfy."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from alerts.notification.notify import (
    NoTargetError,
    Notifier,
    NotifyConfigError,
    notify_test,
    validate_routes,
)
from monitor.settings import Notify, Settings
from tests.alerts.notify_support import SmtpSink, Webhook, closed_port, notify_settings


async def test_email_over_plain_smtp() -> None:
    async with SmtpSink() as smtp:
        notifier = Notifier(notify_settings((smtp.url(), ("critical",))))
        ok = await notifier.send("[FIRING:1] budget · lz/dev-a", "spend is $12", ("critical",), "failure")
        assert ok
    (msg,) = smtp.messages
    assert msg["Subject"] == "[FIRING:1] budget · lz/dev-a"
    assert msg["To"] == "ops@example.com"
    assert "spend is $12" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def test_json_webhook() -> None:
    async with Webhook() as hook:
        notifier = Notifier(notify_settings((f"json://127.0.0.1:{hook.port}/hook", ("warning",))))
        assert await notifier.send("title here", "body here", ("warning",), "warning")
    (got,) = hook.received
    assert (got["path"], got["title"], got["message"], got["type"]) == (
        "/hook",
        "title here",
        "body here",
        "warning",
    )


async def test_ntfy_on_a_local_host() -> None:
    async with Webhook() as hook:
        notifier = Notifier(notify_settings((f"ntfy://127.0.0.1:{hook.port}/keywatch", ("security",))))
        assert await notifier.send(
            "[FIRING:1] leak_suspected · lz/x", "quarantined", ("security",), "failure"
        )
    (got,) = hook.received
    assert (got["topic"], got["title"], got["message"]) == (
        "keywatch",
        "[FIRING:1] leak_suspected · lz/x",
        "quarantined",
    )


async def test_routing_by_tag_and_no_target_error() -> None:
    async with Webhook() as crit, Webhook() as warn:
        notifier = Notifier(
            notify_settings(
                (f"json://127.0.0.1:{crit.port}/c", ("critical", "security")),
                (f"json://127.0.0.1:{warn.port}/w", ("warning",)),
            )
        )
        assert await notifier.send("t", "b", ("security", "critical"), "failure")  # OR of tags: once
        assert await notifier.send("t", "b", ("warning",), "warning")
        with pytest.raises(NoTargetError, match="info"):
            await notifier.send("t", "b", ("info",), "info")
    assert (len(crit.received), len(warn.received)) == (1, 1)


async def test_failure_is_false_and_partial_delivery_is_tracked() -> None:
    async with Webhook() as up, Webhook() as down:
        down.status = 503
        notifier = Notifier(
            notify_settings(
                (f"json://127.0.0.1:{up.port}/a", ("critical",)),
                (f"json://127.0.0.1:{down.port}/b", ("critical",)),
            )
        )
        first = await notifier.deliver("t", "b", ("critical",), "failure")
        assert not first.ok and len(first.delivered) == 1
        assert [t.scheme for t in first.failed] == ["json"]
        down.status = 200
        second = await notifier.deliver("t", "b", ("critical",), "failure", skip=first.delivered)
        assert second.ok and len(second.delivered) == 2
    assert (len(up.received), len(down.received)) == (1, 1)  # the retry skipped the target that had it


async def test_notify_test_reports_scheme_and_tags_never_the_url(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with Webhook() as hook:
        settings = Settings(
            notify=notify_settings(
                (f"json://alice:s3cret@127.0.0.1:{hook.port}/hook", ("critical",)),
                (f"json://127.0.0.1:{closed_port()}/x", ("critical", "security")),
                (f"json://127.0.0.1:{hook.port}/other", ("warning",)),
            )
        )
        report = await notify_test(settings)
        assert report == {"json [critical]": True, "json [critical,security]": False, "json [warning]": True}
        assert await notify_test(settings, "warning") == {"json [warning]": True}
        with pytest.raises(NoTargetError):
            await notify_test(settings, "nope")
    assert "s3cret" not in repr(report) and "s3cret" not in caplog.text
    assert [r["title"] for r in hook.received] == ["keywatch test notification"] * 3


def test_validate_routes() -> None:
    targets = (
        ("json://127.0.0.1:9/x", ("critical", "security")),
        ("json://127.0.0.1:9/y", ("warning", "info")),
    )
    validate_routes(Settings(notify=notify_settings(*targets)))  # the default routes all match
    validate_routes(Notify())  # no targets at all: fine, alerts are only logged

    with pytest.raises(NotifyConfigError) as err:
        validate_routes(notify_settings(targets[0]))
    assert (err.value.key, err.value.reason) == ("notify.routes.info", "tag 'info' matches no notify target")

    # Apprise's special tags: a route to `all` reaches every target, an `always` target gets everything
    validate_routes(notify_settings(targets[0], routes={"info": ("all",)}))
    validate_routes(notify_settings(("json://127.0.0.1:9/z", ("always",))))

    with pytest.raises(NotifyConfigError) as err:
        validate_routes(notify_settings(("nosuchscheme://user:s3cret@host", ("critical",))))
    assert err.value.key == "notify.urls[0].url" and "s3cret" not in str(err.value)


def test_validate_routes_with_an_apprise_config_file(tmp_path: Path) -> None:
    config = tmp_path / "apprise.yaml"
    config.write_text(
        "urls:\n"
        "  - json://127.0.0.1:9/a:\n"
        "      tag: critical, security\n"
        "  - json://127.0.0.1:9/b:\n"
        "      tag: warning, info\n"
    )
    notify = Notify(apprise_config=str(config))
    validate_routes(notify)
    assert sorted(t.describe() for t in Notifier(notify).targets()) == [
        "json [critical,security]",
        "json [info,warning]",
    ]
    with pytest.raises(NotifyConfigError, match=r"notify.apprise_config: no such file"):
        validate_routes(Notify(apprise_config=str(tmp_path / "missing.yaml")))
    (tmp_path / "empty.yaml").write_text("urls: []\n")
    with pytest.raises(NotifyConfigError, match="defines no valid notification URL"):
        validate_routes(Notify(apprise_config=str(tmp_path / "empty.yaml")))


def test_no_targets_logs_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(Notify())
    assert not notifier.has_targets
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "notify: no notification targets configured; alerts are only logged"
    ]
