"""/api/v1/alerts and /api/v1/silences, mounted by the composition root next to monitor's routes.

Hostile input gets a 4xx with a JSON error, never a 500: the body is read with a cap (413), its
shape is checked here (400) and its values by Silences.add, the one place the CLI shares."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from alerts.engine import AlertEngine
from alerts.matchers import MatcherError
from alerts.notification.mute import MAX_SILENCE_ID, SilenceError, Silences
from alerts.views import silence_row
from monitor.durations import check_seconds, parse_duration
from monitor.server import BodyTooLarge, read_body

__all__ = ["MAX_SILENCE_BODY_BYTES", "SilenceRequest", "parse_silence_request", "routes"]

# 16 matchers of a few dozen characters and a comment fit many times over; a bigger body is abuse.
MAX_SILENCE_BODY_BYTES: Final = 64 * 1024
# Digits of a path id worth converting: 2**63-1 has 19, and int() of thousands of digits raises.
_ID: Final = re.compile(r"-?[0-9]{1,20}")


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


@dataclass(frozen=True, slots=True)
class SilenceRequest:
    matchers: list[str]
    comment: str
    created_by: str
    duration: float


def parse_silence_request(body: bytes) -> SilenceRequest:
    """{"matchers": ["token=dev-*"], "duration": "1h", "comment": "...", "created_by": "..."}:
    types only (ValueError says which field); Silences.add checks the values."""
    doc = orjson.loads(body)  # JSONDecodeError is a ValueError; so is nesting deeper than 1024
    if not isinstance(doc, dict):
        raise ValueError("the body must be a JSON object")
    matchers = doc.get("matchers")
    if not isinstance(matchers, list) or not all(isinstance(m, str) for m in matchers):
        raise ValueError("'matchers' must be a list of strings like \"token=dev-*\"")
    comment = doc.get("comment")
    if not isinstance(comment, str):
        raise ValueError("'comment' is required: say why")
    created_by = doc.get("created_by")
    if created_by is not None and not isinstance(created_by, str):
        raise ValueError("'created_by' must be a string")
    return SilenceRequest(matchers, comment, created_by or "api", _duration(doc.get("duration", "1h")))


def _duration(value: object) -> float:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return check_seconds(float(value))  # a number is seconds, as parse_duration("90") reads it
    raise ValueError('\'duration\' must be a duration like "1h" or "30m"')


def _silence_id(text: str) -> int | None:
    """The id in DELETE /api/v1/silences/{id}, or None when it is not a (short enough) number.
    Out-of-range numbers pass: Silences.expire finds no such silence (404)."""
    return int(text) if _ID.fullmatch(text) else None


def routes(engine: AlertEngine) -> list[BaseRoute]:
    silences = Silences(engine.store)

    async def list_alerts(_: Request) -> Response:
        return _json(engine.api_alerts())

    async def list_silences(request: Request) -> Response:
        now = engine.clock.now()
        expired = request.query_params.get("expired") in ("1", "true")
        return _json([silence_row(s, now) for s in silences.query(now=now, include_expired=expired)])

    async def add_silence(request: Request) -> Response:
        try:
            body = await read_body(request, MAX_SILENCE_BODY_BYTES)
        except BodyTooLarge as exc:
            return exc.response()
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            wanted = parse_silence_request(body)
            silence = silences.add(
                wanted.matchers,
                now=engine.clock.now(),
                created_by=wanted.created_by,
                comment=wanted.comment,
                duration=wanted.duration,
            )
        except (ValueError, MatcherError, SilenceError) as exc:
            return _json({"error": str(exc)}, status=400)
        return _json(silence_row(silence, engine.clock.now()), status=201)

    async def expire_silence(request: Request) -> Response:
        silence_id = _silence_id(request.path_params["id"])
        if silence_id is None:
            return _json({"error": f"silence ids are numbers from 1 to {MAX_SILENCE_ID}"}, status=400)
        if not silences.expire(silence_id, now=engine.clock.now()):
            return _json({"error": f"no active silence {silence_id}"}, status=404)
        return _json({"id": silence_id, "status": "expired"})

    return [
        Route("/api/v1/alerts", list_alerts, methods=["GET"]),
        Route("/api/v1/silences", list_silences, methods=["GET"]),
        Route("/api/v1/silences", add_silence, methods=["POST"]),
        Route("/api/v1/silences/{id}", expire_silence, methods=["DELETE"]),
    ]
