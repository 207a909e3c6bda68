"""The console on a real daemon (in-process, loopback, real SQLite, a simulated new-api relay):
pages answer, changes need a confirmation, a CSRF token and (with api_token) the sign-in cookie,
actions land in the audit trail as the CLI's do, and the api_token never shows in a page."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
from starlette.applications import Starlette

from console.charts import DAY
from console.data import TokenView
from console.routes import PAGE_SIZE, routes, search
from console.source import DaemonConsoleData
from monitor.secret import Secret
from tests.console.live import Live, live_console

TOKEN = "console-s3cret-token"
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


def notice(page: httpx.Response) -> str:
    found = re.search(r'<p class="notice[^"]*"[^>]*>(.*?)</p>', page.text)
    return found.group(1) if found else ""


def trail(live: Live) -> list[tuple[str, str, str, str]]:
    return [
        (str(r["token"]), str(r["mode"]), str(r["state"]), str(r["reason"]))
        for r in reversed(live.daemon.alerts.responder.history())
    ]


async def test_every_page_answers_with_semantic_html_and_safe_headers(tmp_path: Path) -> None:
    async with live_console(tmp_path) as live, live.client() as c:
        name = live.active()[0]
        for path in (
            "/",
            "/tokens",
            f"/tokens/sim/{name}",
            "/alerts",
            "/silences",
            "/audit",
            "/silences/new",
        ):
            page = await c.get(path)
            assert page.status_code == 200, path
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert "<main>" in page.text and "<h1>" in page.text, path
            assert "default-src 'none'" in page.headers["content-security-policy"]
            assert "http://" not in page.text.replace(live.base, "") and "https://" not in page.text  # no CDN
        assert (await c.get("/static/console.css")).headers["content-type"].startswith("text/css")
        session = c.cookies.get("kw_session")
        assert session
        async with live.client() as fresh:
            cookie = (await fresh.get("/")).headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        # the API is the API's: the console's front never answers for it
        assert (await c.get("/api/v1/tokens")).headers["content-type"] == "application/json"
        assert (await c.get("/tokens/sim/no-such-token")).status_code == 404


async def test_revoke_then_restore_through_confirmations_is_recorded_like_the_cli(tmp_path: Path) -> None:
    async with live_console(tmp_path) as live, live.client() as c:
        name = live.active()[0]
        confirm = await c.get(f"/actions/revoke/sim/{name}")
        assert f"Quarantine sim/{name}" in confirm.text and f"Revoke sim/{name}" in confirm.text
        url = f"/actions/revoke/sim/{name}"
        # no CSRF token, a wrong one, or one of another session: refused, nothing done
        assert (await c.post(url, data={"reason": "leaked"})).status_code == 403
        assert (await c.post(url, data={"reason": "leaked", "csrf": "0" * 64})).status_code == 403
        async with live.client() as other:
            foreign = csrf_of(await other.get(url))
        assert (await c.post(url, data={"reason": "leaked", "csrf": foreign})).status_code == 403
        assert trail(live) == []
        assert (await c.post(url, data={"csrf": csrf_of(confirm), "reason": " "})).status_code == 400

        done = await c.post(url, data={"csrf": csrf_of(confirm), "reason": "pasted in a chat"})
        assert done.status_code == 200 and notice(done).startswith(f"sim/{name}: quarantined"), notice(done)
        assert name not in live.active()  # disabled at the relay
        page = await c.get(f"/tokens/sim/{name}")
        assert "<strong>Quarantined</strong>" in page.text and "Restore…" in page.text
        assert f"sim/{name}" in (await c.get("/")).text.split("Quarantined tokens</caption>")[1]

        confirm = await c.get(f"/actions/restore/sim/{name}")
        assert f"Re-enable sim/{name}" in confirm.text
        back = await c.post(
            f"/actions/restore/sim/{name}", data={"csrf": csrf_of(confirm), "reason": "rotated upstream"}
        )
        assert back.status_code == 200 and notice(back).startswith(f"sim/{name}: restored"), notice(back)
        assert name in live.active()
        assert trail(live) == [
            (name, "manual", "done", "pasted in a chat (by console)"),
            (name, "restore", "done", "rotated upstream (by console)"),
        ]
        assert "Revoke (quarantine)…" in (await c.get(f"/tokens/sim/{name}")).text


async def test_silences_made_and_expired_in_the_console_are_the_apis(tmp_path: Path) -> None:
    async with live_console(tmp_path) as live, live.client() as c:
        name = live.active()[0]
        form = await c.get(f"/actions/silence/sim/{name}")
        assert f'value="token={name}"' in form.text
        bad = await c.post(
            "/silences/new",
            data={"csrf": csrf_of(form), "m": ["token=~(", ""], "duration": "1h", "comment": "x"},
        )
        assert bad.status_code == 400 and 'role="alert"' in bad.text
        made = await c.post(
            "/silences/new",
            data={
                "csrf": csrf_of(form),
                "m": ["provider=sim", f"token={name}", ""],
                "duration": "2h",
                "comment": "maint",
            },
        )
        assert made.status_code == 200, notice(made)
        (row,) = (await c.get("/api/v1/silences")).json()
        assert row["matchers"] == ["provider=sim", f"token={name}"] and row["created_by"] == "console"
        assert f"silence {row['id']} until" in notice(made)
        assert "maint" in (await c.get(f"/tokens/sim/{name}")).text
        confirm = await c.get(f"/silences/{row['id']}/expire")
        gone = await c.post(f"/silences/{row['id']}/expire", data={"csrf": csrf_of(confirm)})
        assert gone.status_code == 200 and (await c.get("/api/v1/silences")).json() == []


async def test_with_api_token_every_page_needs_the_sign_in_and_the_token_never_shows(tmp_path: Path) -> None:
    async with live_console(tmp_path, api_token=TOKEN) as live, live.client() as c:
        name = live.active()[0]
        first = await c.get("/tokens?q=dev", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/login?next=%2Ftokens"
        login = await c.get(first.headers["location"])
        assert 'type="password"' in login.text
        refused = await c.post(f"/actions/revoke/sim/{name}", data={"csrf": csrf_of(login), "reason": "x"})
        assert refused.status_code == 403 and trail(live) == []
        wrong = await c.post("/login", data={"csrf": csrf_of(login), "token": "nope", "next": "/tokens"})
        assert wrong.status_code == 401 and "wrong token" in wrong.text
        before = c.cookies.get("kw_session")
        ok = await c.post(
            "/login",
            data={"csrf": csrf_of(login), "token": TOKEN, "next": "//evil.example/"},
            follow_redirects=False,
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/"  # no open redirect
        cookies = ok.headers.get_list("set-cookie")
        assert all("httponly" in h.lower() and "samesite=strict" in h.lower() for h in cookies)
        assert all(TOKEN not in h for h in cookies) and c.cookies.get("kw_session") != before
        seen = ""
        for path in (
            "/",
            "/tokens",
            f"/tokens/sim/{name}",
            "/alerts",
            "/silences",
            "/audit",
            f"/actions/revoke/sim/{name}",
        ):
            page = await c.get(path)
            assert page.status_code == 200, path
            seen += page.text
        assert TOKEN not in seen
        confirm = await c.get(f"/actions/revoke/sim/{name}")
        done = await c.post(
            f"/actions/revoke/sim/{name}", data={"csrf": csrf_of(confirm), "reason": "signed in"}
        )
        assert done.status_code == 200 and trail(live)[0][:3] == (name, "manual", "done")
        # the bearer token still guards /api/v1 for everyone else; the cookie is not a way in
        assert (await c.get("/api/v1/tokens")).status_code == 401


async def test_without_api_token_beyond_loopback_the_console_is_read_only_and_says_why(
    tmp_path: Path,
) -> None:
    async with live_console(tmp_path) as live:
        app = Starlette(
            routes=routes(live.daemon.console_data(), api_token=lambda: Secret(""), listen="0.0.0.0:9477")
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://keywatch.example") as c:
            name = live.active()[0]
            page = await c.get(f"/tokens/sim/{name}")
            assert page.status_code == 200 and "Read-only: keywatch listens beyond loopback" in page.text
            assert "Revoke" not in page.text
            confirm = await c.get(f"/actions/revoke/sim/{name}")
            refused = await c.post(
                f"/actions/revoke/sim/{name}", data={"csrf": csrf_of(confirm), "reason": "x"}
            )
            assert refused.status_code == 403 and "set api_token" in refused.text
            assert trail(live) == [] and name in live.active()


async def test_the_token_page_charts_the_stored_hourly_spend(tmp_path: Path) -> None:
    async with live_console(tmp_path) as live, live.client() as c:
        live.clock.set(live.clock.now() + 3 * 3600)
        await live.poll()
        spent = {
            s.name: sum(p.cost_usd for p in live.daemon.reader.hourly(s.pk or 0, 0.0))
            for s in live.daemon.pollers["sim"].states.values()
        }
        name = max(spent, key=lambda n: spent[n])
        assert spent[name] > 0
        page = await c.get(f"/tokens/sim/{name}")
        bars = re.findall(r"<title>(\w{3} \d\d): \$([\d,.]+)</title>", page.text)
        assert len(bars) == 30
        today = time.strftime("%b %d", time.gmtime(live.clock.now() // DAY * DAY))
        assert bars[-1][0] == today and float(bars[-1][1].replace(",", "")) > 0, bars[-3:]
        assert re.search(r"\d{2}:00 UTC: [1-9][\d,]* requests", page.text)


class Fleet(DaemonConsoleData):
    """A ConsoleData whose tokens are a given list: the /tokens page reads nothing else."""

    def __init__(self, views: list[TokenView]) -> None:
        self.views = views

    def tokens(self) -> list[TokenView]:
        return self.views


async def test_search_and_paging_at_ten_thousand_tokens_stay_under_200_ms() -> None:
    """The /tokens page's time at 10k tokens through the real routes (ASGI, no socket)."""
    views = [
        TokenView("p", f"dev-team{i % 97}-svc{i}-2026-01", str(i), i, "active", "newapi", i / 7, i / 3,
                  50.0, 1000.0, None, None, None, None, False, None)
        for i in range(10_000)
    ]  # fmt: skip
    app = Starlette(routes=routes(Fleet(views), api_token=lambda: Secret(""), listen="127.0.0.1:1"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://keywatch") as c:
        await c.get("/tokens")
        worst = 0.0
        for path in (
            "/tokens",
            "/tokens?page=200",
            "/tokens?q=team42",
            "/tokens?q=svc99&page=2",
            "/tokens?q=nomatch",
        ):
            t0 = time.perf_counter()
            page = await c.get(path)
            worst = max(worst, time.perf_counter() - t0)
            assert page.status_code == 200 and "<caption>" in page.text
        assert worst < 0.2, f"{worst * 1000:.0f} ms"
    assert "10,000 tokens — page 1 of 200" in (await _get(app, "/tokens")).text
    assert len(search(views, "team42")) == 103 and PAGE_SIZE == 50


async def _get(app: Starlette, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://keywatch") as c:
        return await c.get(path)
