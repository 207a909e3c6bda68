"""The leak-report intake, over real HTTP (ASGI) with real HMAC and real ECDSA P-256 signatures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.applications import Starlette

from alerts.response.leak_reports import (
    MAX_BODY_BYTES,
    MAX_REPORTS,
    PATH,
    LeakReport,
    Match,
    ReportIntake,
    _Recent,
    load_github_keys,
    parse_github_keys,
    parse_reports,
    routes,
    verify_hmac,
)
from monitor.secret import Secret, key_sha256
from monitor.settings import LeakReports

HMAC_SECRET = "s3cret-for-leak-reports"
# Distinctive, so that any appearance in a response, a log line or an error is found.
TOKEN = "sk-LEAKEDTOKENe3b0c44298fc1c149afbf4c8996fb924"
OTHER = "sk-OTHERLEAK27ae41e4649b934ca495991b7852b855"
STRANGER = "sk-STRANGERKEYd41d8cd98f00b204e9800998ecf8427e"
ALL_TOKENS = (TOKEN, OTHER, STRANGER)

KNOWN = {
    key_sha256(TOKEN): [Match("lz", "17", "prod-webapp-api-2026-01")],
    key_sha256(OTHER): [Match("oa", "key_9", "dev-batch-etl-2026-02")],
}

# GitHub's own published example (secret-scanning partner program docs, Python validation sample):
# this key, identifier, payload and signature verify with the algorithm GitHub documents.
GITHUB_SAMPLE_KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"
GITHUB_SAMPLE_PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9MJJHnMfn2+H4xL4YaPDA4RpJqUq\n"
    "kCmRCBnYERxZanmcpzQSXs1X/AljlKkbJ8qpVIW4clayyef9gWhFbNHWAA==\n"
    "-----END PUBLIC KEY-----\n"
)
GITHUB_SAMPLE_PAYLOAD = b'[{"token":"some_token","type":"some_type","url":"some_url"}]'
GITHUB_SAMPLE_SIGNATURE = (
    "MEUCIQDKZokqnCjrRtw0tni+2Ltvl/uiMJ1EGumEsp1BsNr32AIgQY1YXD2nlj+XNfGK4rBfkMJ1JDOQcYXxa2sY8FNkrKc="
)


# --- helpers --------------------------------------------------------------------------------------------


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(key: ec.EllipticCurvePrivateKey) -> str:
    # GitHub's identifiers are the SHA-256 of the PEM text; any string would do for the intake.
    return hashlib.sha256(pem(key).encode()).hexdigest()


def github_json(*keys: ec.EllipticCurvePrivateKey) -> bytes:
    entries = [{"key_identifier": key_id(k), "key": pem(k), "is_current": True} for k in keys]
    return orjson.dumps({"public_keys": entries})


def github_headers(body: bytes, key: ec.EllipticCurvePrivateKey, kid: str | None = None) -> dict[str, str]:
    signature = base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    return {"Github-Public-Key-Identifier": kid or key_id(key), "Github-Public-Key-Signature": signature}


def hmac_headers(body: bytes, secret: str = HMAC_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Keywatch-Signature": f"sha256={digest}"}


def payload(*tokens: str, type_: str = "keywatch_relay_token") -> bytes:
    return orjson.dumps(
        [
            {
                "token": t,
                "type": type_,
                "url": f"https://github.com/octo/repo/blob/abc/f{i}.env",
                "source": "content",
            }
            for i, t in enumerate(tokens)
        ]
    )


@dataclass
class Responder:
    """lookup + act doubles that record what they were asked."""

    looked_up: list[str] = field(default_factory=list)
    acted: list[tuple[Match, str]] = field(default_factory=list)
    answer: str = "quarantined"
    fail_on: set[str] = field(default_factory=set)
    gate: asyncio.Event | None = None

    def lookup(self, sha256_hex: str) -> list[Match]:
        self.looked_up.append(sha256_hex)
        return KNOWN.get(sha256_hex, [])

    async def act(self, match: Match, report: LeakReport) -> str:
        if self.gate is not None:
            await self.gate.wait()
        self.acted.append((match, key_sha256(report.token.reveal())))
        if match.token_id in self.fail_on:
            raise RuntimeError(f"relay refused to disable {match.token_id}")
        return self.answer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    intake: ReportIntake
    responder: Responder
    client: httpx.AsyncClient
    clock: Clock
    gh_key: ec.EllipticCurvePrivateKey
    keys_file: Path

    async def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        response = await self.client.post(PATH, content=body, headers=headers)
        for token in ALL_TOKENS:
            assert token not in response.text
        return response


def make_env(tmp_path: Path, *, secret: str = HMAC_SECRET, keys: bytes | None = None) -> Env:
    gh_key = new_key()
    keys_file = tmp_path / "github-keys.json"
    keys_file.write_bytes(github_json(gh_key) if keys is None else keys)
    responder = Responder()
    clock = Clock()
    intake = ReportIntake(
        LeakReports(hmac_secret=Secret(secret), github_public_keys=str(keys_file)),
        lookup=responder.lookup,
        act=responder.act,
        clock=clock,
    )
    transport = httpx.ASGITransport(app=Starlette(routes=routes(intake)))
    client = httpx.AsyncClient(transport=transport, base_url="http://keywatch.test")
    return Env(intake, responder, client, clock, gh_key, keys_file)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = make_env(tmp_path)
    async with e.client:
        yield e


@pytest.fixture(autouse=True)
def no_token_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for token in ALL_TOKENS:
        assert token not in caplog.text


# --- signatures -----------------------------------------------------------------------------------------


def test_verify_hmac() -> None:
    body = payload(TOKEN)
    good = hmac_headers(body)["X-Keywatch-Signature"]
    assert verify_hmac(body, good, Secret(HMAC_SECRET))
    assert verify_hmac(body, "SHA256=" + good[7:].upper(), Secret(HMAC_SECRET))
    assert not verify_hmac(body + b" ", good, Secret(HMAC_SECRET))
    assert not verify_hmac(body, good[7:], Secret(HMAC_SECRET))  # no "sha256=" prefix
    assert not verify_hmac(body, "sha256=", Secret(HMAC_SECRET))
    assert not verify_hmac(body, None, Secret(HMAC_SECRET))
    assert not verify_hmac(body, "sha256=ü", Secret(HMAC_SECRET))
    assert not verify_hmac(body, hmac_headers(body, "other")["X-Keywatch-Signature"], Secret(HMAC_SECRET))
    empty = hmac_headers(body, "")["X-Keywatch-Signature"]  # an HMAC with the empty key
    assert not verify_hmac(body, empty, Secret(""))


def test_github_documented_sample_verifies() -> None:
    keys = parse_github_keys(
        orjson.dumps({"public_keys": [{"key_identifier": GITHUB_SAMPLE_KEY_ID, "key": GITHUB_SAMPLE_PEM}]})
    )
    assert keys.verify(GITHUB_SAMPLE_PAYLOAD, GITHUB_SAMPLE_KEY_ID, GITHUB_SAMPLE_SIGNATURE)
    assert not keys.verify(GITHUB_SAMPLE_PAYLOAD + b"\n", GITHUB_SAMPLE_KEY_ID, GITHUB_SAMPLE_SIGNATURE)
    assert not keys.verify(GITHUB_SAMPLE_PAYLOAD, "0" * 64, GITHUB_SAMPLE_SIGNATURE)
    # GitHub's identifier is the SHA-256 of the key's PEM text
    assert hashlib.sha256(GITHUB_SAMPLE_PEM.encode()).hexdigest() == GITHUB_SAMPLE_KEY_ID


def test_github_key_files(tmp_path: Path) -> None:
    a, b = new_key(), new_key()
    body = payload(TOKEN)
    sig_b = github_headers(body, b)["Github-Public-Key-Signature"]

    from_json = parse_github_keys(github_json(a, b))
    assert [kid for kid, _ in from_json.keys] == [key_id(a), key_id(b)]
    assert from_json.verify(body, key_id(b), sig_b)
    assert not from_json.verify(body, key_id(a), sig_b)  # the id names a key that did not sign
    assert not from_json.verify(body, "nope", sig_b)
    assert not from_json.verify(body, None, sig_b)
    assert not from_json.verify(body, key_id(b), "not base64!")
    assert not from_json.verify(body, key_id(b), base64.b64encode(b"garbage").decode())

    bare_list = parse_github_keys(orjson.dumps(orjson.loads(github_json(a))["public_keys"]))
    assert len(bare_list.keys) == 1

    bundle = parse_github_keys(f"# GitHub keys\n{pem(a)}\n{pem(b)}".encode())
    assert [kid for kid, _ in bundle.keys] == [None, None]
    assert bundle.verify(body, "any-id", sig_b)  # no identifiers in a PEM bundle: every key is tried
    assert bundle.knows("whatever")

    path = tmp_path / "keys.pem"
    path.write_text(pem(a) + pem(b))
    assert len(load_github_keys(str(path)).keys) == 2


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "no public keys"),
        (b"just text", "no public keys"),
        (b"{", "not valid JSON"),
        (b'{"public_keys": {}}', "expected GitHub's shape"),
        (b'{"public_keys": [1]}', "not an object"),
        (b'{"public_keys": [{"key": "x"}]}', "key_identifier"),
        (b'{"public_keys": [{"key_identifier": "k", "key": "not pem"}]}', "not a PEM public key"),
        (b"-----BEGIN PUBLIC KEY-----\nMFkw", "no END line"),
    ],
)
def test_bad_github_key_files(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_github_keys(data)


def test_github_keys_must_be_p256() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        parse_github_keys(pem(p384).encode())


# --- parsing --------------------------------------------------------------------------------------------


def test_parse_reports() -> None:
    reports = parse_reports(
        orjson.dumps(
            [
                {"token": TOKEN, "type": "relay", "url": "https://github.com/x", "source": "commit"},
                {"token": OTHER, "type": "relay"},  # url may be empty, source is newer than the format
            ]
        )
    )
    assert [r.token.reveal() for r in reports] == [TOKEN, OTHER]
    assert reports[0] == LeakReport(Secret(TOKEN), "relay", "https://github.com/x", "commit")
    assert (reports[1].url, reports[1].source) == ("", "")
    assert TOKEN not in repr(reports) and TOKEN not in str(reports[0])
    assert parse_reports(b"[]") == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not valid JSON"),
        (b"[{", "not valid JSON"),
        (f'[{{"token": "{TOKEN}", "type": "x"'.encode(), "not valid JSON"),
        (f'{{"token": "{TOKEN}", "type": "x"}}'.encode(), "JSON array"),
        (b"[1]", "report 0: not an object"),
        (b'[{"type": "x"}]', "'token' must be"),
        (b'[{"token": "", "type": "x"}]', "'token' must be"),
        (b'[{"token": 42, "type": "x"}]', "'token' must be"),
        (f'[{{"token": "{TOKEN}"}}]'.encode(), "'type' must be"),
        (f'[{{"token": "{TOKEN}", "type": "x", "url": 1}}]'.encode(), "'url' must be"),
        (f'[{{"token": "{TOKEN}", "type": "x", "source": null}}]'.encode(), "'source' must be"),
        (b"[" + b",".join([b'{"token":"t","type":"x"}'] * (MAX_REPORTS + 1)) + b"]", "too many reports"),
    ],
)
def test_malformed_reports(body: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        parse_reports(body)
    assert TOKEN not in str(info.value)
    assert info.value.__context__ is None or info.value.__suppress_context__  # no decode error riding along


def test_parse_reports_accepts_the_cap() -> None:
    assert (
        len(parse_reports(b"[" + b",".join([b'{"token":"t","type":"x"}'] * MAX_REPORTS) + b"]"))
        == MAX_REPORTS
    )


# --- the endpoint ---------------------------------------------------------------------------------------


async def test_hmac_signed_report_is_acted_on(env: Env) -> None:
    body = payload(TOKEN)
    response = await env.post(body, hmac_headers(body))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == [
        {
            "token_hash": hashlib.sha256(TOKEN.encode()).hexdigest(),
            "token_type": "keywatch_relay_token",
            "label": "true_positive",
            "action": "quarantined",
        }
    ]
    assert env.responder.looked_up == [key_sha256(TOKEN)]
    assert env.responder.acted == [(KNOWN[key_sha256(TOKEN)][0], key_sha256(TOKEN))]


async def test_github_signed_report_is_acted_on(env: Env) -> None:
    body = payload(TOKEN, OTHER)
    response = await env.post(body, github_headers(body, env.gh_key))
    assert response.status_code == 200
    assert [(e["token_hash"], e["label"]) for e in response.json()] == [
        (key_sha256(TOKEN), "true_positive"),
        (key_sha256(OTHER), "true_positive"),
    ]
    assert [m.token_id for m, _ in env.responder.acted] == ["17", "key_9"]


async def test_github_documented_sample_over_http(tmp_path: Path) -> None:
    keys = orjson.dumps({"public_keys": [{"key_identifier": GITHUB_SAMPLE_KEY_ID, "key": GITHUB_SAMPLE_PEM}]})
    e = make_env(tmp_path, secret="", keys=keys)
    async with e.client:
        response = await e.post(
            GITHUB_SAMPLE_PAYLOAD,
            {
                "GITHUB-PUBLIC-KEY-IDENTIFIER": GITHUB_SAMPLE_KEY_ID,  # header names are case-insensitive
                "GITHUB-PUBLIC-KEY-SIGNATURE": GITHUB_SAMPLE_SIGNATURE,
                "Content-Type": "application/json",
            },
        )
    assert response.status_code == 200
    assert response.json() == [
        {"token_hash": key_sha256("some_token"), "token_type": "some_type", "action": "none"}
    ]
    assert e.responder.acted == []


async def test_pem_bundle_tries_every_key(tmp_path: Path) -> None:
    a, b = new_key(), new_key()
    e = make_env(tmp_path, keys=(pem(a) + pem(b)).encode())
    async with e.client:
        body = payload(TOKEN)
        response = await e.post(body, github_headers(body, b, kid="whatever-github-says"))
        assert response.status_code == 200
        assert len(e.responder.acted) == 1


async def test_unsigned_report_is_refused(env: Env) -> None:
    response = await env.post(payload(TOKEN), {"Content-Type": "application/json"})
    assert response.status_code == 401
    assert "unsigned" in response.json()["error"]
    assert env.responder.looked_up == [] and env.responder.acted == []


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda e, body: hmac_headers(body, "guessed-secret"), id="hmac-wrong-secret"),
        pytest.param(lambda e, body: hmac_headers(body + b" "), id="hmac-other-body"),
        pytest.param(lambda e, body: {"X-Keywatch-Signature": "sha256=" + "0" * 64}, id="hmac-zeros"),
        pytest.param(
            lambda e, body: github_headers(body, new_key(), kid=key_id(e.gh_key)), id="gh-other-key"
        ),
        pytest.param(lambda e, body: github_headers(body + b"\n", e.gh_key), id="gh-other-body"),
        pytest.param(
            lambda e, body: {**github_headers(body, e.gh_key), "Github-Public-Key-Signature": "%%%"},
            id="gh-not-base64",
        ),
        pytest.param(
            lambda e, body: {
                "Github-Public-Key-Signature": github_headers(body, e.gh_key)["Github-Public-Key-Signature"]
            },
            id="gh-no-key-id",
        ),
    ],
)
async def test_bad_signature_is_refused(env: Env, forge: Callable[[Env, bytes], dict[str, str]]) -> None:
    body = payload(TOKEN)
    response = await env.post(body, forge(env, body))
    assert response.status_code == 401
    assert "error" in response.json()
    assert env.responder.looked_up == [] and env.responder.acted == []


async def test_wrong_key_id_is_refused(tmp_path: Path) -> None:
    a, b = new_key(), new_key()
    e = make_env(tmp_path, keys=github_json(a, b))
    async with e.client:
        body = payload(TOKEN)
        unknown = await e.post(body, github_headers(body, a, kid="f" * 64))
        assert unknown.status_code == 401
        assert "unknown GitHub public key identifier" in unknown.json()["error"]
        # signed by a, but the identifier names b: the identifier must name the signing key
        misnamed = await e.post(body, github_headers(body, a, kid=key_id(b)))
        assert misnamed.status_code == 401
        assert e.responder.looked_up == [] and e.responder.acted == []


async def test_nothing_configured_refuses_everything(tmp_path: Path) -> None:
    responder = Responder()
    intake = ReportIntake(LeakReports(), lookup=responder.lookup, act=responder.act)
    body = payload(TOKEN)
    status, answer = await intake.handle(body, hmac_headers(body, ""))
    assert status == 401 and "not enabled" in str(answer)
    assert responder.looked_up == []


async def test_github_signature_without_keys_configured(tmp_path: Path) -> None:
    responder = Responder()
    intake = ReportIntake(
        LeakReports(hmac_secret=Secret(HMAC_SECRET)), lookup=responder.lookup, act=responder.act
    )
    body = payload(TOKEN)
    status, answer = await intake.handle(body, github_headers(body, new_key()))
    assert status == 401 and "github_public_keys is not set" in str(answer)
    assert (await intake.handle(body, hmac_headers(body)))[0] == 200


async def test_either_signature_is_enough(env: Env) -> None:
    body = payload(TOKEN)
    headers = {**hmac_headers(body, "wrong"), **github_headers(body, env.gh_key)}
    assert (await env.post(body, headers)).status_code == 200


async def test_replayed_report_gets_the_same_answer_without_acting_again(env: Env) -> None:
    body = payload(TOKEN, OTHER)
    first = await env.post(body, hmac_headers(body))
    env.clock.now += 23 * 3600
    again = await env.post(body, github_headers(body, env.gh_key))  # signed either way: same body
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert len(env.responder.acted) == 2  # once per token, on the first delivery only
    assert len(env.responder.looked_up) == 2

    forged = await env.post(body, hmac_headers(body, "wrong"))  # a replay must still be signed
    assert forged.status_code == 401

    env.clock.now += 2 * 3600  # 25 h after the first: forgotten, handled anew
    later = await env.post(body, hmac_headers(body))
    assert later.json() == first.json()
    assert len(env.responder.acted) == 4


async def test_concurrent_copies_act_once(env: Env) -> None:
    env.responder.gate = asyncio.Event()
    body = payload(TOKEN)
    first = asyncio.create_task(env.post(body, hmac_headers(body)))
    second = asyncio.create_task(env.post(body, github_headers(body, env.gh_key)))
    await asyncio.sleep(0.05)
    env.responder.gate.set()
    a, b = await asyncio.gather(first, second)
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json()
    assert len(env.responder.acted) == 1


async def test_duplicate_token_in_one_body_acts_once(env: Env) -> None:
    body = payload(TOKEN, STRANGER, TOKEN, STRANGER)
    response = await env.post(body, hmac_headers(body))
    assert response.status_code == 200
    assert response.json() == [
        {
            "token_hash": key_sha256(TOKEN),
            "token_type": "keywatch_relay_token",
            "label": "true_positive",
            "action": "quarantined",
        },
        {"token_hash": key_sha256(STRANGER), "token_type": "keywatch_relay_token", "action": "none"},
    ]
    assert len(env.responder.acted) == 1
    assert env.responder.looked_up == [key_sha256(TOKEN), key_sha256(STRANGER)]


async def test_unknown_key_is_answered_without_label(env: Env) -> None:
    body = payload(STRANGER)
    response = await env.post(body, hmac_headers(body))
    assert response.status_code == 200
    (entry,) = response.json()
    assert entry == {
        "token_hash": key_sha256(STRANGER),
        "token_type": "keywatch_relay_token",
        "action": "none",
    }
    assert env.responder.acted == []


async def test_failed_act_is_reported_and_the_rest_still_handled(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.responder.fail_on = {"17"}
    body = payload(TOKEN, OTHER)
    response = await env.post(body, hmac_headers(body))
    assert response.status_code == 200
    assert [e["action"] for e in response.json()] == ["failed", "quarantined"]
    assert "acting on lz/prod-webapp-api-2026-01 failed" in caplog.text


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[{not json", id="not-json"),
        pytest.param(orjson.dumps({"token": TOKEN, "type": "x"}), id="object-not-array"),
        pytest.param(orjson.dumps([{"token": TOKEN, "type": 5}]), id="bad-type"),
    ],
)
async def test_malformed_report_is_rejected(env: Env, body: bytes) -> None:
    response = await env.post(body, hmac_headers(body))
    assert response.status_code == 400
    assert response.json()["error"]
    assert env.responder.looked_up == [] and env.responder.acted == []
    # a malformed body is not remembered: the fixed delivery is handled
    assert (await env.post(payload(TOKEN), hmac_headers(payload(TOKEN)))).status_code == 200


async def test_oversized_body_is_refused(env: Env) -> None:
    body = b"[" + b" " * MAX_BODY_BYTES + b"]"
    response = await env.post(body, hmac_headers(body))
    assert response.status_code == 413
    assert env.responder.looked_up == []


async def test_only_post_is_routed(env: Env) -> None:
    assert (await env.client.get(PATH)).status_code == 405


async def test_github_keys_are_reloaded_when_the_file_changes(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    rotated = new_key()
    body = payload(TOKEN)
    assert (await env.post(body, github_headers(body, rotated))).status_code == 401

    env.keys_file.write_bytes(github_json(env.gh_key, rotated))
    st = env.keys_file.stat()
    os.utime(env.keys_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert (await env.post(body, github_headers(body, rotated))).status_code == 200

    env.keys_file.write_bytes(b"{broken")  # a broken update keeps the keys loaded before
    os.utime(env.keys_file, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    other = payload(OTHER)
    assert (await env.post(other, github_headers(other, rotated))).status_code == 200
    assert "keeping the GitHub keys loaded before" in caplog.text


def test_a_broken_keys_file_is_a_startup_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.pem"
    path.write_text("not a key")
    responder = Responder()
    with pytest.raises(ValueError, match="no public keys"):
        ReportIntake(LeakReports(github_public_keys=str(path)), lookup=responder.lookup, act=responder.act)


def test_replay_memory_is_bounded_and_expires() -> None:
    recent = _Recent(ttl=10.0, capacity=3)
    for i in range(5):
        recent.put(f"d{i}", [{"n": str(i)}], now=float(i))
    assert len(recent) == 3
    assert recent.get("d0", 5.0) is None and recent.get("d1", 5.0) is None  # oldest forgotten first
    assert recent.get("d4", 5.0) == [{"n": "4"}]
    assert recent.get("d2", 12.0) is None  # expired at 2 + 10
    recent.put("d9", [], now=13.5)  # expired entries go on the next put
    assert len(recent) == 2  # d4 (expires 14) and d9
