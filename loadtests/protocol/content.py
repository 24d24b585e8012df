"""Incremental ``Content-Encoding`` decoders (gzip, deflate, br).

Why: a compressing layer on the path is one of the regressions the harness
hunts, so the NDJSON client asks for what a browser asks for and decodes each
read as it comes -- the lines a read completes after decompression are the
lines the browser would have seen at that moment.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import brotli

from loadtests.protocol.errors import ProtocolError


class ContentDecodingError(ProtocolError):
    """The body is not valid data for its declared Content-Encoding."""


class ContentDecoder(Protocol):
    def decompress(self, data: bytes) -> bytes: ...
    def finish(self) -> None:
        """Raise ContentDecodingError if the compressed stream stopped mid-way."""


class GzipDecoder:
    """gzip, including several concatenated members."""

    __slots__ = ("_d", "_fed")

    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._fed = False

    def decompress(self, data: bytes) -> bytes:
        self._fed = self._fed or bool(data)
        try:
            out = self._d.decompress(data)
            while self._d.eof and self._d.unused_data:
                rest = self._d.unused_data
                self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out += self._d.decompress(rest)
        except zlib.error as exc:
            raise ContentDecodingError(f"gzip: {exc}") from None
        return out

    def finish(self) -> None:
        if self._fed and not self._d.eof:
            raise ContentDecodingError("gzip stream truncated")


class DeflateDecoder:
    """HTTP ``deflate`` is zlib-wrapped; some servers send raw deflate, as browsers tolerate."""

    __slots__ = ("_d", "_head")

    def __init__(self) -> None:
        self._d: zlib._Decompress | None = None
        self._head = b""

    def decompress(self, data: bytes) -> bytes:
        if self._d is None:
            data, self._head = self._head + data, b""
            if len(data) < 2:
                self._head = data
                return b""
            cmf, flg = data[0], data[1]
            zlib_wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
            self._d = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
        try:
            return self._d.decompress(data)
        except zlib.error as exc:
            raise ContentDecodingError(f"deflate: {exc}") from None

    def finish(self) -> None:
        if self._head or (self._d is not None and not self._d.eof):
            raise ContentDecodingError("deflate stream truncated")


class BrotliDecoder:
    __slots__ = ("_d", "_fed")

    def __init__(self) -> None:
        self._d = brotli.Decompressor()
        self._fed = False

    def decompress(self, data: bytes) -> bytes:
        if not data:
            return b""
        self._fed = True
        try:
            out: bytes = self._d.process(data)
            return out
        except brotli.error as exc:
            raise ContentDecodingError(f"br: {exc}") from None

    def finish(self) -> None:
        if self._fed and not self._d.is_finished():
            raise ContentDecodingError("br stream truncated")


class ChainDecoder:
    """Several codings (``Content-Encoding: gzip, br``): undone in reverse order."""

    __slots__ = ("_decoders",)

    def __init__(self, decoders: list[ContentDecoder]) -> None:
        self._decoders = decoders

    def decompress(self, data: bytes) -> bytes:
        for d in self._decoders:
            data = d.decompress(data)
        return data

    def finish(self) -> None:
        for d in self._decoders:
            d.finish()


_DECODERS: dict[str, type[ContentDecoder]] = {
    "gzip": GzipDecoder,
    "x-gzip": GzipDecoder,
    "deflate": DeflateDecoder,
    "br": BrotliDecoder,
}


def make_content_decoder(content_encoding: str | None) -> ContentDecoder | None:
    """Decoder for a Content-Encoding header value; None when the body is not encoded.

    Raises ContentDecodingError for a coding it cannot undo (e.g. ``zstd``,
    which the client never asks for).
    """
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    unknown = [c for c in codings if c not in _DECODERS]
    if unknown:
        raise ContentDecodingError(f"unsupported Content-Encoding {', '.join(unknown)}")
    decoders: list[ContentDecoder] = [_DECODERS[c]() for c in reversed(codings)]
    return decoders[0] if len(decoders) == 1 else ChainDecoder(decoders)
