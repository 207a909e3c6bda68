"""POST /api/v1/leak-reports: external leak reports, in GitHub's secret-scanning partner shape.

The body is a JSON array `[{"token", "type", "url", "source"}, ...]` (`url` and `source` may be
missing). A report counts only when it is signed, by either of:
- `X-Keywatch-Signature: sha256=<hex HMAC-SHA256 of the raw body>` keyed with
  `leak_reports.hmac_secret` (our own scanners, CI jobs, a human with curl);
- GitHub's partner signature: `Github-Public-Key-Identifier` names the key and
  `Github-Public-Key-Signature` is the base64 DER ECDSA signature (NIST P-256, SHA-256) of the raw
  body, checked against `leak_reports.github_public_keys`. That file is either the JSON GitHub
  publishes at https://api.github.com/meta/public_keys/secret_scanning (`public_keys` entries with
  `key_identifier` and `key`), where the identifier must name the key, or a plain PEM bundle,
  whose keys carry no identifier, so every key is tried. The file is re-read when it changes
  (GitHub rotates its keys); a broken new version keeps the keys already loaded.
Signatures are over the raw bytes, so the route hands the body over before anything parses it.
Anything else gets 401 and is neither looked up nor acted on.

Each reported token is hashed (`key_sha256`, the only form keywatch stores) and looked up; every
known token with that key is handed to the responder (`act`), which quarantines it or says why not.
The answer is one entry per reported token in GitHub's feedback shape — `token_hash` (SHA-256 hex
of the reported token), `token_type`, and `label: "true_positive"` when the key is one of ours —
plus `action` (what the responder did, or "none"). GitHub allows only "true_positive" and
"false_positive" as labels: a key we do not know is not evidence of a false positive (it may be a
key of the relay that keywatch does not watch), so those entries carry no `label`.

Idempotence: GitHub retries deliveries it got no timely answer for. The SHA-256 of every accepted
body is remembered for 24 h (in memory, at most 10,000 bodies, oldest forgotten first; a restart
forgets them all): the same body again — after its signature verified again — gets the first
answer and nothing is acted on twice. A copy that arrives while the first is still being handled
waits for the first one's answer. Handling runs in its own task, so a client that hangs up does not
stop a quarantine halfway. The same token twice in one body is acted on once.

No token text is ever logged, put in an error, or returned: only its hash.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from monitor.secret import Secret, key_sha256
from monitor.server import BodyTooLarge, read_body
from monitor.settings import LeakReports

__all__ = [
    "GITHUB_KEY_ID_HEADER",
    "GITHUB_SIGNATURE_HEADER",
    "HMAC_HEADER",
    "MAX_BODY_BYTES",
    "MAX_REPORTS",
    "PATH",
    "GitHubKeys",
    "LeakReport",
    "Match",
    "ReportIntake",
    "load_github_keys",
    "parse_github_keys",
    "parse_reports",
    "routes",
    "verify_hmac",
]

log = logging.getLogger(__name__)

PATH: Final = "/api/v1/leak-reports"
HMAC_HEADER: Final = "X-Keywatch-Signature"
GITHUB_KEY_ID_HEADER: Final = "Github-Public-Key-Identifier"
GITHUB_SIGNATURE_HEADER: Final = "Github-Public-Key-Signature"
MAX_REPORTS: Final = 1000
MAX_BODY_BYTES: Final = 2 * 1024 * 1024  # 1000 reports with long URLs fit with room to spare
REPLAY_TTL: Final = 24 * 3600.0
REPLAY_CAPACITY: Final = 10_000

_HMAC_PREFIX: Final = "sha256="
_PEM_BEGIN: Final = b"-----BEGIN PUBLIC KEY-----"
_PEM_END: Final = b"-----END PUBLIC KEY-----"


@dataclass(frozen=True, slots=True)
class LeakReport:
    """One reported secret. `token` is a Secret: repr() and logs show a mask."""

    token: Secret
    type: str
    url: str
    source: str


@dataclass(frozen=True, slots=True)
class Match:
    """A known token whose stored key hash equals the reported key's."""

    provider: str
    token_id: str
    name: str


# --- signatures -----------------------------------------------------------------------------------------


def verify_hmac(body: bytes, header: str | None, secret: Secret) -> bool:
    """`header` is `sha256=<hex HMAC-SHA256 of body>`; an empty secret never verifies."""
    if not secret or not header:
        return False
    given = header.strip()
    if given[: len(_HMAC_PREFIX)].lower() != _HMAC_PREFIX:
        return False
    expected = hmac.new(secret.reveal().encode(), body, hashlib.sha256).hexdigest()
    given_hex = given[len(_HMAC_PREFIX) :].lower().encode("utf-8", "replace")
    return hmac.compare_digest(given_hex, expected.encode())


@dataclass(frozen=True, slots=True)
class GitHubKeys:
    """GitHub's secret-scanning public keys; `key_id` is None for keys from a plain PEM bundle."""

    keys: tuple[tuple[str | None, ec.EllipticCurvePublicKey], ...]

    def knows(self, key_id: str) -> bool:
        """Could a signature naming `key_id` verify? (Always, when some key has no identifier.)"""
        return any(kid is None or kid == key_id for kid, _ in self.keys)

    def verify(self, body: bytes, key_id: str | None, signature: str | None) -> bool:
        """`signature` is base64 DER ECDSA P-256/SHA-256 over `body`, by the key named `key_id`."""
        if not key_id or not signature:
            return False
        try:
            der = base64.b64decode(signature.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        key_id = key_id.strip()
        for kid, key in self.keys:
            if kid is not None and kid != key_id:
                continue
            try:
                key.verify(der, body, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                continue
            return True
        return False


def _ec_p256(pem: bytes, where: str) -> ec.EllipticCurvePublicKey:
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: not a PEM public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{where}: not an ECDSA P-256 public key")
    return key


def parse_github_keys(data: bytes) -> GitHubKeys:
    """GitHub's /meta/public_keys/secret_scanning JSON (or its `public_keys` list), or a PEM bundle."""
    text = data.strip()
    if text[:1] in (b"{", b"["):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ValueError("not valid JSON") from None
        entries = doc.get("public_keys") if isinstance(doc, dict) else doc
        if not isinstance(entries, list):
            raise ValueError("expected GitHub's shape: public_keys: [{key_identifier, key}]")
        keys: list[tuple[str | None, ec.EllipticCurvePublicKey]] = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError(f"public_keys[{i}] is not an object")
            kid, pem = entry.get("key_identifier"), entry.get("key")
            if not isinstance(kid, str) or not kid.strip() or not isinstance(pem, str):
                raise ValueError(f"public_keys[{i}] needs string `key_identifier` and `key`")
            keys.append((kid.strip(), _ec_p256(pem.encode(), f"public_keys[{i}]")))
    else:
        keys = []
        rest = text
        while (start := rest.find(_PEM_BEGIN)) >= 0:
            end = rest.find(_PEM_END, start)
            if end < 0:
                raise ValueError(f"PEM key {len(keys) + 1} has no END line")
            end += len(_PEM_END)
            keys.append((None, _ec_p256(rest[start:end], f"PEM key {len(keys) + 1}")))
            rest = rest[end:]
    if not keys:
        raise ValueError("no public keys found")
    return GitHubKeys(tuple(keys))


def load_github_keys(path: str) -> GitHubKeys:
    with open(path, "rb") as f:
        data = f.read()
    try:
        return parse_github_keys(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


# --- reports --------------------------------------------------------------------------------------------


def parse_reports(body: bytes) -> list[LeakReport]:
    """The partner payload; ValueError says what is wrong, never quoting a token."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # `from None`: the decode error carries the whole document (`exc.doc`), tokens included
        raise ValueError(f"the body is not valid JSON (at character {exc.pos})") from None
    if not isinstance(doc, list):
        raise ValueError("the body must be a JSON array of reports")
    if len(doc) > MAX_REPORTS:
        raise ValueError(f"too many reports: at most {MAX_REPORTS} per request")
    reports = []
    for i, entry in enumerate(doc):
        if not isinstance(entry, dict):
            raise ValueError(f"report {i}: not an object")
        token = entry.get("token")
        if not isinstance(token, str) or not token:
            raise ValueError(f"report {i}: 'token' must be a non-empty string")
        fields = {}
        for name in ("type", "url", "source"):
            value = entry.get(name, "" if name != "type" else None)
            if not isinstance(value, str):
                raise ValueError(f"report {i}: {name!r} must be a string")
            fields[name] = value
        reports.append(LeakReport(Secret(token), fields["type"], fields["url"], fields["source"]))
    return reports


class _Recent:
    """Answers to bodies accepted in the last `ttl` seconds, by body hash; at most `capacity`."""

    def __init__(self, *, ttl: float = REPLAY_TTL, capacity: int = REPLAY_CAPACITY) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._answers: OrderedDict[str, tuple[float, list[dict[str, str]]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, digest: str, now: float) -> list[dict[str, str]] | None:
        hit = self._answers.get(digest)
        if hit is None:
            return None
        if hit[0] <= now:
            del self._answers[digest]
            return None
        return hit[1]

    def put(self, digest: str, answer: list[dict[str, str]], now: float) -> None:
        self._answers[digest] = (now + self.ttl, answer)
        self._answers.move_to_end(digest)
        while self._answers:  # oldest first: drop what expired, then what does not fit
            oldest, (expires, _) = next(iter(self._answers.items()))
            if expires > now and len(self._answers) <= self.capacity:
                break
            del self._answers[oldest]


class ReportIntake:
    """Verifies, parses and answers leak reports; `act` does the quarantining."""

    def __init__(
        self,
        settings: LeakReports,
        *,
        lookup: Callable[[str], list[Match]],
        act: Callable[[Match, LeakReport], Awaitable[str]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = settings.hmac_secret
        self._keys_path = settings.github_public_keys
        self._lookup = lookup
        self._act = act
        self._clock = clock
        self._recent = _Recent()
        self._inflight: dict[str, asyncio.Task[list[dict[str, str]]]] = {}
        self._keys: GitHubKeys | None = None
        self._keys_stamp: tuple[int, int] | None = None
        if self._keys_path:
            self._keys_stamp = self._stamp(self._keys_path)
            self._keys = load_github_keys(self._keys_path)  # a broken file is a startup error

    # -- GitHub keys, re-read when the file changes --

    @staticmethod
    def _stamp(path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _github_keys(self) -> GitHubKeys | None:
        if self._keys_path:
            stamp = self._stamp(self._keys_path)
            if stamp is not None and stamp != self._keys_stamp:
                self._keys_stamp = stamp
                try:
                    self._keys = load_github_keys(self._keys_path)
                    log.info("leak reports: reloaded GitHub public keys from %s", self._keys_path)
                except (OSError, ValueError) as exc:
                    log.error("leak reports: keeping the GitHub keys loaded before: %s", exc)
        return self._keys

    def _authenticate(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """None when a signature verifies, else why not (for the 401)."""
        keys = self._github_keys()
        if not self._secret and keys is None:
            return "leak reports are not enabled: set leak_reports.hmac_secret or github_public_keys"
        hmac_sig = headers.get(HMAC_HEADER.lower())
        gh_id = headers.get(GITHUB_KEY_ID_HEADER.lower())
        gh_sig = headers.get(GITHUB_SIGNATURE_HEADER.lower())
        if hmac_sig is None and gh_sig is None:
            return f"unsigned: send {HMAC_HEADER} or {GITHUB_KEY_ID_HEADER} and {GITHUB_SIGNATURE_HEADER}"
        if hmac_sig is not None and verify_hmac(body, hmac_sig, self._secret):
            return None
        if gh_sig is not None:
            if keys is None:
                return "GitHub signatures are not accepted: leak_reports.github_public_keys is not set"
            if keys.verify(body, gh_id, gh_sig):
                return None
            if not gh_id:
                return f"missing {GITHUB_KEY_ID_HEADER}"
            if not keys.knows(gh_id.strip()):
                return "unknown GitHub public key identifier"
        return "the signature does not verify"

    # -- handling --

    async def handle(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, object]:
        """(HTTP status, JSON-able answer) for one delivery."""
        lower = {k.lower(): v for k, v in headers.items()}
        why = self._authenticate(body, lower)
        if why is not None:
            log.warning("leak reports: refused an unauthenticated delivery (%d bytes): %s", len(body), why)
            return 401, {"error": why}
        digest = hashlib.sha256(body).hexdigest()
        answer = self._recent.get(digest, self._clock())
        if answer is not None:
            log.info("leak reports: delivery %s... seen before; answered as then, nothing done", digest[:12])
            return 200, answer
        task = self._inflight.get(digest)
        if task is None:
            try:
                reports = parse_reports(body)
            except ValueError as exc:
                log.warning("leak reports: refused a malformed delivery: %s", exc)
                return 400, {"error": str(exc)}
            task = asyncio.get_running_loop().create_task(self._process(reports))
            self._inflight[digest] = task
            task.add_done_callback(lambda t: self._finished(digest, t))
        else:
            log.info("leak reports: delivery %s... is being handled; waiting for its answer", digest[:12])
        return 200, await asyncio.shield(task)

    def _finished(self, digest: str, task: asyncio.Task[list[dict[str, str]]]) -> None:
        self._inflight.pop(digest, None)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here too, in case the request that started it has gone
        if exc is None:
            self._recent.put(digest, task.result(), self._clock())
        else:
            log.error("leak reports: handling delivery %s... failed: %r", digest[:12], exc)

    async def _process(self, reports: list[LeakReport]) -> list[dict[str, str]]:
        done: dict[str, tuple[bool, str]] = {}  # key hash -> (ours?, action)
        answer: list[dict[str, str]] = []
        answered: set[tuple[str, str]] = set()
        for report in reports:
            token_hash = key_sha256(report.token.reveal())
            if token_hash not in done:
                done[token_hash] = await self._respond(token_hash, report)
            if (token_hash, report.type) in answered:
                continue
            answered.add((token_hash, report.type))
            ours, action = done[token_hash]
            entry = {"token_hash": token_hash, "token_type": report.type}
            if ours:
                entry["label"] = "true_positive"
            entry["action"] = action
            answer.append(entry)
        return answer

    async def _respond(self, token_hash: str, report: LeakReport) -> tuple[bool, str]:
        matches = self._lookup(token_hash)
        if not matches:
            log.info(
                "leak report for a key keywatch does not know (sha256 %s...), type %r, at %r",
                token_hash[:12],
                report.type,
                report.url,
            )
            return False, "none"
        actions = []
        for match in matches:
            try:
                action = await self._act(match, report)
            except Exception:
                log.exception("leak reports: acting on %s/%s failed", match.provider, match.name)
                action = "failed"
            log.warning(
                "leak report: %s/%s (id %s) found at %r (type %r, source %r): %s",
                match.provider,
                match.name,
                match.token_id,
                report.url,
                report.type,
                report.source,
                action,
            )
            actions.append(action)
        return True, "; ".join(dict.fromkeys(actions))


# --- HTTP -----------------------------------------------------------------------------------------------


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def routes(intake: ReportIntake) -> list[BaseRoute]:
    """`POST /api/v1/leak-reports`. Senders cannot send keywatch's API bearer token: exempt the path."""

    async def leak_reports(request: Request) -> Response:
        try:  # the body exactly as sent, read with monitor.server's cap (no int() of a huge header)
            body = await read_body(request, MAX_BODY_BYTES)
        except BodyTooLarge as exc:
            return exc.response()
        except ClientDisconnect:
            return Response(status_code=400)
        status, content = await intake.handle(body, request.headers)
        return _json(content, status)

    return [Route(PATH, leak_reports, methods=["POST"])]
