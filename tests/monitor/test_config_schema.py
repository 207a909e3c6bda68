"""The config's JSON Schema (`monitor.config.json_schema`) and the docs generated from it: the example
config validates, the committed copies are what the generator writes, and the schema and the loader
agree on what a config may say."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from monitor.config import ConfigError, json_schema, load_settings
from monitor.config_doc import render, rows, schema_text

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "keywatch.example.yaml"
EXAMPLE_ENV = {"LZ_ADMIN_TOKEN": "sk-lz", "PROD_WEBAPP_KEY": "sk-prod", "NEWAPI_ADMIN_TOKEN": "sk-na"}

Edit = Callable[[dict[str, Any]], object]


def example() -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def schema_errors(doc: object) -> list[str]:
    validator = jsonschema.Draft202012Validator(json_schema())
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def loads(tmp_path: Path, doc: dict[str, Any]) -> bool:
    (tmp_path / "admin.txt").write_text("sk-file\n")
    path = tmp_path / "kw.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    try:
        load_settings(path, env=EXAMPLE_ENV)
    except ConfigError:
        return False
    return True


def test_the_schema_is_draft_2020_12() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_example_config_validates_against_the_schema() -> None:
    assert schema_errors(example()) == []


def test_the_example_config_points_editors_at_the_schema() -> None:
    first = EXAMPLE.read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=./docs/keywatch.schema.json"
    assert (EXAMPLE.parent / "docs" / "keywatch.schema.json").is_file()


def test_the_committed_schema_and_reference_are_generated() -> None:
    """Regenerate both with `python -m monitor.config_doc` when this fails."""
    schema = json_schema()
    assert (REPO / "docs" / "keywatch.schema.json").read_text(encoding="utf-8") == schema_text(schema)
    assert (REPO / "docs" / "config.md").read_text(encoding="utf-8") == render(schema)


def test_every_key_is_described_and_in_the_reference() -> None:
    schema = json_schema()
    reference = render(schema)
    keys = list(rows(schema))
    assert len(keys) > 80
    for row in keys:
        described = row.schema.get("description") or any(
            "description" in b for b in row.schema.get("anyOf", ()) if b.get("type") != "null"
        )
        assert described, row.path
        assert f"| `{row.path}` |" in reference or f"## `{row.path}`" in reference, row.path


def test_defaults_are_shown_as_users_write_them() -> None:
    by_path = {row.path: row for row in rows(json_schema())}
    assert by_path["providers[].poll_interval"].schema["default"] == "1m"
    assert by_path["retention.hourly"].schema["default"] == "400d"
    assert by_path["notify.routes.security"].schema["default"] == ["security", "critical"]
    assert by_path["providers"].required and by_path["providers[].name"].required


# Changes to the example; the schema and the loader must both refuse each (the loader's messages are
# tested in test_config.py).
INVALID: dict[str, Edit] = {
    "unknown-key": lambda d: d.update(retension={"raw": "1d"}),
    "unknown-nested-key": lambda d: d["rules"]["anomaly"].update(sensitivty=3),
    "unknown-key-in-nested-section": lambda d: d["rules"].update(expiry={"warn_befor": "1d"}),
    "source-is-set-by-the-loader": lambda d: d.update(source="x.yaml"),
    "no-providers": lambda d: d.pop("providers"),
    "empty-providers": lambda d: d.update(providers=[]),
    "missing-admin-token": lambda d: d["providers"][0].pop("admin_token"),
    "admin-token-twice": lambda d: d["providers"][0].update(admin_token_file="admin.txt"),
    "newapi-without-user-id": lambda d: d["providers"][1].pop("user_id"),
    "kind-typo": lambda d: d["providers"][0].update(kind="laozang"),
    "bad-provider-name": lambda d: d["providers"][0].update(name="LZ"),
    "bad-duration": lambda d: d["providers"][0].update(poll_interval="5 minutes"),
    "concurrency-out-of-range": lambda d: d["providers"][0].update(concurrency=0),
    "quoted-number": lambda d: d["tokens"][0]["budget"].update(daily_usd="50"),
    "for-zero": lambda d: d["rules"]["anomaly"].update({"for": 0}),
    "no-thresholds": lambda d: d["rules"]["budget"].update(thresholds=[]),
    "route-typo": lambda d: d["notify"]["routes"].update(critcal=["critical"]),
    "bad-listen": lambda d: d.update(listen="localhost"),
    "bad-action": lambda d: d["response"].update(action="remove"),
}

VALID: dict[str, Edit] = {
    "admin-token-from-a-file": lambda d: (
        d["providers"][0].pop("admin_token"),
        d["providers"][0].update(admin_token_file="admin.txt"),
    ),
    "a-number-from-the-environment": lambda d: d["providers"][0].update(concurrency="${CONCURRENCY:-4}"),
    "a-boolean-from-the-environment": lambda d: d["response"].update(dry_run="${DRY_RUN:-true}"),
    "null-means-not-set": lambda d: d.update(notify=None, retention={"raw": None}),
    "a-bare-notify-url": lambda d: d["notify"].update(
        urls=["json://localhost"],
        routes={key: ["all"] for key in ("critical", "warning", "info", "security")},
    ),
    "a-duration-in-seconds": lambda d: d["providers"][0].update(poll_interval=30),
}


@pytest.mark.parametrize("edit", INVALID.values(), ids=INVALID.keys())
def test_the_schema_refuses_what_the_loader_refuses(tmp_path: Path, edit: Edit) -> None:
    doc = copy.deepcopy(example())
    edit(doc)
    assert schema_errors(doc) != []
    assert not loads(tmp_path, doc)


@pytest.mark.parametrize("edit", VALID.values(), ids=VALID.keys())
def test_the_schema_takes_what_the_loader_takes(tmp_path: Path, edit: Edit) -> None:
    doc = copy.deepcopy(example())
    edit(doc)
    assert schema_errors(doc) == []
    assert loads(tmp_path, doc)


def test_reading_settings_needs_no_pydantic_until_a_config_is_read() -> None:
    """Settings are imported by every command, `keywatch --help` too; pydantic costs ~0.2 s to import."""
    code = (
        "import sys, monitor.settings, monitor.config; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"
