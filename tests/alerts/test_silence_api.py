"""/api/v1/silences under hostile input (issue 9, item 13): every refusal is a 4xx with a JSON
error, never a 500, and nothing absurd is stored. Served by monitor.server.build_app, middleware
included, on a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import orjson
import pytest

from alerts.api import MAX_SILENCE_BODY_BYTES, routes
from alerts.engine import AlertEngine
from alerts.lifecycle.records import Silence
from alerts.lifecycle.store import AlertStore
from alerts.matchers import Matcher
from alerts.notification.mute import MAX_MATCHERS
from monitor.clock import FakeClock
from monitor.metrics import Exposition
from monitor.policy import PolicyBook
from monitor.secret import Secret
from monitor.server import build_app
from tests.alerts.notify_support import T0, sqlite_store

GOOD: dict[str, Any] = {"matchers": ["token=dev-*"], "duration": "1h", "comment": "load test"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AlertStore]:
    with sqlite_store(tmp_path / "kw.db") as s:
        yield s


@pytest.fixture
async def api(store: AlertStore) -> AsyncIterator[httpx.AsyncClient]:
    engine = SimpleNamespace(store=store, clock=FakeClock(T0), api_alerts=list)
    app = build_app(
        exposition=Exposition(PolicyBook([])),
        readiness=dict,
        tokens=list,
        api_token=lambda: Secret(""),
        listen="127.0.0.1:9477",
        extra_routes=routes(cast(AlertEngine, engine)),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kw") as client:
        yield client


async def test_a_valid_silence_is_created(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/v1/silences", json=GOOD)
    assert r.status_code == 201 and r.json()["ends_at"] == "2026-01-01T01:00:00Z"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[]", "JSON object"),
        (b'"token=x"', "JSON object"),
        (b"null", "JSON object"),
        (b"{", "unexpected"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "depth"),  # deeper than orjson goes
        (orjson.dumps({**GOOD, "matchers": "token=x"}), "list of strings"),
        (orjson.dumps({**GOOD, "matchers": [1, {"a": 2}]}), "list of strings"),
        (orjson.dumps({**GOOD, "matchers": []}), "at least one matcher"),
        (orjson.dumps({**GOOD, "matchers": ["token=x"] * (MAX_MATCHERS + 1)}), f"at most {MAX_MATCHERS}"),
        (orjson.dumps({**GOOD, "matchers": ["token=~" + "(" * 500 + ")" * 500]}), "bad regex"),
        (orjson.dumps({**GOOD, "matchers": [r"token=~(a)\1"]}), "RE2 syntax"),
        (orjson.dumps({**GOOD, "comment": 5}), "comment"),
        (orjson.dumps({**GOOD, "comment": "   "}), "comment"),
        (orjson.dumps({**GOOD, "comment": "x" * 5000}), "comment is longer"),
        (orjson.dumps({**GOOD, "created_by": {"a": 1}}), "created_by"),
        (orjson.dumps({**GOOD, "created_by": "x" * 5000}), "created_by is longer"),
        (orjson.dumps({**GOOD, "duration": [1]}), "duration"),
        (orjson.dumps({**GOOD, "duration": None}), "duration"),
        (orjson.dumps({**GOOD, "duration": True}), "duration"),
        (orjson.dumps({**GOOD, "duration": "999999999999w"}), "too long"),
        (orjson.dumps({**GOOD, "duration": 1e308}), "too long"),
        (orjson.dumps({**GOOD, "duration": -5}), "invalid duration"),
        (orjson.dumps({**GOOD, "duration": "400d"}), "at most 1 year"),
        (orjson.dumps({**GOOD, "duration": "9" * 5000}), "characters"),
    ],
)
async def test_hostile_silence_bodies_get_400_with_a_reason_and_store_nothing(
    api: httpx.AsyncClient, body: bytes, says: str
) -> None:
    r = await api.post("/api/v1/silences", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert says in r.json()["error"]
    assert (await api.get("/api/v1/silences")).json() == []


async def test_silence_body_over_the_cap_is_413_and_never_read_whole(api: httpx.AsyncClient) -> None:
    declared = await api.post("/api/v1/silences", content=b" " * (MAX_SILENCE_BODY_BYTES + 1))
    assert declared.status_code == 413 and "larger than" in declared.json()["error"]

    sent = 0

    async def fifty_megabytes() -> AsyncIterator[bytes]:  # chunked: no Content-Length to trust
        nonlocal sent
        for _ in range(50):
            sent += 1
            yield b" " * (1024 * 1024)

    streamed = await api.post("/api/v1/silences", content=fifty_megabytes())
    assert streamed.status_code == 413 and "larger than" in streamed.json()["error"]
    assert sent <= 2  # refused after the first megabyte, not after fifty


@pytest.mark.parametrize(
    ("path_id", "status"),
    [
        ("99999999999999999999", 404),  # 20 digits: past SQLite's 64-bit INTEGER
        (str(2**63), 404),
        ("0", 404),
        ("-1", 404),
        ("9" * 5000, 400),
        ("abc", 400),
        ("1e3", 400),
        ("\u0663", 400),  # an Arabic-Indic digit, which int() would take
    ],
)
async def test_deleting_a_silence_with_a_hostile_id_is_4xx(
    api: httpx.AsyncClient, path_id: str, status: int
) -> None:
    r = await api.delete(f"/api/v1/silences/{path_id}")
    assert r.status_code == status and r.json()["error"]


async def test_rows_an_older_version_stored_with_absurd_times_still_list(
    api: httpx.AsyncClient, store: AlertStore
) -> None:
    store.add_silence(Silence(None, (Matcher("token", "=", "x"),), T0, 6e17, "old", "from 0.1"))
    r = await api.get("/api/v1/silences", params={"expired": "1"})
    assert r.status_code == 200
    assert [(s["ends_at"], s["status"]) for s in r.json()] == [("9999-12-31T23:59:59Z", "active")]
    created = await api.post("/api/v1/silences", json=GOOD)
    assert created.status_code == 201
    listed = (await api.get("/api/v1/silences")).json()
    assert len(listed) == 2
    gone = await api.delete(f"/api/v1/silences/{listed[0]['id']}")
    assert gone.status_code == 200
