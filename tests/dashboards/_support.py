"""What the dashboard, Prometheus and deployment tests share: where the files are, how a missing tool
is handled, the queries each dashboard and rule runs, and the metric names in a PromQL expression."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
GRAFANA = DASHBOARDS / "grafana"
PROMETHEUS = DASHBOARDS / "prometheus"
RULES = PROMETHEUS / "rules.yml"

# Series that Prometheus itself makes for every target: a rule may use them without keywatch exporting them.
PROMETHEUS_SERIES = frozenset({"up"})


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def need_binary(name: str) -> str:
    """The path of `name`; skip the test when it is missing, except in CI (CI=true), where it fails."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed (Debian: apt-get install {debian_package(name)})"
    if in_ci():
        pytest.fail(f"{reason}; CI must have it: .ci/run installs it")
    pytest.skip(reason)


def debian_package(binary: str) -> str:
    return {"promtool": "prometheus"}.get(binary, binary)


def need_cli() -> None:
    """The keywatch CLI as `python -m monitor`; skip while it does not exist yet, fail in CI."""
    if importlib.util.find_spec("monitor.__main__") is None:
        reason = "the keywatch CLI (monitor/__main__.py) does not exist yet"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)


# ---------------------------------------------------------------------------- dashboards


@cache
def build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("keywatch_dashboards_build", DASHBOARDS / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard_files() -> list[Path]:
    return sorted(GRAFANA.glob("*.json"))


@cache
def load_dashboard(name: str) -> dict[str, Any]:
    return json.loads((GRAFANA / name).read_text(encoding="utf-8"))


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included; rows themselves too."""
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # file name
    panel: str  # title
    ref: str
    expr: str
    instant: bool

    @property
    def id(self) -> str:
        return f"{self.dashboard.removesuffix('.json')}:{self.panel}:{self.ref}"


def panel_queries() -> list[PanelQuery]:
    out = []
    for path in dashboard_files():
        for p in all_panels(load_dashboard(path.name)):
            for t in p.get("targets", []):
                out.append(PanelQuery(path.name, p["title"], t["refId"], t["expr"], bool(t.get("instant"))))
    return out


@dataclass(frozen=True)
class VariableQuery:
    dashboard: str
    name: str
    selector: str  # the series selector of label_values(selector, label)
    label: str

    @property
    def id(self) -> str:
        return f"{self.dashboard.removesuffix('.json')}:${self.name}"


LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<selector>.+?)\s*,\s*(?P<label>\w+)\s*\)\s*$")


def variable_queries() -> list[VariableQuery]:
    out = []
    for path in dashboard_files():
        for v in load_dashboard(path.name)["templating"]["list"]:
            if v["type"] != "query":
                continue
            query = v["query"] if isinstance(v["query"], str) else v["query"]["query"]
            m = LABEL_VALUES.match(query)
            assert m, f"{path.name}: ${v['name']}: only label_values(selector, label) is supported: {query}"
            out.append(VariableQuery(path.name, v["name"], m["selector"], m["label"]))
    return out


# ---------------------------------------------------------------------------- rules


def rule_exprs() -> dict[str, str]:
    """Alert name -> expression, from rules.yml."""
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {r.get("alert") or r["record"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


# ---------------------------------------------------------------------------- PromQL

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE)
_IDENT = re.compile(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels, strings, numbers,
    durations and Grafana variables left out). A small lexer, not a parser: enough for our queries."""
    s = _STRING.sub('""', expr)
    s = _MATCHERS.sub(" ", s)
    s = _RANGES.sub(" ", s)
    s = _GROUPING.sub(" ", s)
    names = set()
    for m in _IDENT.finditer(s):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


GRAFANA_VARIABLES = {"__rate_interval": "1m", "__range": "5m", "__interval": "15s"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Fill in Grafana variables ($name, ${name}) the way Grafana would before it sends the query."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(one, expr)


def variables_in(expr: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in _VARIABLE.finditer(expr)}
