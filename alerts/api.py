"""/api/v1/alerts and /api/v1/silences, mounted by the composition root next to monitor's routes."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from alerts.engine import AlertEngine
from alerts.matchers import MatcherError
from alerts.mute import SilenceError, Silences
from alerts.views import silence_row
from monitor.durations import parse_duration

__all__ = ["routes"]


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def routes(engine: AlertEngine) -> list[BaseRoute]:
    silences = Silences(engine.store)

    async def list_alerts(_: Request) -> Response:
        return _json(engine.api_alerts())

    async def list_silences(request: Request) -> Response:
        now = engine.clock.now()
        expired = request.query_params.get("expired") in ("1", "true")
        return _json([silence_row(s, now) for s in silences.query(now=now, include_expired=expired)])

    async def add_silence(request: Request) -> Response:
        """Body: {"matchers": ["token=dev-*"], "duration": "1h", "comment": "...", "created_by": "..."}."""
        try:
            body = orjson.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            matchers = body.get("matchers")
            if not isinstance(matchers, list) or not all(isinstance(m, str) for m in matchers):
                raise ValueError("'matchers' must be a list of strings like \"token=dev-*\"")
            comment = body.get("comment")
            if not isinstance(comment, str) or not comment.strip():
                raise ValueError("'comment' is required: say why")
            duration = parse_duration(str(body.get("duration", "1h")))
            created_by = str(body.get("created_by") or "api")
            silence = silences.add(
                matchers, now=engine.clock.now(), created_by=created_by, comment=comment, duration=duration
            )
        except (ValueError, MatcherError, SilenceError) as exc:
            return _json({"error": str(exc)}, status=400)
        return _json(silence_row(silence, engine.clock.now()), status=201)

    async def expire_silence(request: Request) -> Response:
        try:
            silence_id = int(request.path_params["id"])
        except ValueError:
            return _json({"error": "silence ids are numbers"}, status=400)
        if not silences.expire(silence_id, now=engine.clock.now()):
            return _json({"error": f"no active silence {silence_id}"}, status=404)
        return _json({"id": silence_id, "status": "expired"})

    return [
        Route("/api/v1/alerts", list_alerts, methods=["GET"]),
        Route("/api/v1/silences", list_silences, methods=["GET"]),
        Route("/api/v1/silences", add_silence, methods=["POST"]),
        Route("/api/v1/silences/{id}", expire_silence, methods=["DELETE"]),
    ]
