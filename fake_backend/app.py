"""One ASGI app on one port: FastAPI for HTTP, python-socketio for Socket.io."""

from __future__ import annotations

import socketio
from fastapi import FastAPI

from fake_backend.api import api_router
from fake_backend.control import BackendConfig
from fake_backend.emit_log import EmitLog
from fake_backend.ndjson import ndjson_router
from fake_backend.registry import StreamRegistry
from fake_backend.sio import UserSessionService


def create_app(config: BackendConfig | None = None) -> socketio.ASGIApp:
    """The fake backend: every endpoint of docs/PROTOCOL.md plus the ``/UserSession`` namespace."""
    config = config or BackendConfig()
    registry = StreamRegistry()
    emit_log = EmitLog()
    sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False)
    service = UserSessionService(sio, config, registry, emit_log)
    api = FastAPI(title="fake_backend", description="Fake AI chat backend for the stream-latency harness")
    api.include_router(ndjson_router(config, registry))
    api.include_router(api_router(config, registry, emit_log, lambda: service.sessions))
    return socketio.ASGIApp(sio, other_asgi_app=api)
