"""Build keywatch's Grafana dashboards as JSON (plain Python, no dependencies).

    python dashboards/build.py          # write dashboards/grafana/*.json
    python dashboards/build.py --check  # exit 1 if a committed file differs from what this builds

The dashboards are code so that queries, units and layout are reviewed as code; the committed JSON
is what Grafana provisions, and tests/dashboards checks it is current. Metric names come from
docs/metrics.md and must not be renamed here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "grafana"

SCHEMA_VERSION = 39
DS: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
P = 'provider=~"$provider"'  # every query filters on the provider variable (multi, All = .*)
TOK = f'{P}, token="$token"'

OVERVIEW_UID = "keywatch-overview"
TOKEN_UID = "keywatch-token"
TOKEN_LINK = (
    f"/d/{TOKEN_UID}/keywatch-token?var-datasource=${{datasource}}"
    "&var-provider=${__data.fields.provider}&var-token=${__data.fields.token}&${__url_time_range}"
)

GREEN, ORANGE, RED, BLUE, PURPLE = "green", "orange", "red", "blue", "purple"
SEVERITY_COLOURS = {"info": BLUE, "warning": ORANGE, "critical": RED, "security": PURPLE}
BUDGET_STEPS = [(None, GREEN), (0.8, ORANGE), (1.0, RED)]  # budget used ratio
ANOMALY_SENSITIVITY = 4.0  # rules.anomaly.sensitivity default (docs/config.md)

Json = dict[str, Any]


# ---------------------------------------------------------------------------- building blocks


def steps(*pairs: tuple[float | None, str]) -> Json:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in pairs]}


def value_map(mapping: dict[str, tuple[str, str]]) -> list[Json]:
    """{raw value: (text, colour)} -> one Grafana value mapping."""
    options = {
        k: {"text": text, "color": colour, "index": i}
        for i, (k, (text, colour)) in enumerate(mapping.items())
    }
    return [{"type": "value", "options": options}]


def target(
    expr: str,
    legend: str = "",
    *,
    ref: str = "A",
    instant: bool = False,
    table: bool = False,
) -> Json:
    t: Json = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    if table:
        t["format"] = "table"
    return t


def panel(
    kind: str,
    title: str,
    description: str,
    targets: list[Json],
    *,
    unit: str = "short",
    decimals: int | None = None,
    thresholds: Json | None = None,
    mappings: list[Json] | None = None,
    color: Json | None = None,
    custom: Json | None = None,
    options: Json | None = None,
    overrides: list[Json] | None = None,
    transformations: list[Json] | None = None,
    extra_defaults: Json | None = None,
) -> Json:
    defaults: Json = {
        "unit": unit,
        "color": color or {"mode": "thresholds"},
        "thresholds": thresholds or steps((None, GREEN)),
        "mappings": mappings or [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    if custom:
        defaults["custom"] = custom
    defaults.update(extra_defaults or {})
    p: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if transformations:
        p["transformations"] = transformations
    return p


def stat(
    title: str,
    description: str,
    expr: str,
    *,
    legend: str = "",
    unit: str = "short",
    text_mode: str = "value",
    color_mode: str = "value",
    graph: bool = False,
    no_value: str | None = None,
    **kw: Any,
) -> Json:
    extra = {"noValue": no_value} if no_value is not None else None
    return panel(
        "stat",
        title,
        description,
        [target(expr, legend, instant=not graph)],
        unit=unit,
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "auto",
            "textMode": text_mode,
            "colorMode": color_mode,
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "wideLayout": True,
            "showPercentChange": False,
        },
        extra_defaults=extra,
        **kw,
    )


def timeseries(
    title: str,
    description: str,
    targets: list[Json],
    *,
    unit: str,
    axis_label: str = "",
    fill: int = 10,
    stack: bool = False,
    threshold_lines: bool = False,
    legend_table: bool = False,
    draw: str = "line",
    interpolation: str = "linear",
    soft_min: float | None = 0,
    **kw: Any,
) -> Json:
    custom: Json = {
        "drawStyle": draw,
        "lineInterpolation": interpolation,
        "lineWidth": 1,
        "fillOpacity": fill,
        "gradientMode": "none",
        "showPoints": "never",
        "spanNulls": False,
        "axisLabel": axis_label,
        "axisPlacement": "auto",
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if threshold_lines else "off"},
    }
    if soft_min is not None:
        custom["axisSoftMin"] = soft_min
    legend: Json = {"showLegend": True, "placement": "bottom", "displayMode": "list", "calcs": []}
    if legend_table:
        legend = {
            "showLegend": True,
            "placement": "right",
            "displayMode": "table",
            "calcs": ["mean", "max", "lastNotNull"],
        }
        legend["sortBy"], legend["sortDesc"] = "Last *", True
    kw.setdefault("color", {"mode": "palette-classic"})
    return panel(
        "timeseries",
        title,
        description,
        targets,
        unit=unit,
        custom=custom,
        options={"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}},
        **kw,
    )


def table(
    title: str,
    description: str,
    targets: list[Json],
    *,
    rename: dict[str, str],
    sort_by: str,
    order: dict[str, int] | None = None,
    hide: Iterable[str] = ("Time",),
    **kw: Any,
) -> Json:
    transformations: list[Json] = []
    if len(targets) > 1:
        transformations.append({"id": "merge", "options": {}})
    organize: Json = {
        "excludeByName": dict.fromkeys(hide, True),
        "renameByName": rename,
        "indexByName": order or {},
    }
    transformations.append({"id": "organize", "options": organize})
    transformations.append({"id": "sortBy", "options": {"sort": [{"field": sort_by, "desc": True}]}})
    return panel(
        "table",
        title,
        description,
        targets,
        custom={"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False, "filterable": False},
        options={
            "showHeader": True,
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"], "fields": ""},
        },
        transformations=transformations,
        **kw,
    )


def coloured_cells(name: str, *, unit: str, thresholds: Json, mode: str = "color-background") -> Json:
    """Override: the column `name` in `unit`, its cells coloured by `thresholds`."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [
            {"id": "unit", "value": unit},
            {"id": "thresholds", "value": thresholds},
            {"id": "color", "value": {"mode": "thresholds"}},
            {"id": "custom.cellOptions", "value": {"type": mode, "mode": "basic"}},
        ],
    }


def token_link(column: str = "token") -> Json:
    return {
        "matcher": {"id": "byName", "options": column},
        "properties": [{"id": "links", "value": [{"title": "Open the token dashboard", "url": TOKEN_LINK}]}],
    }


def severity_colours(by: str) -> list[Json]:
    """Overrides that colour series named after a severity (by='name') with its fixed colour."""
    return [
        {
            "matcher": {"id": by, "options": sev},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}],
        }
        for sev, colour in SEVERITY_COLOURS.items()
    ]


class Grid:
    """Places panels left to right, one line at a time, and numbers them (stable ids)."""

    WIDTH = 24

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self.y = 0

    def _add(self, p: Json, x: int, w: int, h: int) -> None:
        p = {"id": len(self.panels) + 1, "gridPos": {"h": h, "w": w, "x": x, "y": self.y}, **p}
        self.panels.append(p)

    def row(self, title: str) -> None:
        self._add({"type": "row", "title": title, "collapsed": False, "panels": []}, 0, self.WIDTH, 1)
        self.y += 1

    def line(self, h: int, *cells: tuple[Json, int]) -> None:
        x = 0
        for p, w in cells:
            self._add(p, x, w, h)
            x += w
        if x != self.WIDTH:
            raise ValueError(f"line at y={self.y} is {x} wide, not {self.WIDTH}")
        self.y += h


def datasource_var() -> Json:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "regex": "",
        "current": {},
        "options": [],
        "hide": 0,
        "refresh": 1,
        "includeAll": False,
        "multi": False,
        "skipUrlSync": False,
    }


def query_var(name: str, label: str, query: str, *, include_all: bool, multi: bool) -> Json:
    v: Json = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": query,
        "regex": "",
        "current": {},
        "options": [],
        "hide": 0,
        "refresh": 2,  # on time range change: new tokens show up
        "sort": 1,
        "includeAll": include_all,
        "multi": multi,
        "skipUrlSync": False,
    }
    if include_all:
        v["allValue"] = ".*"
        # start on All; a multi-value variable holds lists
        v["current"] = {
            "selected": True,
            "text": ["All"] if multi else "All",
            "value": ["$__all"] if multi else "$__all",
        }
    return v


def dashboard(
    uid: str, title: str, description: str, grid: Grid, variables: list[Json], *, time_from: str
) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["keywatch"],
        "editable": True,
        "graphTooltip": 1,  # shared crosshair
        "timezone": "browser",
        "refresh": "1m",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "id": None,
        "links": [
            {
                "title": "keywatch",
                "type": "dashboards",
                "tags": ["keywatch"],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": [datasource_var(), *variables]},
        "panels": grid.panels,
    }


# ---------------------------------------------------------------------------- overview


def overview() -> Json:
    g = Grid()
    g.row("At a glance")
    g.line(
        4,
        (
            stat(
                "Spend today",
                "Sum of every token's spend in the relay's current day (keywatch_token_spend_usd{window=\"day\"}).",
                f'sum(keywatch_token_spend_usd{{{P}, window="day"}})',
                unit="currencyUSD",
                decimals=2,
                color_mode="none",
            ),
            4,
        ),
        (
            stat(
                "Spend this month",
                "Sum of every token's spend in the relay's current month.",
                f'sum(keywatch_token_spend_usd{{{P}, window="month"}})',
                unit="currencyUSD",
                decimals=2,
                color_mode="none",
            ),
            4,
        ),
        (
            stat(
                "Spend rate (USD per hour)",
                "How fast all tokens spend right now, from the keywatch_token_spend_usd_total counter.",
                f"sum(rate(keywatch_token_spend_usd_total{{{P}}}[$__rate_interval])) * 3600",
                unit="currencyUSD",
                decimals=2,
                color_mode="none",
                graph=True,
            ),
            4,
        ),
        (
            stat(
                "Tokens",
                "Tokens the relays list (any status).",
                f"count(keywatch_token_info{{{P}}})",
                unit="none",
                color_mode="none",
            ),
            4,
        ),
        (
            stat(
                "Firing alerts",
                "keywatch's own alerts that are firing now, all rules and severities.",
                "sum(keywatch_alerts_firing) or vector(0)",
                unit="none",
                thresholds=steps((None, GREEN), (1, RED)),
                color_mode="background",
            ),
            4,
        ),
        (
            stat(
                "Relays up",
                "Share of relays whose last poll succeeded.",
                f"sum(keywatch_provider_up{{{P}}}) / count(keywatch_provider_up{{{P}}})",
                unit="percentunit",
                thresholds=steps((None, RED), (0.999, GREEN)),
                color_mode="background",
            ),
            4,
        ),
    )

    g.row("Spend")
    g.line(
        9,
        (
            timeseries(
                "Spend rate by token (top 10, USD per hour)",
                "The ten tokens spending fastest at each moment. A line that jumps far above its own past "
                "is what the spend_anomaly rule looks for.",
                [
                    target(
                        f"topk(10, sum by (provider, token) "
                        f"(rate(keywatch_token_spend_usd_total{{{P}}}[$__rate_interval]))) * 3600",
                        "{{provider}}/{{token}}",
                    )
                ],
                unit="currencyUSD",
                axis_label="USD per hour",
                legend_table=True,
                overrides=[],
            ),
            16,
        ),
        (
            panel(
                "bargauge",
                "Top tokens by spend (time range)",
                "Spend per token over the dashboard's time range; the longest bar spent most.",
                [
                    target(
                        f"topk(10, sum by (provider, token) (increase(keywatch_token_spend_usd_total{{{P}}}[$__range])))",
                        "{{provider}}/{{token}}",
                        instant=True,
                    )
                ],
                unit="currencyUSD",
                decimals=2,
                color={"mode": "continuous-GrYlRd"},
                options={
                    "orientation": "horizontal",
                    "displayMode": "gradient",
                    "valueMode": "color",
                    "namePlacement": "top",
                    "showUnfilled": True,
                    "sizing": "auto",
                    "minVizHeight": 16,
                    "minVizWidth": 8,
                    "maxVizHeight": 300,
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                },
                extra_defaults={"min": 0},
            ),
            8,
        ),
    )

    g.row("Budgets and anomalies")
    g.line(
        10,
        (
            table(
                "Budget used per token",
                "Spend against budget in the day and month windows, most used first. Orange from 80 %, red "
                "from 100 %. Budgets come from keywatch.yaml, else from the token's own limits at the relay. "
                "Click a token for its dashboard.",
                [
                    target(
                        f'max by (provider, token) (keywatch_token_budget_used_ratio{{{P}, window="day"}})',
                        ref="A",
                        instant=True,
                        table=True,
                    ),
                    target(
                        f'max by (provider, token) (keywatch_token_budget_used_ratio{{{P}, window="month"}})',
                        ref="B",
                        instant=True,
                        table=True,
                    ),
                    target(
                        f'max by (provider, token) (keywatch_token_spend_usd{{{P}, window="month"}})',
                        ref="C",
                        instant=True,
                        table=True,
                    ),
                    target(
                        f'max by (provider, token) (keywatch_token_budget_usd{{{P}, window="month"}})',
                        ref="D",
                        instant=True,
                        table=True,
                    ),
                ],
                rename={
                    "Value #A": "Day used",
                    "Value #B": "Month used",
                    "Value #C": "Spent this month",
                    "Value #D": "Monthly budget",
                },
                order={
                    "provider": 0,
                    "token": 1,
                    "Month used": 2,
                    "Day used": 3,
                    "Spent this month": 4,
                    "Monthly budget": 5,
                },
                sort_by="Month used",
                overrides=[
                    coloured_cells("Day used", unit="percentunit", thresholds=steps(*BUDGET_STEPS)),
                    coloured_cells("Month used", unit="percentunit", thresholds=steps(*BUDGET_STEPS)),
                    {
                        "matcher": {"id": "byName", "options": "Spent this month"},
                        "properties": [{"id": "unit", "value": "currencyUSD"}],
                    },
                    {
                        "matcher": {"id": "byName", "options": "Monthly budget"},
                        "properties": [{"id": "unit", "value": "currencyUSD"}],
                    },
                    token_link(),
                ],
                decimals=2,
            ),
            12,
        ),
        (
            timeseries(
                "Anomaly score (top 10)",
                "How far each token's spend is above its own normal pattern, in robust deviations. The "
                f"dashed line is the default sensitivity ({ANOMALY_SENSITIVITY:g}); spend_anomaly fires above "
                "the configured sensitivity when the dollar and percent impact also pass.",
                [
                    target(
                        f"topk(10, max by (provider, token) (keywatch_token_anomaly_score{{{P}}}))",
                        "{{provider}}/{{token}}",
                    )
                ],
                unit="none",
                decimals=1,
                fill=0,
                threshold_lines=True,
                thresholds=steps((None, GREEN), (ANOMALY_SENSITIVITY, RED)),
                legend_table=True,
            ),
            12,
        ),
    )

    g.row("Alerts and response")
    g.line(
        8,
        (
            table(
                "Firing alerts by rule and severity",
                "keywatch's own rules (budget, budget_forecast, spend_anomaly, leak_suspected, token_expiring, "
                "token_unused, rotation_due, provider_down): how many alerts of each are firing now.",
                [target("sum by (rule, severity) (keywatch_alerts_firing)", instant=True, table=True)],
                rename={"Value": "Firing"},
                order={"rule": 0, "severity": 1, "Firing": 2},
                sort_by="Firing",
                overrides=[
                    coloured_cells(
                        "Firing",
                        unit="none",
                        thresholds=steps((None, "transparent"), (1, RED)),
                        mode="color-text",
                    ),
                    {
                        "matcher": {"id": "byName", "options": "severity"},
                        "properties": [
                            {
                                "id": "mappings",
                                "value": value_map({s: (s, c) for s, c in SEVERITY_COLOURS.items()}),
                            },
                            {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                        ],
                    },
                ],
            ),
            7,
        ),
        (
            timeseries(
                "Firing alerts over time",
                "Firing alerts by severity, stacked.",
                [target("sum by (severity) (keywatch_alerts_firing)", "{{severity}}")],
                unit="none",
                decimals=0,
                fill=40,
                stack=True,
                interpolation="stepAfter",
                overrides=severity_colours("byName"),
            ),
            7,
        ),
        (
            table(
                "Quarantines (time range)",
                "Tokens keywatch quarantined (disabled or deleted at the relay) in the time range: mode auto "
                "(a rule), manual (keywatch revoke) or report (a leak report); outcome done, dry_run, failed "
                "or blocked (protected, or over the hourly cap).",
                [
                    target(
                        f"sum by (provider, mode, outcome) (increase(keywatch_revocations_total{{{P}}}[$__range]))",
                        instant=True,
                        table=True,
                    )
                ],
                rename={"Value": "Count"},
                order={"provider": 0, "mode": 1, "outcome": 2, "Count": 3},
                sort_by="Count",
                decimals=0,
                overrides=[
                    {
                        "matcher": {"id": "byName", "options": "outcome"},
                        "properties": [
                            {
                                "id": "mappings",
                                "value": value_map(
                                    {
                                        "done": ("done", GREEN),
                                        "dry_run": ("dry run", BLUE),
                                        "failed": ("failed", RED),
                                        "blocked": ("blocked", ORANGE),
                                    }
                                ),
                            },
                            {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                        ],
                    }
                ],
            ),
            6,
        ),
        (
            stat(
                "Automatic quarantine",
                "Per relay: active, or PAUSED when more than response.max_per_hour automatic quarantines "
                "happened in the last hour and keywatch stopped acting on its own until a human looks.",
                f"max by (provider) (keywatch_auto_revoke_paused{{{P}}})",
                legend="{{provider}}",
                text_mode="value_and_name",
                color_mode="background",
                mappings=value_map({"0": ("active", GREEN), "1": ("PAUSED", RED)}),
                thresholds=steps((None, GREEN), (1, RED)),
            ),
            4,
        ),
    )

    g.row("keywatch and relay health")
    g.line(
        8,
        (
            panel(
                "state-timeline",
                "Relay up",
                "Whether keywatch's last poll of each relay succeeded (keywatch_provider_up).",
                [target(f"max by (provider) (keywatch_provider_up{{{P}}})", "{{provider}}")],
                mappings=value_map({"1": ("up", GREEN), "0": ("DOWN", RED)}),
                thresholds=steps((None, RED), (1, GREEN)),
                custom={"fillOpacity": 80, "lineWidth": 0},
                options={
                    "showValue": "never",
                    "mergeValues": True,
                    "alignValue": "left",
                    "rowHeight": 0.8,
                    "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "single", "sort": "none"},
                },
            ),
            8,
        ),
        (
            timeseries(
                "Poll duration (p50, p95)",
                "How long one poll of a relay takes, listing every token and its usage.",
                [
                    target(
                        "histogram_quantile(0.95, sum by (provider, le) "
                        f"(rate(keywatch_poll_duration_seconds_bucket{{{P}}}[$__rate_interval])))",
                        "{{provider}} p95",
                        ref="A",
                    ),
                    target(
                        "histogram_quantile(0.5, sum by (provider, le) "
                        f"(rate(keywatch_poll_duration_seconds_bucket{{{P}}}[$__rate_interval])))",
                        "{{provider}} p50",
                        ref="B",
                    ),
                ],
                unit="s",
                fill=0,
            ),
            8,
        ),
        (
            timeseries(
                "Poll errors (per minute, by reason)",
                "Failed polls and skipped tokens by reason (auth, timeout, http_5xx, ...). A flat zero line "
                "per relay when there are none.",
                [
                    target(
                        f"sum by (provider, reason) (rate(keywatch_poll_errors_total{{{P}}}[$__rate_interval])) * 60"
                        f" or on (provider) label_replace(0 * max by (provider) (keywatch_provider_up{{{P}}}),"
                        ' "reason", "none", "", "")',
                        "{{provider}} {{reason}}",
                    )
                ],
                unit="short",
                axis_label="errors per minute",
                fill=20,
                stack=True,
            ),
            8,
        ),
    )
    g.line(
        5,
        (
            stat(
                "Last successful poll",
                "Time since keywatch last polled each relay successfully. Orange after 5 minutes, red after 15.",
                f"time() - max by (provider) (keywatch_last_poll_success_timestamp_seconds{{{P}}})",
                legend="{{provider}}",
                unit="s",
                decimals=0,
                text_mode="value_and_name",
                thresholds=steps((None, GREEN), (300, ORANGE), (900, RED)),
            ),
            8,
        ),
        (
            stat(
                "Notifications (time range)",
                "Notifications keywatch sent, failed to send (after retries) or suppressed (silenced, "
                "inhibited, deduplicated) in the time range.",
                "sum by (outcome) (increase(keywatch_notifications_total[$__range]))",
                legend="{{outcome}}",
                unit="none",
                decimals=0,
                text_mode="value_and_name",
                color_mode="none",
                overrides=[
                    {
                        "matcher": {"id": "byName", "options": "failed"},
                        "properties": [
                            {"id": "thresholds", "value": steps((None, GREEN), (1, RED))},
                            {"id": "color", "value": {"mode": "thresholds"}},
                        ],
                    }
                ],
            ),
            10,
        ),
        (
            stat(
                "keywatch version",
                "The running keywatch build.",
                "max by (version) (keywatch_build_info)",
                legend="{{version}}",
                text_mode="name",
                color_mode="none",
            ),
            6,
        ),
    )
    return dashboard(
        OVERVIEW_UID,
        "keywatch / Overview",
        "Spend, budgets, anomalies, alerts, quarantines and relay health across all watched tokens.",
        g,
        [
            query_var(
                "provider",
                "Relay",
                "label_values(keywatch_token_info, provider)",
                include_all=True,
                multi=True,
            )
        ],
        time_from="now-6h",
    )


# ---------------------------------------------------------------------------- one token


def token() -> Json:
    g = Grid()
    g.line(
        4,
        (
            stat(
                "Status",
                "The token's status at the relay (active, unused, disabled, revoked, expired, ...).",
                f"max by (status) (keywatch_token_info{{{TOK}}})",
                legend="{{status}}",
                text_mode="name",
                color_mode="none",
            ),
            4,
        ),
        (
            stat(
                "Spend today",
                "Spend in the relay's current day.",
                f'sum(keywatch_token_spend_usd{{{TOK}, window="day"}})',
                unit="currencyUSD",
                decimals=2,
                color_mode="none",
            ),
            4,
        ),
        (
            stat(
                "Spend this month",
                "Spend in the relay's current month.",
                f'sum(keywatch_token_spend_usd{{{TOK}, window="month"}})',
                unit="currencyUSD",
                decimals=2,
                color_mode="none",
            ),
            4,
        ),
        (
            panel(
                "gauge",
                "Monthly budget used",
                "Month-to-date spend over the monthly budget. Orange from 80 %, red from 100 %.",
                [target(f'max(keywatch_token_budget_used_ratio{{{TOK}, window="month"}})', instant=True)],
                unit="percentunit",
                decimals=0,
                thresholds=steps(*BUDGET_STEPS),
                options={
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "showThresholdLabels": False,
                    "showThresholdMarkers": True,
                    "orientation": "auto",
                    "minVizHeight": 75,
                    "minVizWidth": 75,
                    "sizing": "auto",
                },
                extra_defaults={"min": 0, "max": 1, "noValue": "no budget"},
            ),
            4,
        ),
        (
            stat(
                "Last used",
                "When the relay last saw a request with this token.",
                f"max(keywatch_token_last_used_timestamp_seconds{{{TOK}}}) * 1000",
                unit="dateTimeFromNow",
                color_mode="none",
                no_value="never",
            ),
            4,
        ),
        (
            stat(
                "Expires",
                "When the token expires at the relay; 'never' when it has no expiry.",
                f"max(keywatch_token_expiry_timestamp_seconds{{{TOK}}}) * 1000",
                unit="dateTimeFromNow",
                color_mode="none",
                no_value="never",
            ),
            4,
        ),
    )
    g.line(
        8,
        (
            timeseries(
                "Spend rate (USD per hour)",
                "How fast the token spends, from the keywatch_token_spend_usd_total counter.",
                [
                    target(
                        f"sum(rate(keywatch_token_spend_usd_total{{{TOK}}}[$__rate_interval])) * 3600",
                        "spend rate",
                    )
                ],
                unit="currencyUSD",
                axis_label="USD per hour",
                fill=20,
            ),
            12,
        ),
        (
            timeseries(
                "Requests per second",
                "Requests made with the token (when the relay reports them).",
                [target(f"sum(rate(keywatch_token_requests_total{{{TOK}}}[$__rate_interval]))", "requests")],
                unit="reqps",
                fill=20,
            ),
            12,
        ),
    )
    g.line(
        8,
        (
            timeseries(
                "Budget windows: spent and budget",
                "Spend in the current day and month (solid) against their budgets (dashed).",
                [
                    target(
                        f"max by (window) (keywatch_token_spend_usd{{{TOK}}})", "spent ({{window}})", ref="A"
                    ),
                    target(
                        f"max by (window) (keywatch_token_budget_usd{{{TOK}}})",
                        "budget ({{window}})",
                        ref="B",
                    ),
                ],
                unit="currencyUSD",
                fill=0,
                overrides=[
                    {
                        "matcher": {"id": "byRegexp", "options": "^budget.*"},
                        "properties": [
                            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                            {"id": "custom.lineWidth", "value": 2},
                        ],
                    }
                ],
            ),
            12,
        ),
        (
            timeseries(
                "Budget used",
                "Spend over budget per window; the dashed lines are the default alert thresholds "
                "(50 %, 80 %, 100 %).",
                [target(f"max by (window) (keywatch_token_budget_used_ratio{{{TOK}}})", "{{window}}")],
                unit="percentunit",
                fill=0,
                threshold_lines=True,
                thresholds=steps((None, GREEN), (0.5, "yellow"), (0.8, ORANGE), (1.0, RED)),
            ),
            12,
        ),
    )
    g.line(
        8,
        (
            timeseries(
                "Anomaly score",
                "How far the token's spend is above its own normal pattern, in robust deviations; the "
                f"dashed line is the default sensitivity ({ANOMALY_SENSITIVITY:g}).",
                [target(f"max(keywatch_token_anomaly_score{{{TOK}}})", "anomaly score")],
                unit="none",
                decimals=1,
                fill=0,
                threshold_lines=True,
                thresholds=steps((None, GREEN), (ANOMALY_SENSITIVITY, RED)),
            ),
            12,
        ),
        (
            table(
                "Token details",
                "What keywatch knows of the token: its id at the relay, status, and the env and project "
                "read from a name like prod-webapp-api-2024-01.",
                [
                    target(
                        f"max by (provider, token, token_id, status, env, project) (keywatch_token_info{{{TOK}}})",
                        instant=True,
                        table=True,
                    )
                ],
                rename={},
                order={"provider": 0, "token": 1, "token_id": 2, "status": 3, "env": 4, "project": 5},
                hide=("Time", "Value"),
                sort_by="token",
            ),
            12,
        ),
    )
    return dashboard(
        TOKEN_UID,
        "keywatch / Token",
        "One token: spend, requests, budget windows, anomaly score, last use and expiry.",
        g,
        [
            query_var(
                "provider",
                "Relay",
                "label_values(keywatch_token_info, provider)",
                include_all=True,
                multi=False,
            ),
            query_var(
                "token",
                "Token",
                'label_values(keywatch_token_info{provider=~"$provider"}, token)',
                include_all=False,
                multi=False,
            ),
        ],
        time_from="now-24h",
    )


# ---------------------------------------------------------------------------- files

DASHBOARDS = {"keywatch-overview.json": overview, "keywatch-token.json": token}


def render() -> dict[str, str]:
    """File name -> the JSON text this module builds."""
    return {
        name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the committed JSON is current")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run: python dashboards/build.py", file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
