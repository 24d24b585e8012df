"""The small JSON endpoints: health, warm, cancel, and the harness's own
measurement endpoints under ``/api/_harness/`` (never auth-protected; a real
backend does not have them, and a load user treats their 404 as "no data")."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from fake_backend.auth import http_credentials_present, unauthorized
from fake_backend.control import BackendConfig
from fake_backend.emit_log import EmitLog
from fake_backend.ndjson import read_json_object
from fake_backend.registry import StreamRegistry
from stream_harness.contract.protocol import (
    CANCEL_PATH,
    CLOCK_PATH,
    EMIT_TIMES_PATH,
    HEALTH_PATH,
    STATS_PATH,
    WARM_PATH,
)


def api_router(
    config: BackendConfig, registry: StreamRegistry, emit_log: EmitLog, socketio_sessions: Callable[[], int]
) -> APIRouter:
    router = APIRouter()

    @router.get(HEALTH_PATH)
    async def health() -> dict:
        """Liveness."""
        return {"status": "ok"}

    @router.post(WARM_PATH)
    async def agent_warm(request: Request) -> Response:
        """Pre-warm an agent: a small JSON reply, not a stream."""
        if config.require_auth and not http_credentials_present(request.headers):
            return unauthorized()
        body = await read_json_object(request)
        if isinstance(body, JSONResponse):
            return body
        target = body.get("prompt_id") or body.get("builtin")
        return JSONResponse({"status": "warm", "prompt_id": target if isinstance(target, str) else None})

    @router.post(CANCEL_PATH)
    async def cancel(request_id: str, request: Request) -> Response:
        """Stop a running stream (NDJSON request id or Socket.io task id); it then
        ends with ``end`` reason "cancelled".  404 when unknown or already over."""
        if config.require_auth and not http_credentials_present(request.headers):
            return unauthorized()
        if not registry.cancel(request_id):
            return JSONResponse({"detail": f"no running stream with id {request_id!r}"}, status_code=404)
        return JSONResponse({"status": "cancelled", "request_id": request_id})

    @router.get(EMIT_TIMES_PATH)
    async def emit_times(listener: str) -> Response:
        """Emit times of a Socket.io task's messages, in emit order (end included)."""
        record = emit_log.get(listener)
        if record is None:
            return JSONResponse({"detail": f"no emit times for listener {listener!r}"}, status_code=404)
        return Response(orjson.dumps(record.to_json()), media_type="application/json")

    @router.get(CLOCK_PATH)
    async def clock() -> dict:
        """This server's wall clock (epoch s), for the load processes' clock-offset estimates."""
        return {"ts": time.time()}

    @router.get(STATS_PATH)
    async def stats() -> dict:
        """What is running now: for leak checks and the load harness's self-check."""
        return {
            "active": {"ndjson": registry.active("ndjson"), "socketio": registry.active("socketio")},
            "socketio_sessions": socketio_sessions(),
            "started": dict(registry.started),
            "outcomes": dict(registry.outcomes),
            "emit_log": {"tasks": len(emit_log), "timestamps": emit_log.stored_timestamps},
        }

    return router
