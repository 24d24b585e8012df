"""Incremental ``Content-Encoding`` decoders (gzip, deflate, br) with output budgets.

Why: a compressing layer on the path is one of the regressions the harness
hunts, so the NDJSON client asks for what a browser asks for and decodes each
read as it comes -- the lines a read completes after decompression are the
lines the browser would have seen at that moment.

Budgets, because a few hundred compressed bytes can expand to gigabytes:

- per call (``read_limit``): one :meth:`~ContentDecoder.decompress` returns at
  most about this much (zlib's ``max_length``, brotli's
  ``output_buffer_limit``); the input it could not decode yet stays inside
  the decoder, ``pending`` says so, and ``decompress(b"")`` goes on.  A bomb
  is therefore decoded piece by piece (the reader hands the event loop a
  turn between pieces) and never materialises in memory;
- per stream (``stream_limit``): more output than this in total raises
  ContentDecodingError("decompressed size exceeds ... per stream").
"""

from __future__ import annotations

import zlib
from typing import Final, Protocol

import brotli

from loadtests.protocol.errors import ProtocolError

#: Default most output one decompress call returns.
READ_OUTPUT_LIMIT: Final = 1 << 20
#: Default most output one stream may decompress to.
STREAM_OUTPUT_LIMIT: Final = 64 << 20


class ContentDecodingError(ProtocolError):
    """The body is not valid data for its declared Content-Encoding (or decodes to too much)."""


class ContentDecoder(Protocol):
    @property
    def pending(self) -> bool:
        """Output may be waiting: call ``decompress(b"")`` before giving up on the body."""

    def decompress(self, data: bytes) -> bytes:
        """Feed ``data``; at most about ``read_limit`` bytes of output come back."""

    def finish(self) -> None:
        """Raise ContentDecodingError if the compressed stream stopped mid-way."""


def format_size(n: int) -> str:
    """``67108864`` -> ``"64 MiB"`` (exact binary units where they fit, else bytes)."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


class _Budget:
    """Counts one decoder's output against the per-stream limit."""

    __slots__ = ("read_limit", "stream_limit", "total")

    def __init__(self, read_limit: int, stream_limit: int) -> None:
        if read_limit < 1 or stream_limit < 1:
            raise ValueError("decoder limits must be positive")
        self.read_limit = read_limit
        self.stream_limit = stream_limit
        self.total = 0

    def spend(self, out: bytes) -> bytes:
        self.total += len(out)
        if self.total > self.stream_limit:
            raise ContentDecodingError(f"decompressed size exceeds {format_size(self.stream_limit)} per stream")
        return out


class _ZlibDecoder:
    """zlib-based decoding with ``max_length``: the input zlib did not take waits in ``_tail``."""

    __slots__ = ("_budget", "_d", "_tail", "_full", "_starved", "_fed")

    _name = "zlib"
    #: Compressed data after the end of the stream is another member (gzip) or ignored (deflate).
    _members = False

    def __init__(self, read_limit: int, stream_limit: int) -> None:
        self._budget = _Budget(read_limit, stream_limit)
        self._d: zlib._Decompress | None = None
        self._tail = b""
        self._full = False  # the last call filled its budget: zlib may hold more output
        self._starved = False  # the tail is too short to start decoding: wait for input
        self._fed = False

    @property
    def pending(self) -> bool:
        return self._full or (bool(self._tail) and not self._starved)

    def _new(self, data: bytes) -> zlib._Decompress | None:
        raise NotImplementedError

    def decompress(self, data: bytes) -> bytes:
        if data:
            self._fed = True
            data = self._tail + data if self._tail else data
        else:
            data = self._tail
        self._tail = b""
        self._starved = False
        limit = self._budget.read_limit
        parts: list[bytes] = []
        size = 0
        try:
            while True:
                d = self._d
                if d is None:
                    d = self._d = self._new(data)
                    if d is None:
                        self._tail, self._starved = data, True
                        break
                out = d.decompress(data, limit - size)
                if out:
                    parts.append(out)
                    size += len(out)
                data = d.unconsumed_tail
                if d.eof and d.unused_data:
                    if not self._members:
                        data = b""  # after the end of a deflate stream: ignored
                    else:
                        data = d.unused_data
                        self._d = None
                        if size < limit:
                            continue
                self._tail = data
                break
        except zlib.error as exc:
            raise ContentDecodingError(f"{self._name}: {exc}") from None
        self._full = size >= limit
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        return self._budget.spend(out)

    def finish(self) -> None:
        d = self._d
        if self._tail or (self._fed and (d is None or not d.eof)):
            raise ContentDecodingError(f"{self._name} stream truncated")


class GzipDecoder(_ZlibDecoder):
    """gzip, including several concatenated members."""

    __slots__ = ()
    _name = "gzip"
    _members = True

    def _new(self, data: bytes) -> zlib._Decompress | None:
        return zlib.decompressobj(16 + zlib.MAX_WBITS)


class DeflateDecoder(_ZlibDecoder):
    """HTTP ``deflate`` is zlib-wrapped; some servers send raw deflate, as browsers tolerate."""

    __slots__ = ()
    _name = "deflate"

    def _new(self, data: bytes) -> zlib._Decompress | None:
        if len(data) < 2:
            return None  # two bytes tell zlib-wrapped from raw
        cmf, flg = data[0], data[1]
        zlib_wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)


class BrotliDecoder:
    """br, with brotli's output limit; input it cannot take yet waits in ``_held``."""

    __slots__ = ("_budget", "_d", "_held", "_fed")

    def __init__(self, read_limit: int, stream_limit: int) -> None:
        self._budget = _Budget(read_limit, stream_limit)
        self._d = brotli.Decompressor()
        self._held = b""
        self._fed = False

    @property
    def pending(self) -> bool:
        return bool(self._held) or not self._d.can_accept_more_data()

    def decompress(self, data: bytes) -> bytes:
        if data:
            self._fed = True
            self._held = self._held + data if self._held else data
        d = self._d
        limit = self._budget.read_limit
        try:
            if d.can_accept_more_data():
                data, self._held = self._held, b""
            else:
                data = b""  # brotli first hands out what it holds
            if not data and d.can_accept_more_data():
                return b""
            out: bytes = d.process(data, output_buffer_limit=limit)
        except brotli.error as exc:
            raise ContentDecodingError(f"br: {exc}") from None
        return self._budget.spend(out)

    def finish(self) -> None:
        if self._held or (self._fed and not self._d.is_finished()):
            raise ContentDecodingError("br stream truncated")


class ChainDecoder:
    """Several codings (``Content-Encoding: gzip, br``): undone in reverse order.

    A stage is fed only when the stage after it has handed out everything it
    holds, so no stage's input grows beyond one call's output.
    """

    __slots__ = ("_decoders", "_held")

    def __init__(self, decoders: list[ContentDecoder]) -> None:
        self._decoders = decoders
        self._held = b""

    @property
    def pending(self) -> bool:
        return bool(self._held) or any(d.pending for d in self._decoders)

    def decompress(self, data: bytes) -> bytes:
        if data:
            self._held = self._held + data if self._held else data
        return self._pull(len(self._decoders) - 1)

    def _pull(self, stage: int) -> bytes:
        decoder = self._decoders[stage]
        if stage == 0:
            data, self._held = self._held, b""
            return decoder.decompress(data)
        if decoder.pending:
            return decoder.decompress(b"")
        return decoder.decompress(self._pull(stage - 1))

    def finish(self) -> None:
        for d in self._decoders:
            d.finish()


_DECODERS: dict[str, type[GzipDecoder] | type[DeflateDecoder] | type[BrotliDecoder]] = {
    "gzip": GzipDecoder,
    "x-gzip": GzipDecoder,
    "deflate": DeflateDecoder,
    "br": BrotliDecoder,
}


def make_content_decoder(
    content_encoding: str | None,
    *,
    read_limit: int = READ_OUTPUT_LIMIT,
    stream_limit: int = STREAM_OUTPUT_LIMIT,
) -> ContentDecoder | None:
    """Decoder for a Content-Encoding header value; None when the body is not encoded.

    Raises ContentDecodingError for a coding it cannot undo (e.g. ``zstd``,
    which the client never asks for).  Every stage of a chain has the same
    budgets.
    """
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    unknown = [c for c in codings if c not in _DECODERS]
    if unknown:
        raise ContentDecodingError(f"unsupported Content-Encoding {', '.join(unknown)}")
    decoders: list[ContentDecoder] = [_DECODERS[c](read_limit, stream_limit) for c in reversed(codings)]
    return decoders[0] if len(decoders) == 1 else ChainDecoder(decoders)
