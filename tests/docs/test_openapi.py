"""docs/openapi.json against the real server on loopback: every route it mounts is documented and
every documented route is mounted (method and path), every documented operation answers an
ordinary request with a documented status, the JSON it serves validates against the documented
schemas, and the documented auth is the one enforced."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from starlette.applications import Starlette
from starlette.routing import Route

from alerts.lifecycle.records import SilenceStatus
from monitor.model import RULES, SEVERITIES, TokenStatus
from tests.docs.live import Live, live_daemon

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text())
_URI = "urn:keywatch:openapi"
_REGISTRY: Registry[Any] = Registry().with_resource(_URI, DRAFT202012.create_resource(SPEC))
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
BEARER_REFUSAL = {"error": "missing or wrong bearer token"}


def operations() -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path) -> the operation object."""
    return {
        (method.upper(), path): op
        for path, item in SPEC["paths"].items()
        for method, op in item.items()
        if method in _METHODS
    }


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _response(method: str, path: str, status: int) -> tuple[dict[str, Any], str]:
    """The documented response object for `status` and the URI its schemas resolve from."""
    responses = SPEC["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, documented: {sorted(responses)}"
    where = _pointer("paths", path, method.lower(), "responses", str(status))
    response = responses[str(status)]
    if "$ref" in response:
        where = response["$ref"]
        response = _REGISTRY.resolver(_URI).lookup(where).contents
    return response, where


def check_answer(method: str, path: str, answer: httpx.Response) -> None:
    """The status is documented for the operation, and a JSON body validates against its schema."""
    response, where = _response(method, path, answer.status_code)
    content = response.get("content", {})
    media = answer.headers.get("content-type", "")
    assert media in content, f"{method} {path}: {media!r} is not documented ({sorted(content)})"
    if media == "application/json":
        ref = f"{_URI}{where}/content/application~1json/schema"
        Draft202012Validator({"$ref": ref}, registry=_REGISTRY).validate(answer.json())


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with live_daemon(tmp_path) as running:
        yield running


def mounted(live: Live) -> set[tuple[str, str]]:
    assert live.daemon.server is not None
    app = live.daemon.server.config.app
    assert isinstance(app, Starlette)
    routes = list(app.routes)
    assert all(isinstance(r, Route) for r in routes), routes
    pairs = {(m, r.path) for r in routes if isinstance(r, Route) for m in (r.methods or ())}
    # Starlette answers HEAD wherever GET is; the API documents GET only (api.md says so).
    heads = {p for m, p in pairs if m == "HEAD"}
    assert heads == {p for m, p in pairs if m == "GET"}
    return {(m, p) for m, p in pairs if m != "HEAD"}


# --- the document itself --------------------------------------------------------------------------


def test_the_document_is_openapi_3_1_with_valid_schemas() -> None:
    assert SPEC["openapi"].startswith("3.1.")
    for schema in SPEC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for (method, path), op in operations().items():
        assert op.get("operationId") and op.get("summary") and op.get("responses"), (method, path)


def test_documented_enums_are_the_codes_own() -> None:
    schemas = SPEC["components"]["schemas"]
    assert schemas["Token"]["properties"]["status"]["enum"] == list(get_args(TokenStatus))
    assert schemas["Alert"]["properties"]["rule"]["enum"] == list(RULES)
    assert schemas["Alert"]["properties"]["severity"]["enum"] == list(SEVERITIES)
    assert schemas["Silence"]["properties"]["status"]["enum"] == list(get_args(SilenceStatus))


# --- against the server ---------------------------------------------------------------------------


async def test_every_mounted_route_is_documented_and_every_documented_one_mounted(live: Live) -> None:
    served = mounted(live)
    documented = set(operations())
    assert sorted(served - documented) == [], "mounted but not in docs/openapi.json"
    assert sorted(documented - served) == [], "in docs/openapi.json but not mounted"


async def test_every_operation_answers_as_documented(live: Live) -> None:
    """One ordinary request per documented operation; the order makes each meaningful (a silence
    exists before it is listed and expired; the budget alerts of the first poll are firing)."""
    done: set[tuple[str, str]] = set()

    async def call(method: str, path: str, url: str | None = None, **kw: Any) -> httpx.Response:
        answer = await client.request(method, url or path, **kw)
        check_answer(method, path, answer)
        done.add((method, path))
        return answer

    async with live.client() as client:
        metrics = await call("GET", "/metrics", headers={"Accept-Encoding": "identity"})
        assert "keywatch_build_info" in metrics.text
        assert (await call("GET", "/healthz")).json() == {"status": "ok"}
        assert (await call("GET", "/readyz")).status_code == 200
        assert len((await call("GET", "/api/v1/tokens")).json()) == 24
        assert any(a["state"] == "firing" for a in (await call("GET", "/api/v1/alerts")).json())
        silence = {"matchers": ["token=dev-*", "rule=~budget.*"], "duration": "2h", "comment": "docs"}
        added = (await call("POST", "/api/v1/silences", json=silence)).json()
        assert added["status"] == "active"
        assert [s["id"] for s in (await call("GET", "/api/v1/silences")).json()] == [added["id"]]
        url = f"/api/v1/silences/{added['id']}"
        assert (await call("DELETE", "/api/v1/silences/{id}", url)).json()["status"] == "expired"
        body, signed = live.signed_report(live.reported.key, "sk-not-ours")
        answer = (await call("POST", "/api/v1/leak-reports", content=body, headers=signed)).json()
        assert [a.get("label") for a in answer] == ["true_positive", None]
    assert done == set(operations()), "give every documented operation an ordinary request here"


async def test_error_answers_are_documented(live: Live) -> None:
    cases: list[tuple[str, str, str | None, dict[str, Any]]] = [
        ("POST", "/api/v1/silences", None, {"json": {"matchers": [], "comment": "x"}}),  # 400
        ("POST", "/api/v1/silences", None, {"content": b"{" + b" " * 70_000 + b"}"}),  # 413
        ("DELETE", "/api/v1/silences/{id}", "/api/v1/silences/abc", {}),  # 400
        ("DELETE", "/api/v1/silences/{id}", "/api/v1/silences/99", {}),  # 404
        ("POST", "/api/v1/leak-reports", None, {"content": b"[]"}),  # 401: unsigned
        ("POST", "/api/v1/leak-reports", None, {"content": b"[" + b" " * (3 << 20) + b"]"}),  # 413
    ]
    async with live.client() as client:
        for method, path, url, kw in cases:
            answer = await client.request(method, url or path, **kw)
            assert answer.status_code >= 400, (method, url or path)
            check_answer(method, path, answer)
        for body, headers, status in [
            (b"{}", live.signed(b"{}"), 400),  # signed, but not an array of reports
            (b"{}", live.signed(b"[]"), 401),  # signed for another body
        ]:
            answer = await client.post("/api/v1/leak-reports", content=body, headers=headers)
            assert answer.status_code == status
            check_answer("POST", "/api/v1/leak-reports", answer)


async def test_the_documented_security_is_the_enforced_one(live: Live) -> None:
    """With api_token set: operations that require the bearer token refuse a request without it
    (401, as documented); those documented with `security: []` do not ask for it."""
    async with live.client(auth=False) as client:
        for (method, path), op in operations().items():
            url = path.replace("{id}", "1")
            answer = await client.request(method, url, content=b"[]" if method == "POST" else None)
            needs_token = op.get("security", SPEC["security"]) != []
            refused = answer.status_code == 401 and answer.json() == BEARER_REFUSAL
            assert refused == needs_token, (method, path, answer.status_code)
            if needs_token:
                check_answer(method, path, answer)
