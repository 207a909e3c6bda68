"""docker-compose.yml, the Dockerfile, the compose config for keywatch and the systemd unit."""

from __future__ import annotations

import json
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
SECRETISH = re.compile(r"PASSWORD|TOKEN|SECRET|KEY", re.IGNORECASE)


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def docker_compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_binary("docker-compose"), "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> 'host:container[:mode]' for a service's volumes."""
    return {v.split(":")[1]: v for v in service.get("volumes", [])}


# ---------------------------------------------------------------------------- compose


@pytest.mark.parametrize("profile", [[], ["--profile", "demo"]], ids=["default", "demo"])
def test_docker_compose_config_validates(profile: list[str]) -> None:
    done = docker_compose(*profile, "config", "-q")
    assert done.returncode == 0, done.stderr


def test_docker_compose_resolves_the_stack() -> None:
    done = docker_compose("--profile", "demo", "config")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert set(services) == {"keywatch", "simulator", "prometheus", "grafana"}
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


# ---------------------------------------------------------------------------- CI


def test_ci_script() -> None:
    script = ROOT / ".ci" / "run"
    text = script.read_text(encoding="utf-8")
    assert "set -euo pipefail" in text and "make test" in text
    done = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
