"""The protocol package's one exception base."""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer broke a protocol (as opposed to a network failure); ``str()`` is one line."""


class FramingError(ProtocolError):
    """The peer broke HTTP/1.1 message framing: status line, headers, chunked body.

    ``payload``: body bytes that came before the fault in the same read, which
    a reader still delivers before failing the stream.
    """

    payload: bytes = b""
