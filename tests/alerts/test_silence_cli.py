"""`keywatch silence` under hostile input (issue 9, item 13): the CLI shares Silences.add's bounds
with the API, refuses with exit 2 and one line on stderr, and lists rows an older version stored
with absurd values."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from alerts.lifecycle.records import Silence
from alerts.lifecycle.store import AlertStore
from alerts.matchers import MAX_VALUE_CHARS, Matcher
from alerts.notification.mute import MAX_MATCHERS
from monitor.cli import main
from tests.alerts.test_cli import config


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["token=x", "--duration", "400d"], "at most 1 year"),
        (["token=x", "--duration", "99999999999w"], "too long"),
        ([r"token=~(a)\1"], "RE2 syntax"),
        (["token=~(a+)+", "--comment", ""], "comment"),
        (["token=" + "x" * 2000], f"at most {MAX_VALUE_CHARS}"),
        ([f"token=t{i}" for i in range(MAX_MATCHERS + 1)], f"at most {MAX_MATCHERS} matchers"),
    ],
)
def test_silence_add_refuses_what_the_api_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    cfg = str(config(tmp_path))
    comment = [] if "--comment" in args else ["--comment", "why"]
    assert main(["-c", cfg, "silence", "add", *args, *comment]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keywatch silence add: ") and says in err and err.count("\n") == 1


@pytest.mark.parametrize("silence_id", ["99999999999999999999", "0", "-5"])
def test_silence_expire_with_an_impossible_id_says_no_such_silence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], silence_id: str
) -> None:
    assert main(["-c", str(config(tmp_path)), "silence", "expire", silence_id]) == 1
    assert "no active silence" in capsys.readouterr().err


def test_silence_list_shows_rows_an_older_version_stored_with_absurd_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(config(tmp_path))
    assert main(["-c", cfg, "silence", "list"]) == 0  # creates the schema
    capsys.readouterr()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    try:
        AlertStore(engine).add_silence(
            Silence(None, (Matcher("token", "=~", r"(a)\1"),), 1.7e9, 6e17, "old", "from release 0.1")
        )
    finally:
        engine.dispose()
    assert main(["-c", cfg, "silence", "list"]) == 0
    assert "9999-12-31T23:59:59Z" in capsys.readouterr().out
    assert main(["-c", cfg, "silence", "list", "--all", "--json"]) == 0
    (row,) = orjson.loads(capsys.readouterr().out)
    assert row["ends_at"] == "9999-12-31T23:59:59Z" and row["matchers"] == [r"token=~(a)\1"]
