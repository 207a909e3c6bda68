"""The console's rendering: every value escaped, money as money, charts from the hourly rollups."""

from __future__ import annotations

from xml.etree import ElementTree

from console.charts import DAY, daily_spend, heatmap_svg, hour_of_week, spend_svg
from console.data import AuditRow, HourPoint, TokenView
from console.fmt import ago, money
from console.pages import Access, overview_page, quarantined_refs, token_page, tokens_page

EVIL = '<script>alert("x")</script>&"\''
MONDAY = 1_794_787_200.0


def token(name: str = "dev-a", provider: str = "sim", **kw: object) -> TokenView:
    base: dict[str, object] = {
        "provider": provider,
        "name": name,
        "token_id": "7",
        "pk": 1,
        "status": "active",
        "kind": "newapi",
        "today_usd": 1234.5,
        "month_usd": 20000.0,
        "budget_day_usd": 2000.0,
        "budget_month_usd": 10000.0,
        "daily_usd_limit": None,
        "monthly_usd_limit": None,
        "remain_usd": None,
        "last_used_at": None,
        "protected": False,
        "anomaly_score": None,
    }
    base.update(kw)
    return TokenView(**base)  # type: ignore[arg-type]


def row(rid: int, mode: str, state: str = "done", action: str = "disable") -> AuditRow:
    return AuditRow(rid, "sim", "7", "dev-a", mode, action, state, "why", "", 1.0 + rid, True)


def test_money_is_formatted_with_thousands_and_cents() -> None:
    assert money(1234.5) == "$1,234.50"
    assert money(0) == "$0.00"
    assert money(-3) == "-$3.00"
    assert money(None) == "—"
    assert ago(100.0, 100.0 + 7200) == "2h ago" and ago(None, 1.0) == "never"


def test_every_value_is_escaped() -> None:
    evil = token(name=EVIL, provider=EVIL)
    html = tokens_page(rows=[evil], q=EVIL, page=1, pages=1, total=1)
    html += overview_page(
        tokens=[evil],
        providers=[],
        alerts=[
            {
                "severity": EVIL,
                "state": "firing",
                "rule": EVIL,
                "provider": EVIL,
                "token": EVIL,
                "summary": EVIL,
            }
        ],
        quarantined={},
        now=0.0,
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'alert("x")' not in html


def test_token_page_offers_restore_only_where_a_quarantine_disabled_the_key() -> None:
    t = token()
    act = Access(can_act=True, csrf="c")

    def page(quarantined: AuditRow | None, can_restore: bool, access: Access = act) -> str:
        return token_page(
            token=t, spend_svg="", heat_svg="", alerts=[], silences=[], trail=[],
            quarantined=quarantined, can_restore=can_restore, access=access,
        )  # fmt: skip

    assert "Restore…" in page(row(1, "auto"), True) and "Revoke" not in page(row(1, "auto"), True)
    assert "Restore…" not in page(row(1, "auto"), False)
    assert "Restore…" not in page(row(1, "manual", action="delete"), True)
    assert "Revoke (quarantine)…" in page(None, True)
    read_only = page(None, True, Access(can_act=False, why_not="because"))
    assert "Revoke" not in read_only and "Read-only: because" in read_only


def test_the_quarantine_in_force_is_the_newest_not_restored_since() -> None:
    # newest first, as the responder's history comes
    assert quarantined_refs([row(3, "auto"), row(2, "restore"), row(1, "manual")]) == {
        ("sim", "7"): row(3, "auto")
    }
    assert quarantined_refs([row(2, "restore"), row(1, "manual")]) == {}
    assert quarantined_refs([row(2, "restore", state="failed"), row(1, "manual")]) == {
        ("sim", "7"): row(1, "manual")
    }
    assert quarantined_refs([row(1, "auto", state="blocked")]) == {}


def test_daily_spend_sums_the_hours_of_each_utc_day() -> None:
    now = MONDAY + 10 * 3600
    points = [
        HourPoint(MONDAY - 29 * DAY, 1.0, 1),  # the oldest day shown
        HourPoint(MONDAY - 30 * DAY, 99.0, 1),  # one day too old
        HourPoint(MONDAY + 3600, 2.0, 1),
        HourPoint(MONDAY + 7200, 3.0, 1),
    ]
    days = daily_spend(points, now)
    assert len(days) == 30 and days[0] == (MONDAY - 29 * DAY, 1.0) and days[-1] == (MONDAY, 5.0)
    assert sum(v for _, v in days) == 6.0


def test_hour_of_week_puts_requests_in_their_weekday_and_hour() -> None:
    grid = hour_of_week(
        [HourPoint(MONDAY + 9 * 3600, 0.0, 5), HourPoint(MONDAY + 7 * DAY + 9 * 3600, 0.0, 2)]
    )
    assert grid[0][9] == 7 and sum(map(sum, grid)) == 7
    sunday = hour_of_week([HourPoint(MONDAY - 3600, 0.0, 1)])
    assert sunday[6][23] == 1


def test_charts_are_well_formed_svg_with_a_title_per_bar_and_cell() -> None:
    days = daily_spend([HourPoint(MONDAY, 1234.5, 3)], MONDAY)
    bars = ElementTree.fromstring(spend_svg(days, title=EVIL))
    ns = "{http://www.w3.org/2000/svg}"
    rects = bars.findall(f"{ns}rect") or bars.findall("rect")
    assert len(rects) == 30
    assert rects[-1].findtext("title") == "Nov 16: $1,234.50"
    assert float(rects[-1].get("height", "0")) > 0 and float(rects[0].get("height", "1")) == 0
    cells = ElementTree.fromstring(heatmap_svg(hour_of_week([HourPoint(MONDAY, 0.0, 4)]), title="t")).findall(
        "rect"
    )
    assert len(cells) == 7 * 24 and cells[0].findtext("title") == "Mon 00:00 UTC: 4 requests"
