"""Gzip the NDJSON body the way a careless deployment does.

A proxy or middleware that gzips a streamed body and only writes compressed
output when the compressor hands it a full block holds lines back: zlib's
``compress()`` returns nothing until its internal buffer fills (about 25 KB of
output per ~250 KB of NDJSON here), so a whole 2,000-line stream can arrive at
once at the end.  The response headers are held too, until the first block is
ready (a buffering proxy does not forward headers before it has body to send).

Note: recent Starlette's ``GZipMiddleware`` does *not* show this any more: it
calls ``compressor.flush(zlib.Z_SYNC_FLUSH)`` after every body message
(starlette/middleware/gzip.py, ``GZipResponder._compress_body``), so each line
goes out at once, only smaller.  nginx's ``gzip on`` with default buffers and
similar proxy gzip modules still buffer, which is what this fault reproduces.

Like those modules, it only compresses when the client sent
``Accept-Encoding: gzip``; otherwise the body passes through unchanged.
"""

from __future__ import annotations

import zlib
from typing import Final

from starlette.types import Message, Send

#: compress() returns the 10-byte gzip header on its first call: that alone is not a block.
GZIP_HEADER_LEN: Final = 10


class CarelessGzip:
    """An ASGI ``send`` wrapper that emits only what ``compress()`` returns (no sync flush)."""

    def __init__(self, send: Send, level: int = 6) -> None:
        self._send = send
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        self._held_start: Message | None = None
        self._pending = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-length"]
            headers += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
            self._held_start = {**message, "headers": headers}
            return
        more = message.get("more_body", False)
        out = self._compressor.compress(message.get("body", b""))
        if not more:
            out += self._compressor.flush()
        if self._held_start is not None:
            self._pending += out
            if more and len(self._pending) <= GZIP_HEADER_LEN:
                return
            await self._send(self._held_start)
            self._held_start = None
            out, self._pending = self._pending, b""
        if out or not more:
            await self._send({"type": "http.response.body", "body": out, "more_body": more})

    async def start_now(self) -> None:
        """Send the held headers and pending bytes now.

        Used before an abrupt disconnect, so the client sees a response that
        breaks off rather than uvicorn's 500 for an app that never started one."""
        if self._held_start is not None:
            await self._send(self._held_start)
            self._held_start = None
            if self._pending:
                await self._send({"type": "http.response.body", "body": self._pending, "more_body": True})
                self._pending = b""
