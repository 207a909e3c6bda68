"""docker-compose.yml (its default stack and its `demo` and `ha` profiles), the Dockerfile, the compose
configs for keywatch, the systemd unit and its PostgreSQL drop-in, and the CI script."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboards._support import GRAFANA, PROMETHEUS, ROOT, need_binary, need_cli

COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CONFIG = ROOT / "deploy" / "compose" / "keywatch.yaml"
HA_CONFIG = ROOT / "deploy" / "compose" / "keywatch.ha.yaml"
HA_SERVICES = {"postgres", "keywatch-a", "keywatch-b"}
SYSTEMD_DROP_IN = ROOT / "deploy" / "systemd" / "keywatch.service.d" / "postgres.conf"
SECRETISH = re.compile(r"PASSWORD|TOKEN|SECRET|KEY", re.IGNORECASE)


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def docker_compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """docker-compose on the file; `env` is added to (and overrides) the environment it reads."""
    return subprocess.run(
        [need_binary("docker-compose"), "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> 'host:container[:mode]' for a service's volumes."""
    return {v.split(":")[1]: v for v in service.get("volumes", [])}


def rendered_mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read only) of a service as `docker-compose config` renders it:
    short strings (compose v1) or long mappings (compose v2)."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            out[target] = (source, "ro" in mode[0].split(",") if mode else False)
        else:
            out[volume["target"]] = (volume["source"], bool(volume.get("read_only")))
    return out


def rendered_host_ports(service: dict[str, Any]) -> set[tuple[str, int, int]]:
    """(host address, host port, container port) of a rendered service, in either form."""
    out = set()
    for port in service.get("ports", []):
        if isinstance(port, str):
            host_ip, published, target = port.split("/")[0].split(":")
            out.add((host_ip, int(published), int(target)))
        else:
            out.add((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
    return out


# ---------------------------------------------------------------------------- compose


@pytest.mark.parametrize(
    "profile",
    [[], ["--profile", "demo"], ["--profile", "ha"], ["--profile", "demo", "--profile", "ha"]],
    ids=["default", "demo", "ha", "demo+ha"],
)
def test_docker_compose_config_validates(profile: list[str]) -> None:
    done = docker_compose(*profile, "config", "-q")
    assert done.returncode == 0, done.stderr


def test_docker_compose_resolves_the_stack() -> None:
    done = docker_compose("--profile", "demo", "config")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    # compose v1 renders every service whatever the profiles; v2 only the active profiles' ones
    demo = {"keywatch", "simulator", "prometheus", "grafana"}
    assert demo <= set(services) <= demo | HA_SERVICES
    # host paths of bind mounts exist in the repository
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name}: {source}"


def test_demo_profile_adds_only_the_simulator() -> None:
    services = raw_compose()["services"]
    assert services["simulator"]["profiles"] == ["demo"]
    assert services["simulator"]["command"] == ["simulate", "--listen", "0.0.0.0:9478"]
    for name in ("keywatch", "prometheus", "grafana"):
        assert "profiles" not in services[name], name


def test_every_service_is_in_the_default_stack_or_one_profile() -> None:
    by_profile: dict[str, set[str]] = {}
    for name, service in raw_compose()["services"].items():
        profiles = service.get("profiles", ["(default)"])
        assert len(profiles) == 1, name
        by_profile.setdefault(profiles[0], set()).add(name)
    assert by_profile == {
        "(default)": {"keywatch", "prometheus", "grafana"},
        "demo": {"simulator"},
        "ha": HA_SERVICES,
    }


def test_keywatch_service() -> None:
    kw = raw_compose()["services"]["keywatch"]
    assert kw["build"] == "."
    assert kw["command"] == ["-c", "/etc/keywatch/keywatch.yaml", "run"]
    assert kw["init"] is True
    m = mounts(kw)
    assert m["/etc/keywatch/keywatch.yaml"] == "./deploy/compose/keywatch.yaml:/etc/keywatch/keywatch.yaml:ro"
    assert m["/var/lib/keywatch"].startswith("keywatch-data:")
    assert "keywatch-data" in raw_compose()["volumes"]
    assert "/healthz" in " ".join(kw["healthcheck"]["test"])
    assert kw["ports"] == ["127.0.0.1:9477:9477"]


def test_no_secret_in_the_compose_file() -> None:
    """Secret-looking variables only pass values through from the environment or .env, with no default."""
    for name, service in raw_compose()["services"].items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{name}: use a mapping for environment"
        for key, value in env.items():
            if SECRETISH.search(key):
                assert value == f"${{{key}:-}}", f"{name}: {key} must be passed through, not set here"
    assert not re.search(
        r"(?i)(password|secret|token)\s*[:=]\s*[\"']?[A-Za-z0-9_+/-]{8,}", COMPOSE.read_text()
    )


def test_prometheus_and_grafana_get_their_files_read_only() -> None:
    services = raw_compose()["services"]
    prom = mounts(services["prometheus"])
    assert prom["/etc/prometheus"] == "./dashboards/prometheus:/etc/prometheus:ro"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = mounts(services["grafana"])
    assert (
        grafana["/etc/grafana/provisioning"]
        == "./dashboards/grafana/provisioning:/etc/grafana/provisioning:ro"
    )
    assert grafana["/etc/grafana/dashboards/keywatch"].endswith(":ro")
    # the provisioning file reads the dashboards from where compose mounts them
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "keywatch.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards/keywatch"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / Path(home).name).exists()


def test_grafana_datasource_matches_prometheus() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "keywatch.yml").read_text())[
        "datasources"
    ]
    (prom,) = ds
    assert prom["type"] == "prometheus" and prom["url"] == "http://prometheus:9090" and prom["isDefault"]
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert prom["jsonData"]["timeInterval"] == scrape["global"]["scrape_interval"]
    (job,) = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["keywatch:9477"]


def test_compose_keywatch_config_fits_the_containers() -> None:
    text = COMPOSE_CONFIG.read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    assert config["listen"] == "0.0.0.0:9477"
    assert config["database"] == "sqlite:////var/lib/keywatch/keywatch.db"
    (provider,) = config["providers"]
    assert provider["base_url"] == "${KEYWATCH_RELAY_URL:-http://simulator:9478}"
    assert provider["admin_token"] == "${KEYWATCH_RELAY_ADMIN_TOKEN:-sim-admin-token}"
    # every variable the config reads is passed through by compose
    env = raw_compose()["services"]["keywatch"]["environment"]
    assert set(re.findall(r"\$\{(\w+)", json.dumps(config))) <= set(env)


def test_compose_keywatch_config_validates() -> None:
    need_cli()
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "-c", str(COMPOSE_CONFIG), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------------------- the `ha` profile


def render_ha(**env: str) -> dict[str, Any]:
    done = docker_compose("--profile", "ha", "config", env=env)
    assert done.returncode == 0, done.stderr
    services: dict[str, Any] = yaml.safe_load(done.stdout)["services"]
    return services


def test_ha_profile_renders_postgres_and_two_keywatch_on_it() -> None:
    services = render_ha(POSTGRES_USER="kw_user", POSTGRES_DB="kw_db", POSTGRES_PASSWORD="")
    assert set(services) >= HA_SERVICES
    pg = services["postgres"]
    assert pg["image"] == "postgres:15"
    check = " ".join(pg["healthcheck"]["test"])
    assert pg["healthcheck"]["test"][0] == "CMD-SHELL" and "pg_isready" in check
    assert {"POSTGRES_USER", "POSTGRES_DB"} <= {w.strip('"${}') for w in check.split()}
    assert rendered_mounts(pg)["/var/lib/postgresql/data"][0] == "postgres-data"
    assert "ports" not in pg, "PostgreSQL stays on the compose network"
    assert pg["environment"]["POSTGRES_USER"] == "kw_user" and pg["environment"]["POSTGRES_DB"] == "kw_db"

    a, b = services["keywatch-a"], services["keywatch-b"]
    for kw in (a, b):
        assert kw["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert kw["image"] == services["keywatch"]["image"] and kw["init"] is True
        assert kw["command"] == ["-c", "/etc/keywatch/keywatch.yaml", "run"]
        source, read_only = rendered_mounts(kw)["/etc/keywatch/keywatch.yaml"]
        assert Path(source) == HA_CONFIG and read_only
        # the database the config names is the one PostgreSQL creates, as the user it creates
        assert kw["environment"]["POSTGRES_USER"] == "kw_user"
        assert kw["environment"]["POSTGRES_DB"] == "kw_db"
        assert kw["restart"] == "unless-stopped"
    # the same instance but for its name and its host port
    same = {k: v for k, v in a.items() if k not in ("hostname", "ports", "container_name")}
    assert same == {k: v for k, v in b.items() if k not in ("hostname", "ports", "container_name")}
    assert a["hostname"] != b["hostname"]
    ports = [rendered_host_ports(s) for s in (a, b, services["keywatch"])]
    assert ports[0] == {("127.0.0.1", 9481, 9477)} and ports[1] == {("127.0.0.1", 9482, 9477)}
    assert len({p for group in ports for _, p, _ in group}) == 3, "distinct host ports"


def test_ha_keywatch_config_is_the_compose_config_on_postgres() -> None:
    ha = yaml.safe_load(HA_CONFIG.read_text(encoding="utf-8"))
    single = yaml.safe_load(COMPOSE_CONFIG.read_text(encoding="utf-8"))
    # one relay, policy and notification setup for both stacks: only the database and the cluster differ
    assert {k: v for k, v in ha.items() if k not in ("database", "cluster")} == {
        k: v for k, v in single.items() if k != "database"
    }
    assert ha["database"] == (
        "postgresql+psycopg://${POSTGRES_USER:-keywatch}:${POSTGRES_PASSWORD}@postgres/${POSTGRES_DB:-keywatch}"
    )
    env = raw_compose()["services"]["keywatch-a"]["environment"]
    assert set(re.findall(r"\$\{(\w+)", json.dumps(ha))) <= set(env)


def test_ha_keywatch_config_validates_as_the_container_sees_it() -> None:
    """The config with the environment compose gives keywatch-a: it names the postgres service and
    its database, and the summary shows no password."""
    need_cli()
    sentinel = "pw0f" + "9c1d" * 6
    env = render_ha(POSTGRES_DB="kw_db", POSTGRES_PASSWORD=sentinel)["keywatch-a"]["environment"]
    assert env["POSTGRES_PASSWORD"] == sentinel
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEYWATCH_", "POSTGRES_"))}
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "-c", str(HA_CONFIG), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**clean, **{k: str(v) for k, v in env.items()}},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "database: postgresql+psycopg://postgres/kw_db" in done.stdout
    assert sentinel not in done.stdout + done.stderr


# ---------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile() -> None:
    instructions = dockerfile()
    args = {rest.split("=")[0]: rest.split("=")[1] for word, rest in instructions if word == "ARG"}
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    final = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    final_stage = instructions[final:]
    users = [rest for word, rest in final_stage if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must not run as root"
    last = {word: rest for word, rest in final_stage}
    assert json.loads(last["ENTRYPOINT"]) == ["keywatch"], "exec form, so SIGTERM reaches keywatch"
    assert json.loads(last["CMD"]) == ["-c", "/etc/keywatch/keywatch.yaml", "run"]
    assert "/healthz" in last["HEALTHCHECK"] and "curl" not in last["HEALTHCHECK"]
    assert last["EXPOSE"] == "9477"
    assert "/var/lib/keywatch" in last["VOLUME"]
    # the image runs on PostgreSQL too: the build installs the postgres extra and imports its driver
    installs = [rest for word, rest in instructions[:final] if word == "RUN" and "pip install" in rest]
    assert any(re.search(r"pip install '?\.\[postgres\]'?", rest) for rest in installs), installs
    assert any("import psycopg" in rest for rest in installs)


def test_dockerignore_keeps_what_the_build_copies() -> None:
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"
    kept = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = set()
    for word, rest in dockerfile():
        if word == "COPY" and "--from" not in rest:
            copied.update(p.rstrip("/").removeprefix("./") for p in rest.split()[:-1])
    assert copied <= kept
    for path in copied:
        assert (ROOT / path).exists(), path


# ---------------------------------------------------------------------------- systemd


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (ROOT / "deploy" / "keywatch.service").read_text(encoding="utf-8")
    assert "ExecStart=/opt/keywatch/bin/keywatch -c /etc/keywatch/keywatch.yaml run" in unit
    # verify needs the binary to exist: point the unit at a stand-in
    stand_in = tmp_path / "keywatch"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    (tmp_path / "keywatch.service").write_text(unit.replace("/opt/keywatch/bin/keywatch", str(stand_in)))
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / "keywatch.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def verify_with_drop_in(analyze: str, folder: Path, drop_in: str) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify of deploy/keywatch.service with `drop_in` beside it, in its .d folder."""
    stand_in = folder / "keywatch"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    unit = (ROOT / "deploy" / "keywatch.service").read_text(encoding="utf-8")
    (folder / "keywatch.service").write_text(unit.replace("/opt/keywatch/bin/keywatch", str(stand_in)))
    (folder / "keywatch.service.d").mkdir(exist_ok=True)
    (folder / "keywatch.service.d" / SYSTEMD_DROP_IN.name).write_text(drop_in)
    return subprocess.run(
        [analyze, "verify", str(folder / "keywatch.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_systemd_postgres_drop_in(tmp_path: Path) -> None:
    text = SYSTEMD_DROP_IN.read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert "Restart=always" in lines and "After=network-online.target" in lines
    assert "Wants=network-online.target" in lines and "StartLimitIntervalSec=0" in lines
    # required (no leading "-"): without the database password the unit does not start
    assert "EnvironmentFile=/etc/keywatch/postgres.env" in lines
    assert all("#" not in ln for ln in lines), "systemd takes no comment after a value"
    assert "deploy/keywatch.service" in text and "docs/scaling.md" in text
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    done = verify_with_drop_in(analyze, tmp_path, text)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    # and verify reads the drop-in in this layout: a bad key in it is reported
    bad = verify_with_drop_in(analyze, tmp_path, text + "NoSuchKey=1\n")
    assert "NoSuchKey" in bad.stderr


# ---------------------------------------------------------------------------- CI


def test_ci_script() -> None:
    script = ROOT / ".ci" / "run"
    text = script.read_text(encoding="utf-8")
    assert "set -euo pipefail" in text and "make test" in text
    # PostgreSQL is started, with role root trusted on 127.0.0.1, before the tests run
    before_tests = text[: text.index("\nmake test")]
    assert "pg_ctlcluster --skip-systemctl-redirect" in before_tests
    assert "createuser -p 5432 -s root" in before_tests
    assert "host all all 127.0.0.1/32 trust" in before_tests
    assert "postgresql" in before_tests  # the Debian package when pg_ctlcluster is missing
    done = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
