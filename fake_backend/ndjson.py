"""The NDJSON streaming endpoints (docs/PROTOCOL.md, "NDJSON").

Each stream is written by a raw ASGI response (``NdjsonStream``) rather than
Starlette's ``StreamingResponse``: the stream needs to control exactly when
the headers go out (the gzip fault holds them), to write several lines as one
transport write (the buffering fault), and to break the connection mid-body
(the disconnect fault).  It also watches ``receive()`` for ``http.disconnect``
itself, because uvicorn silently drops writes to a vanished client: without
the watcher a stream would keep running for nobody.

Lines are ``{"event": kind, "data": payload}``; with ``timing`` on they also
carry ``"seq"`` (0-based index over all lines) and ``"ts"`` (epoch seconds,
stamped when the line is produced; see ``fake_backend.runner``).  Headers:
``X-Request-ID`` (cancel handle), ``X-Conversation-ID``, ``X-Harness-Chunks``
(chunk lines promised if not cut short) and ``X-Harness-Seed`` (replay).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Mapping
from time import time
from typing import Final

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from fake_backend.auth import http_credentials_present, unauthorized
from fake_backend.control import BackendConfig, ControlError, resolve
from fake_backend.faults import AbruptDisconnect
from fake_backend.gzip_careless import CarelessGzip
from fake_backend.registry import StreamRegistry
from fake_backend.runner import CLIENT_GONE, DISCONNECTED, StreamControl, run_stream
from fake_backend.shapes import StreamPlan, build_plan
from fake_backend.slow_consumer import SLOW_CONSUMER, watch_writes
from stream_harness.contract.kinds import Endpoint
from stream_harness.contract.protocol import (
    CONVERSATION_ID_HEADER,
    NDJSON_PATHS,
    PROMISED_CHUNKS_HEADER,
    REQUEST_ID_HEADER,
    SEED_HEADER,
)

MAX_BODY_BYTES: Final = 1_000_000
_NEWLINE: Final = orjson.OPT_APPEND_NEWLINE
_dumps = orjson.dumps


class NdjsonOutlet:
    """Encodes events as NDJSON lines and writes them as ASGI body messages."""

    __slots__ = ("_send", "_seq", "encode", "writes")

    def __init__(self, send: Send, timing: bool) -> None:
        self._send = send
        self._seq = 0
        self.encode = self._encode_timed if timing else self._encode_plain
        self.writes = 0  # body writes handed to the server (the slow-consumer watchdog's clock)

    def _encode_timed(self, kind: str, payload: dict) -> bytes:
        seq = self._seq
        self._seq = seq + 1
        return _dumps({"event": kind, "data": payload, "seq": seq, "ts": time()}, option=_NEWLINE)

    @staticmethod
    def _encode_plain(kind: str, payload: dict) -> bytes:
        return _dumps({"event": kind, "data": payload}, option=_NEWLINE)

    def send(self, line: bytes) -> Awaitable[None]:
        # A plain function returning the ASGI send's awaitable: one coroutine
        # frame less per line on the hottest path.
        self.writes += 1
        return self._send({"type": "http.response.body", "body": line, "more_body": True})

    async def send_many(self, lines: list[bytes]) -> None:
        await self.send(b"".join(lines))

    async def finish(self) -> None:
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def drop(self) -> None:
        if isinstance(self._send, CarelessGzip):
            await self._send.start_now()
        raise AbruptDisconnect


async def _watch_disconnect(receive: Receive, control: StreamControl) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    control.stop(CLIENT_GONE)


class NdjsonStream(Response):
    """A raw ASGI response that runs one planned stream."""

    def __init__(
        self,
        plan: StreamPlan,
        stream_id: str,
        registry: StreamRegistry,
        headers: Mapping[str, str],
        gzip: bool,
        send_timeout_s: float = 0.0,
    ) -> None:
        self.plan = plan
        self.stream_id = stream_id
        self.registry = registry
        self.gzip = gzip
        self.send_timeout_s = send_timeout_s
        self.status_code = 200
        self.background = None
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        control = self.registry.open(self.stream_id, "ndjson")
        outcome = "server_error"
        if self.gzip:
            send = CarelessGzip(send)
        outlet = NdjsonOutlet(send, self.plan.settings.timing)
        me = asyncio.current_task()
        assert me is not None, "an ASGI app runs inside a task"
        watchers = [asyncio.create_task(_watch_disconnect(receive, control))]
        if self.send_timeout_s > 0:
            watchers.append(asyncio.create_task(watch_writes(lambda: outlet.writes, control, me, self.send_timeout_s)))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            outcome = await run_stream(self.plan, control, outlet)
        except AbruptDisconnect:
            outcome = DISCONNECTED
            raise
        except asyncio.CancelledError:
            if control.stop_reason != SLOW_CONSUMER:
                raise
            me.uncancel()  # the watchdog's cancel, not the server's
            outcome = SLOW_CONSUMER
            raise AbruptDisconnect from None
        finally:
            for watcher in watchers:
                watcher.cancel()
            self.registry.close(self.stream_id, outcome)


def _header_safe(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 200 and value.isascii() and value.isprintable()


def _unprocessable(message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=422)


def _check_body(endpoint: str, body: dict) -> str | None:
    """The request fields the real endpoints insist on; a message when missing."""
    if endpoint == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "body.messages must be a non-empty array of chat messages"
    elif endpoint == "agent":
        if not any(isinstance(body.get(k), str) and body[k] for k in ("prompt_id", "builtin")):
            return "body must name what to run: a non-empty 'prompt_id' or 'builtin' string"
        if "variables" in body and not isinstance(body["variables"], dict):
            return "body.variables must be an object"
    elif "tool_name" in body and not isinstance(body["tool_name"], str):
        return "body.tool_name must be a string"
    return None


def _too_large() -> JSONResponse:
    # Connection: close, so the server stops reading the rest of the body.
    return JSONResponse(
        {"detail": f"body larger than {MAX_BODY_BYTES} bytes"}, status_code=413, headers={"Connection": "close"}
    )


async def read_json_object(request: Request) -> dict | JSONResponse:
    """The request body as a JSON object, or the 4xx response explaining why not.

    Never holds more than ``MAX_BODY_BYTES`` (+ one read) of a body: a declared
    length over the cap is refused before reading, and an undeclared (chunked)
    one as soon as it passes the cap.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _too_large()
    raw = bytearray()
    try:
        async for piece in request.stream():
            raw += piece
            if len(raw) > MAX_BODY_BYTES:
                return _too_large()
    except ClientDisconnect:
        return JSONResponse({"detail": "client disconnected while sending the body"}, status_code=400)
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        return _unprocessable(f"body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return _unprocessable("body must be a JSON object")
    return body


def ndjson_router(config: BackendConfig, registry: StreamRegistry) -> APIRouter:
    router = APIRouter()

    async def start_stream(request: Request, endpoint: str) -> Response:
        if config.require_auth and not http_credentials_present(request.headers):
            return unauthorized()
        body = await read_json_object(request)
        if isinstance(body, JSONResponse):
            return body
        problem = _check_body(endpoint, body)
        if problem:
            return _unprocessable(problem)
        try:
            settings = resolve(body.get("harness"), config.defaults)
        except ControlError as exc:
            return _unprocessable(str(exc))
        plan = build_plan(settings, endpoint)
        request_id = uuid.uuid4().hex
        conversation = body.get("conversation_id")
        headers = {
            "content-type": "application/x-ndjson",
            "cache-control": "no-cache",
            REQUEST_ID_HEADER: request_id,
            CONVERSATION_ID_HEADER: (
                conversation
                if isinstance(conversation, str) and _header_safe(conversation)
                else f"conv_{uuid.uuid4().hex[:12]}"
            ),
            PROMISED_CHUNKS_HEADER: str(settings.chunks),
            SEED_HEADER: str(settings.seed),
        }
        gzip = settings.gzip and "gzip" in request.headers.get("accept-encoding", "").lower()
        return NdjsonStream(plan, request_id, registry, headers, gzip, config.send_timeout_s)

    @router.post(NDJSON_PATHS[Endpoint.CHAT])
    async def chat_unified(request: Request) -> Response:
        """Chat with a `messages` array -> NDJSON stream."""
        return await start_stream(request, "chat")

    @router.post(NDJSON_PATHS[Endpoint.AGENT])
    async def agent_execute(request: Request) -> Response:
        """Run a prompt or builtin (`prompt_id`/`builtin`, `variables`) -> NDJSON stream."""
        return await start_stream(request, "agent")

    @router.post(NDJSON_PATHS[Endpoint.TOOL])
    async def tool_execute(request: Request) -> Response:
        """Run one tool -> NDJSON stream rich in `tool_event` lines."""
        return await start_stream(request, "tool")

    return router
