"""Startup errors follow the config errors' contract (issue 9, item 18): one line on stderr, never a
traceback; exit 2 for what the config says, 1 for what the machine refuses."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.procs import ROOT, free_port

pytestmark = pytest.mark.e2e

PROVIDER = """
providers:
  - name: lz
    kind: laozhang
    base_url: http://127.0.0.1:9
    admin_token: lz-admin-token-1234
"""


def keywatch(
    tmp_path: Path, config: str, *args: str, timeout: float = 30, hide: str = ""
) -> tuple[int, list[str]]:
    """`hide`: a module the process must not find, as on an install without that extra."""
    cfg = tmp_path / "kw.yaml"
    cfg.write_text(config)
    path = [str(ROOT)]
    if hide:
        shim = tmp_path / "shim"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(f"import sys\nsys.modules[{hide!r}] = None\n")
        path.insert(0, str(shim))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "-c", str(cfg), "--log-level", "error", *(args or ("run",))],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return done.returncode, done.stderr.strip().splitlines()


def one_line(lines: list[str], *words: str) -> str:
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_a_database_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    code, lines = keywatch(
        tmp_path, f"database: sqlite:////proc/keywatch/kw.db\nlisten: 127.0.0.1:{free_port()}\n" + PROVIDER
    )
    assert code == 1
    one_line(lines, "keywatch run: cannot open the database", "/proc/keywatch/kw.db")


def test_a_database_path_that_is_a_folder_is_one_line_for_every_command(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    config = f"database: sqlite:///{folder}\nlisten: 127.0.0.1:{free_port()}\n" + PROVIDER
    for command in ("run", "tokens", "alerts"):
        code, lines = keywatch(tmp_path, config, command)
        assert code == 1
        one_line(lines, f"keywatch {command}: cannot open the database")


def test_a_locked_database_is_one_line_after_the_busy_timeout(tmp_path: Path) -> None:
    db = tmp_path / "kw.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, lines = keywatch(
            tmp_path, f"database: sqlite:///{db}\nlisten: 127.0.0.1:{free_port()}\n" + PROVIDER
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 1
    one_line(lines, "database is locked")


def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, lines = keywatch(
            tmp_path, f"database: sqlite:///{tmp_path / 'kw.db'}\nlisten: 127.0.0.1:{port}\n" + PROVIDER
        )
    assert code == 1
    one_line(lines, f"cannot listen on 127.0.0.1:{port}", "in use")


def test_a_github_key_file_that_holds_no_key_is_a_config_error(tmp_path: Path) -> None:
    keys = tmp_path / "gh.pem"
    keys.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    config = (
        f"database: sqlite:///{tmp_path / 'kw.db'}\nlisten: 127.0.0.1:{free_port()}\n"
        + PROVIDER
        + f"leak_reports: {{github_public_keys: {keys}}}\n"
    )
    code, lines = keywatch(tmp_path, config)
    assert code == 2
    one_line(lines, "config error: leak_reports.github_public_keys:")


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (
            PROVIDER.replace(
                "admin_token: lz-admin-token-1234", "admin_token: x\n    poll_interval: 99999999999w"
            ),
            "poll_interval",
        ),
        (PROVIDER + "database: postgresql+psycopg://kw:pw@127.0.0.1/kw\n", "database"),
        ("providers: " + "[" * 20_000 + "]" * 20_000 + "\n", "(root)"),
    ],
    ids=["absurd-duration", "postgres-without-driver", "20000-deep-yaml"],
)
def test_config_problems_found_at_start_are_one_line_and_exit_2(
    tmp_path: Path, config: str, key: str
) -> None:
    code, lines = keywatch(tmp_path, config, hide="psycopg")
    assert code == 2
    one_line(lines, "config error:", key)
