"""The Grafana dashboards: generated JSON is current, and the dashboards follow the house rules
(stable uids, a templated datasource, sensible units, a layout that fits, documented panels)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.dashboards._support import (
    GRAFANA,
    ROOT,
    all_panels,
    build_module,
    dashboard_files,
    load_dashboard,
    metric_names,
    panel_queries,
    variables_in,
)

EXPECTED = {
    "keywatch-overview.json": ("keywatch-overview", {"datasource", "provider"}),
    "keywatch-token.json": ("keywatch-token", {"datasource", "provider", "token"}),
}
GRAFANA_BUILTINS = {"__rate_interval", "__range", "__interval"}
DS_REF = {"type": "prometheus", "uid": "${datasource}"}


def content_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


def test_committed_json_is_what_build_py_makes() -> None:
    rendered = build_module().render()
    assert sorted(rendered) == [p.name for p in dashboard_files()], (
        "a dashboard JSON without a builder, or not built"
    )
    for name, text in rendered.items():
        assert (GRAFANA / name).read_text(encoding="utf-8") == text, (
            f"dashboards/grafana/{name} is stale: run `python dashboards/build.py`"
        )


def test_build_check_mode_reports_a_stale_file(tmp_path: Any) -> None:
    build = build_module()
    assert build.main(["--out", str(tmp_path)]) == 0
    assert build.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "keywatch-token.json").write_text("{}", encoding="utf-8")
    assert build.main(["--check", "--out", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_uid_schema_and_variables(name: str) -> None:
    uid, variables = EXPECTED[name]
    d = load_dashboard(name)
    assert d["uid"] == uid
    assert d["id"] is None
    assert 36 <= d["schemaVersion"] <= 41
    assert "keywatch" in d["tags"]
    templating = {v["name"]: v for v in d["templating"]["list"]}
    assert set(templating) == variables
    ds = templating["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    for v in templating.values():
        if v["type"] == "query":
            assert v["datasource"] == DS_REF
    provider = templating["provider"]
    assert provider["query"] == "label_values(keywatch_token_info, provider)"
    assert provider["includeAll"] and provider["allValue"] == ".*"
    if "token" in templating:
        assert (
            templating["token"]["query"] == 'label_values(keywatch_token_info{provider=~"$provider"}, token)'
        )
        assert not templating["token"]["includeAll"] and not templating["token"]["multi"]


def test_uids_and_titles_are_unique() -> None:
    dashboards = [load_dashboard(p.name) for p in dashboard_files()]
    assert len({d["uid"] for d in dashboards}) == len(dashboards)
    assert len({d["title"] for d in dashboards}) == len(dashboards)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_panel_and_query_uses_the_datasource_variable(name: str) -> None:
    for p in content_panels(load_dashboard(name)):
        assert p["datasource"] == DS_REF, p["title"]
        assert p["targets"], f"{p['title']}: no query"
        for t in p["targets"]:
            assert t["datasource"] == DS_REF, p["title"]
            assert t["expr"].strip(), p["title"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_variables_in_queries_exist_and_match_the_right_way(name: str) -> None:
    d = load_dashboard(name)
    defined = {v["name"] for v in d["templating"]["list"]} | GRAFANA_BUILTINS
    for p in content_panels(d):
        for t in p["targets"]:
            expr = t["expr"]
            assert variables_in(expr) <= defined, f"{p['title']}: undefined variable in {expr}"
            # $provider may be several values or All (.*): only a regex matcher is right for it;
            # $token is one token: an exact matcher.
            assert "$provider" not in re.sub(r'provider=~"\$provider"', "", expr), f"{p['title']}: {expr}"
            assert "$token" not in re.sub(r'token="\$token"', "", expr), f"{p['title']}: {expr}"
            assert "$__interval" not in expr, f"{p['title']}: use $__rate_interval in rate()/increase()"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_layout_fits_the_grid_without_overlaps(name: str) -> None:
    d = load_dashboard(name)
    panels = list(all_panels(d))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "row":
            # readable at 1080p: no sliver panels, nothing taller than the screen
            assert g["w"] >= 4 and 4 <= g["h"] <= 12, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))


def expected_unit(expr: str) -> str | None:
    names = metric_names(expr)
    if "keywatch_token_budget_used_ratio" in names or expr.startswith("sum(keywatch_provider_up"):
        return "percentunit"
    if names and names <= {
        "keywatch_token_spend_usd",
        "keywatch_token_spend_usd_total",
        "keywatch_token_budget_usd",
    }:
        return "currencyUSD"
    if "keywatch_poll_duration_seconds_bucket" in names:
        return "s"
    if any(n.endswith("_timestamp_seconds") for n in names):
        return "dateTimeFromNow" if "* 1000" in expr else "s"
    return None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_units(name: str) -> None:
    for p in content_panels(load_dashboard(name)):
        defaults = p["fieldConfig"]["defaults"]
        if p["type"] == "table":
            continue  # tables set units per column: see test_budget_table
        units = {expected_unit(t["expr"]) for t in p["targets"]} - {None}
        assert len(units) <= 1, p["title"]
        if units:
            assert defaults["unit"] == units.pop(), p["title"]


def test_budget_table_colours_thresholds_and_sorts_by_month() -> None:
    d = load_dashboard("keywatch-overview.json")
    (table,) = [p for p in content_panels(d) if p["title"] == "Budget used per token"]
    by_name = {
        o["matcher"]["options"]: {x["id"]: x["value"] for x in o["properties"]}
        for o in table["fieldConfig"]["overrides"]
    }
    for column in ("Day used", "Month used"):
        props = by_name[column]
        assert props["unit"] == "percentunit"
        assert props["custom.cellOptions"]["type"] == "color-background"
        assert [s["value"] for s in props["thresholds"]["steps"]] == [None, 0.8, 1.0]
    assert by_name["Spent this month"]["unit"] == "currencyUSD"
    assert "links" in by_name["token"]
    sort = [t for t in table["transformations"] if t["id"] == "sortBy"]
    assert sort[0]["options"]["sort"] == [{"field": "Month used", "desc": True}]


def test_token_links_point_at_the_token_dashboard() -> None:
    token_uid = load_dashboard("keywatch-token.json")["uid"]
    text = (GRAFANA / "keywatch-overview.json").read_text(encoding="utf-8")
    links = re.findall(r'"url": "(/d/[^"]+)"', text)
    assert links and all(link.startswith(f"/d/{token_uid}/") for link in links)


def test_the_panels_the_issue_asks_for_are_there() -> None:
    overview = {p["title"] for p in content_panels(load_dashboard("keywatch-overview.json"))}
    token = {p["title"] for p in content_panels(load_dashboard("keywatch-token.json"))}
    wanted_overview = {
        "Spend today",
        "Spend this month",
        "Spend rate by token (top 10, USD per hour)",
        "Budget used per token",
        "Anomaly score (top 10)",
        "Firing alerts by rule and severity",
        "Quarantines (time range)",
        "Relay up",
        "Poll duration (p50, p95)",
        "Poll errors (per minute, by reason)",
        "Last successful poll",
    }
    wanted_token = {
        "Spend rate (USD per hour)",
        "Requests per second",
        "Budget windows: spent and budget",
        "Anomaly score",
        "Last used",
        "Expires",
    }
    assert wanted_overview <= overview
    assert wanted_token <= token


def test_every_panel_is_described_in_the_panel_and_in_the_docs() -> None:
    docs = "".join(
        p.read_text(encoding="utf-8")
        for p in (ROOT / "README.md", ROOT / "docs" / "dashboards.md")
        if p.exists()
    )
    for path in dashboard_files():
        for p in content_panels(load_dashboard(path.name)):
            assert p["description"].strip(), p["title"]
            assert f"**{p['title']}**" in docs, (
                f"README/docs/dashboards.md does not explain panel {p['title']!r}"
            )


def test_queries_are_collected_from_every_panel() -> None:
    queries = panel_queries()
    panels = sum(len(content_panels(load_dashboard(p.name))) for p in dashboard_files())
    assert len({(q.dashboard, q.panel) for q in queries}) == panels
