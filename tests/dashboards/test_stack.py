"""The real thing: `keywatch simulate` feeds `keywatch run`, a real Prometheus (Debian's) scrapes it
every second and evaluates rules.yml, and every query of every dashboard panel and variable is run
through Prometheus's HTTP API: it must parse and return data. Also `promtool check metrics` on the
live /metrics, and every metric the dashboards and rules use must be in that scrape."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.dashboards._support import (
    GRAFANA_VARIABLES,
    PROMETHEUS_SERIES,
    RULES,
    PanelQuery,
    VariableQuery,
    load_dashboard,
    metric_names,
    need_binary,
    need_cli,
    panel_queries,
    rule_exprs,
    substitute,
    variable_queries,
)

pytestmark = pytest.mark.e2e

PANEL_QUERIES = panel_queries()
VARIABLE_QUERIES = variable_queries()

SIM_ADMIN_TOKEN = "sim-admin-token"  # the simulator's fixed admin token
STARTUP_TIMEOUT = 90.0  # seconds for each process to become ready
MIN_SAMPLES = 6  # scrapes (1 s apart) before queries over [1m] windows have rates to show

T = TypeVar("T")


# ---------------------------------------------------------------------------- processes


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together, so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


class Process:
    """A child process whose output goes to a log file, stopped with SIGTERM (then SIGKILL) at exit."""

    def __init__(self, name: str, argv: list[str], log: Path, cwd: Path) -> None:
        self.name, self.log_path = name, log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd
        )

    def log(self, tail: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-tail:]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._log.close()


def wait_for(
    what: str, check: Callable[[], T | None], *, processes: list[Process], timeout: float = STARTUP_TIMEOUT
) -> T:
    """Poll `check` until it returns a value, failing at the deadline or when a process died."""
    deadline = time.monotonic() + timeout
    while True:
        for p in processes:
            p.check_alive()
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}:\n{p.log()}" for p in processes)
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")
        time.sleep(0.25)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


def status_is(url: str, status: int) -> Callable[[], bool | None]:
    def check() -> bool | None:
        try:
            return True if http_get(url, timeout=2)[0] == status else None
        except OSError:
            return None

    return check


# ---------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    keywatch: str  # base URL
    prometheus: str  # base URL

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = http_get(url, timeout=30)
        doc = json.loads(body)
        assert status == 200 and doc.get("status") == "success", f"{path} {params}: {status} {doc}"
        return doc["data"]

    def query(self, expr: str) -> Any:
        return self.api("query", query=expr)


def keywatch_config(path: Path, *, listen: str, simulator: str, database: Path) -> None:
    # JSON is YAML; budgets for every token so the budget panels have something to show
    config = {
        "listen": listen,
        "database": f"sqlite:///{database}",
        "providers": [
            {
                "name": "sim",
                "kind": "laozhang",
                "base_url": simulator,
                "admin_token": SIM_ADMIN_TOKEN,
                "poll_interval": "2s",
            }
        ],
        "tokens": [{"match": "*", "budget": {"daily_usd": 50, "monthly_usd": 500}}],
    }
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def prometheus_config(path: Path, *, target: str) -> None:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "keywatch", "static_configs": [{"targets": [target]}]}],
    }
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = need_binary("prometheus")
    need_cli()
    tmp = tmp_path_factory.mktemp("stack")
    sim_port, kw_port, prom_port = free_ports(3)
    kw_url, prom_url = f"http://127.0.0.1:{kw_port}", f"http://127.0.0.1:{prom_port}"
    processes: list[Process] = []
    try:
        cli = [sys.executable, "-m", "monitor"]
        sim = Process(
            "keywatch simulate",
            [*cli, "simulate", "--listen", f"127.0.0.1:{sim_port}", "--tokens", "8", "--seed", "7"],
            tmp / "simulate.log",
            tmp,
        )
        processes.append(sim)
        wait_for("the simulator's port", port_open(sim_port), processes=processes)

        keywatch_config(
            tmp / "keywatch.yaml",
            listen=f"127.0.0.1:{kw_port}",
            simulator=f"http://127.0.0.1:{sim_port}",
            database=tmp / "keywatch.db",
        )
        kw = Process(
            "keywatch run", [*cli, "-c", str(tmp / "keywatch.yaml"), "run"], tmp / "keywatch.log", tmp
        )
        processes.append(kw)
        wait_for("keywatch /readyz", status_is(f"{kw_url}/readyz", 200), processes=processes)

        prometheus_config(tmp / "prometheus.yml", target=f"127.0.0.1:{kw_port}")
        prom = Process(
            "prometheus",
            [
                prometheus,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            tmp / "prometheus.log",
            tmp,
        )
        processes.append(prom)
        wait_for("prometheus /-/ready", status_is(f"{prom_url}/-/ready", 200), processes=processes)
        s = Stack(kw_url, prom_url)
        wait_for(f"{MIN_SAMPLES} scrapes of keywatch", samples_scraped(s), processes=processes)
        wait_for("every rule evaluated", rules_evaluated(s), processes=processes)
        yield s
        for p in processes:
            p.check_alive()  # nothing crashed while the tests ran
    finally:
        for p in reversed(processes):
            p.stop()


def port_open(port: int) -> Callable[[], bool | None]:
    def check() -> bool | None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        return None

    return check


def samples_scraped(s: Stack) -> Callable[[], bool | None]:
    def check() -> bool | None:
        result = s.query(
            f'count_over_time(up{{job="keywatch"}}[1m]) >= {MIN_SAMPLES} and up{{job="keywatch"}} == 1'
        )
        return True if result["result"] else None

    return check


def rules_evaluated(s: Stack) -> Callable[[], bool | None]:
    def check() -> bool | None:
        rules = [r for g in s.api("rules")["groups"] for r in g["rules"]]
        done = rules and all(not r.get("lastEvaluation", "").startswith("0001-") for r in rules)
        return True if done else None

    return check


# ---------------------------------------------------------------------------- the variables


@pytest.fixture(scope="module")
def variables(stack: Stack) -> dict[str, str]:
    """Values for the dashboard variables, as a user would pick them: all relays, and a real token,
    the one with the most of the per-token series the token dashboard shows (ideally all of them;
    where none has all, the panels on the missing series fail by name)."""
    token_metrics: set[str] = set()
    for q in PANEL_QUERIES:
        if 'token="$token"' in q.expr:
            token_metrics |= metric_names(q.expr)
    coverage: dict[str, int] = {}
    for metric in token_metrics:
        for token in stack.api("label/token/values", **{"match[]": metric}):
            coverage[token] = coverage.get(token, 0) + 1
    assert coverage, "no token in the live metrics"
    token = min(coverage, key=lambda t: (-coverage[t], t))
    return {"provider": ".*", "token": token, **GRAFANA_VARIABLES}


# ---------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("q", PANEL_QUERIES, ids=[q.id for q in PANEL_QUERIES])
def test_panel_query_returns_data(stack: Stack, variables: dict[str, str], q: PanelQuery) -> None:
    expr = substitute(q.expr, variables)
    data = stack.query(expr)
    assert data["result"], f"{q.id}: no data for {expr}"
    if not q.instant:  # what a time series panel asks: a range over the last half minute
        now = time.time()
        ranged = stack.api("query_range", query=expr, start=f"{now - 30:.3f}", end=f"{now:.3f}", step="1")
        assert ranged["result"], f"{q.id}: no data over a range for {expr}"


@pytest.mark.parametrize("v", VARIABLE_QUERIES, ids=[v.id for v in VARIABLE_QUERIES])
def test_variable_query_returns_values(stack: Stack, variables: dict[str, str], v: VariableQuery) -> None:
    selector = substitute(v.selector, variables)
    series = stack.api("series", **{"match[]": selector})
    values = {s[v.label] for s in series if v.label in s}
    assert values, f"{v.id}: label_values({selector}, {v.label}) is empty"
    if v.name in variables and v.name != "provider":
        assert variables[v.name] in values


def test_the_token_dashboard_shows_the_chosen_token(stack: Stack, variables: dict[str, str]) -> None:
    d = load_dashboard("keywatch-token.json")
    (status,) = [p for p in d["panels"] if p["title"] == "Status"]
    result = stack.query(substitute(status["targets"][0]["expr"], variables))["result"]
    assert len(result) == 1 and result[0]["metric"].get("status"), result


def test_promtool_check_metrics_on_live_metrics(stack: Stack) -> None:
    status, body = http_get(f"{stack.keywatch}/metrics")
    assert status == 200
    done = subprocess.run(
        [need_binary("promtool"), "check", "metrics"],
        input=body,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr).decode(errors="replace")


def exposed_names(text: str) -> set[str]:
    """Sample names a text exposition declares (# TYPE, so families without samples count) or has."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}.get(
                kind, ("",)
            )
            names.update(family + suffix for suffix in suffixes)
            if kind == "counter" and not family.endswith("_total"):
                names.add(family + "_total")
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split(" ")[0])
    return names


def test_every_metric_used_is_in_the_live_scrape(stack: Stack) -> None:
    _, body = http_get(f"{stack.keywatch}/metrics")
    exposed = exposed_names(body.decode())
    used: dict[str, set[str]] = {}
    for q in PANEL_QUERIES:
        for name in metric_names(q.expr):
            used.setdefault(name, set()).add(q.id)
    for alert, expr in rule_exprs().items():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"rules.yml:{alert}")
    missing = {n: sorted(where) for n, where in used.items() if n not in exposed | PROMETHEUS_SERIES}
    assert not missing, f"not in keywatch's /metrics: {missing}"


def test_rules_evaluate_without_errors(stack: Stack) -> None:
    rules = [r for g in stack.api("rules")["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == set(rule_exprs())
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not bad


def test_a_healthy_keywatch_raises_no_health_alert(stack: Stack) -> None:
    alerts = stack.api("alerts")["alerts"]
    assert not alerts, [(a["labels"]["alertname"], a["state"]) for a in alerts]


def test_keywatch_is_healthy(stack: Stack) -> None:
    assert http_get(f"{stack.keywatch}/healthz")[0] == 200
    assert http_get(f"{stack.keywatch}/readyz")[0] == 200
