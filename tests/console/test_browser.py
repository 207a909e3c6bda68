"""The console in a real browser (Playwright + Debian's Chromium, headless): the leak story seen
in the console, a restore confirmed there and verified at the relay, a silence made there and
seen through /api/v1/silences, and an action refused without the api_token. Every page is
screenshotted under tests/console/artifacts/."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.console.browser import chromium_page, shot
from tests.console.live import Live, live_console

TOKEN = "browser-api-token"


async def sim_status(live: Live, name: str) -> str:
    """The token's status as the simulated relay itself reports it (over HTTP)."""
    async with httpx.AsyncClient(timeout=10) as c:
        truth = (await c.get(f"{live.sim}/_sim/truth")).json()
    (row,) = [t for t in truth["tokens"] if t["name"] == name]
    return str(row["status"])


async def test_a_leak_seen_quarantined_with_its_surge_then_restored_at_the_relay(tmp_path: Path) -> None:
    async with chromium_page() as page, live_console(tmp_path, auto_revoke=True) as live:
        victim = next(n for n in live.active() if n.startswith(("dev-", "test-")))
        ref = next(r for r, t in live.relay.tokens.items() if t.name == victim)
        live.relay.start_leak(ref)  # strangers spend 20x its busiest hour, from new addresses
        polls = 0
        while await sim_status(live, victim) != "disabled":  # keywatch quarantines it on its own
            assert polls < 4, f"{victim} not quarantined after {polls} hourly polls"
            live.clock.set(live.clock.now() + 3600)
            await live.poll()
            polls += 1
        (row,) = live.daemon.alerts.responder.history()
        assert (row["token"], row["mode"], row["state"]) == (victim, "auto", "done")

        await page.goto(f"{live.base}/")
        await shot(page, "overview")
        await page.get_by_role("link", name="Tokens", exact=True).click()
        await page.get_by_label("Search tokens").fill(victim)
        await page.get_by_role("button", name="Search").click()
        await shot(page, "tokens")
        await page.get_by_role("link", name=f"sim/{victim}").click()
        await page.get_by_text("Quarantined", exact=True).wait_for()
        # The surge: today's bar is the tallest of the 30.
        bars = page.locator("svg.chart rect.bar")
        heights = [float(h) for h in await bars.evaluate_all("rs => rs.map(r => r.getAttribute('height'))")]
        assert len(heights) == 30 and heights[-1] == max(heights) > 0, heights
        await shot(page, "token")

        await page.get_by_role("link", name="Restore…").click()
        await page.get_by_text(f"Re-enable sim/{victim}").wait_for()
        await shot(page, "confirm-restore")
        await page.get_by_label("Reason").fill("key rotated at the source")
        await page.get_by_role("button", name=f"Restore sim/{victim}").click()
        assert (await page.get_by_role("status").inner_text()).startswith(f"sim/{victim}: restored")
        assert await sim_status(live, victim) == "active"

        await page.goto(f"{live.base}/")
        quarantined = page.locator("table", has=page.locator("caption", has_text="Quarantined tokens"))
        assert await quarantined.get_by_role("link", name=f"sim/{victim}").count() == 0
        for path, name in (("/alerts", "alerts"), ("/audit", "audit")):
            await page.goto(f"{live.base}{path}")
            await shot(page, name)
        trail = page.locator("table", has=page.locator("caption", has_text="Quarantines"))
        rows = await trail.locator("tbody tr").all_inner_texts()
        assert [r.split("\t")[2:5] for r in rows] == [
            ["restore", "disable", "done"],
            ["auto", "disable", "done"],
        ], rows


async def test_signed_in_silence_is_the_apis_and_an_action_without_the_token_is_refused(
    tmp_path: Path,
) -> None:
    async with chromium_page(color_scheme="dark") as page, live_console(tmp_path, api_token=TOKEN) as live:
        victim = live.active()[0]
        # Without the token: the action's page is the sign-in page; a wrong token changes nothing.
        await page.goto(f"{live.base}/actions/revoke/sim/{victim}")
        assert re.search(r"/login\?next=", page.url)
        await page.get_by_label("API token").fill("not-the-token")
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("alert").filter(has_text="wrong token").wait_for()
        await shot(page, "login-refused")
        assert live.daemon.alerts.responder.history() == [] and await sim_status(live, victim) == "active"

        await page.get_by_label("API token").fill(TOKEN)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_text(f"Quarantine sim/{victim}").wait_for()  # back where it was going
        assert TOKEN not in page.url and TOKEN not in await page.content()

        await page.goto(f"{live.base}/tokens/sim/{victim}")
        await page.get_by_role("link", name="Silence its alerts…").click()
        await page.get_by_label("For how long").fill("2h")
        await page.get_by_label("Comment (why)").fill("load test tonight")
        await shot(page, "silence-new")
        await page.get_by_role("button", name="Create silence").click()
        assert (await page.get_by_role("status").inner_text()).startswith("silence ")
        await page.goto(f"{live.base}/silences")
        await shot(page, "silences")

        async with httpx.AsyncClient(base_url=live.base, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            (silence,) = (await api.get("/api/v1/silences")).json()
        assert silence["matchers"] == ["provider=sim", f"token={victim}"]
        assert (silence["created_by"], silence["comment"], silence["status"]) == (
            "console",
            "load test tonight",
            "active",
        )
