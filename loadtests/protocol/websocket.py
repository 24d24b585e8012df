"""Minimal RFC 6455 client side: opening handshake and framing.

Why our own: the Socket.io load user must timestamp each read in its single
reader loop and parse every frame of that read right there; the websocket
libraries hand messages to callbacks/threads.  No extensions are offered, so
frames are never compressed (RSV bits must be 0).
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import os

from loadtests.protocol.errors import ProtocolError
from loadtests.protocol.http1 import ResponseHead

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
_OPCODES = frozenset((OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))
#: Close codes a peer may send (RFC 6455 section 7.4 and the IANA registry):
#: the defined 1000-1003 and 1007-1013 (never 1004-1006 or 1015), and 3000-4999.
_WIRE_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, *range(1007, 1014)))
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class WebSocketError(ProtocolError):
    """The server broke the websocket protocol.

    ``messages``: the complete messages that came before the fault in the same
    read, which a reader still handles before it gives up on the connection.
    """

    messages: list[tuple[int, bytes]] = []


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_for(key: str) -> str:
    """The Sec-WebSocket-Accept value a server must answer ``key`` with."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def handshake_headers(host_header: str, key: str) -> list[tuple[str, str]]:
    return [
        ("Host", host_header),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]


def check_handshake(head: ResponseHead, key: str) -> None:
    """Raise WebSocketError unless ``head`` accepts the upgrade we asked for."""
    if head.status != 101:
        raise WebSocketError(f"upgrade refused: HTTP {head.status} {head.reason}".strip())
    if (head.get("upgrade") or "").lower() != "websocket":
        raise WebSocketError("upgrade response without 'Upgrade: websocket'")
    if head.get("sec-websocket-accept") != accept_for(key):
        raise WebSocketError("wrong Sec-WebSocket-Accept")
    if head.get("sec-websocket-extensions"):
        raise WebSocketError("server enabled an extension we did not offer")


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    stream = key * (n // 4) + key[: n % 4]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One client frame (clients must mask)."""
    key = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 65536:
        header = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + key + _mask(payload, key)


def encode_close(code: int = 1000, reason: str = "") -> bytes:
    return encode_frame(OP_CLOSE, code.to_bytes(2, "big") + reason.encode("utf-8")[:120])


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """Close frame payload -> (status code or None, reason)."""
    if len(payload) < 2:
        return None, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8", "replace")


def check_close(payload: bytes) -> None:
    """A close frame's payload: empty, or a code a peer may send and a UTF-8 reason."""
    if not payload:
        return
    if len(payload) == 1:
        raise WebSocketError("close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if code not in _WIRE_CLOSE_CODES and not 3000 <= code <= 4999:
        raise WebSocketError(f"close frame with code {code}, which a peer may not send")
    _check_utf8(payload[2:])


def _check_utf8(data: bytes, decoder: codecs.IncrementalDecoder | None = None, final: bool = True) -> None:
    """Text must be UTF-8 (a browser fails the connection otherwise); ``decoder`` for a fragmented message."""
    try:
        if decoder is None:
            data.decode("utf-8")
        else:
            decoder.decode(data, final)
    except UnicodeDecodeError as exc:
        raise WebSocketError(f"text that is not UTF-8 ({exc.reason})") from None


class FrameParser:
    """Feed raw reads, get back complete messages as ``(opcode, payload)``.

    Fragmented messages are reassembled (the opcode reported is the first
    frame's); control frames come out as soon as they are complete, even in the
    middle of a fragmented message.  Nothing after a close frame is parsed.
    The rules are RFC 6455's, read as strictly as a browser (and wsproto, the
    differential tests' reference) reads them: server frames unmasked, no RSV
    bits, no reserved opcodes, control frames short and whole, lengths
    minimally encoded, text in UTF-8, close codes a peer may send.
    """

    __slots__ = ("_buf", "_parts", "_need", "_frag_op", "_frag", "_frag_len", "_utf8", "closed", "max_message")

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self._buf = b""
        self._parts: list[bytes] = []  # reads waiting until _need bytes are in
        self._need = 0
        self._frag_op = -1
        self._frag: list[bytes] = []
        self._frag_len = 0
        self._utf8: codecs.IncrementalDecoder | None = None
        self.closed = False  # a close frame came: the rest is not parsed
        self.max_message = max_message

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        try:
            self._feed(data, out)
        except WebSocketError as exc:
            exc.messages = out
            raise
        return out

    def _feed(self, data: bytes, out: list[tuple[int, bytes]]) -> None:
        if self.closed:
            return
        if self._need:  # a big frame is still incomplete: just collect
            self._parts.append(data)
            self._need -= len(data)
            if self._need > 0:
                return
            self._need = 0
            data = b"".join(self._parts)
            self._parts.clear()
        elif self._buf:
            data = self._buf + data
        pos = 0
        n = len(data)
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            if b0 == 0x81 and b1 < 126 and pos + 2 + b1 <= n and self._frag_op < 0:
                # The usual frame: a whole text message under 126 bytes, all here.
                end = pos + 2 + b1
                payload = data[pos + 2 : end]
                if not payload.isascii():
                    _check_utf8(payload)
                out.append((OP_TEXT, payload))
                pos = end
                continue
            # The checks in the order wsproto makes them, so that a frame cut
            # short is refused (or waited for) at the same byte.
            opcode = b0 & 0x0F
            if opcode not in _OPCODES:
                raise WebSocketError(f"reserved opcode {opcode:#x}")
            length = b1 & 0x7F
            if opcode >= 8:
                if not b0 & 0x80:
                    raise WebSocketError("fragmented control frame")
                if length > 125:
                    raise WebSocketError("control frame too long")
            hdr = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                hdr = 4
                if length < 126:
                    raise WebSocketError("payload length not minimally encoded")
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hdr = 10
                if length < 65536 or length >> 63:
                    raise WebSocketError("bad 64-bit payload length")
            if b0 & 0x70:
                raise WebSocketError("RSV bits set without a negotiated extension")
            if b1 & 0x80:
                raise WebSocketError("masked frame from server")
            end = pos + hdr + length
            if end > n:
                if length > self.max_message:
                    raise WebSocketError(f"frame of {length} bytes exceeds the limit")
                if n - pos > hdr and opcode < 8:
                    self._check_partial(opcode, data[pos + hdr : n])
                break
            payload = data[pos + hdr : end]
            pos = end
            if b0 & 0x80:  # FIN
                if opcode == OP_CONTINUATION:
                    if self._frag_op < 0:
                        raise WebSocketError("continuation frame without a message")
                    self._frag.append(payload)
                    if self._frag_op == OP_TEXT:
                        _check_utf8(payload, self._utf8, True)
                    out.append((self._frag_op, b"".join(self._frag)))
                    self._frag_op = -1
                    self._frag.clear()
                    self._frag_len = 0
                elif opcode == OP_CLOSE:
                    check_close(payload)
                    out.append((opcode, payload))
                    self.closed = True
                    self._buf = b""
                    return
                elif opcode >= 8:
                    out.append((opcode, payload))
                elif self._frag_op < 0:
                    if opcode == OP_TEXT and not payload.isascii():
                        _check_utf8(payload)
                    out.append((opcode, payload))
                else:
                    raise WebSocketError("new message inside a fragmented one")
            else:
                if opcode == OP_CONTINUATION:
                    if self._frag_op < 0:
                        raise WebSocketError("continuation frame without a message")
                elif self._frag_op >= 0:
                    raise WebSocketError("new message inside a fragmented one")
                else:
                    self._frag_op = opcode
                    self._utf8 = _utf8_decoder() if opcode == OP_TEXT else None
                self._frag.append(payload)
                self._frag_len += length
                if self._frag_len > self.max_message:
                    raise WebSocketError("fragmented message exceeds the limit")
                if self._frag_op == OP_TEXT:
                    _check_utf8(payload, self._utf8, False)
        if pos < n:
            rest = data[pos:] if pos else data
            self._buf = b""
            need = _frame_size(rest)
            if need and need - len(rest) > 65536:  # large frame: collect reads, join once
                self._parts.append(rest)
                self._need = need - len(rest)
            else:
                self._buf = rest
        else:
            self._buf = b""

    def _check_partial(self, opcode: int, part: bytes) -> None:
        """What can be told of a data frame from its first bytes: its place, and its text so far."""
        if opcode == OP_CONTINUATION:
            if self._frag_op < 0:
                raise WebSocketError("continuation frame without a message")
            if self._frag_op == OP_TEXT and self._utf8 is not None:
                probe = _utf8_decoder()
                probe.setstate(self._utf8.getstate())
                _check_utf8(part, probe, False)
        elif self._frag_op >= 0:
            raise WebSocketError("new message inside a fragmented one")
        elif opcode == OP_TEXT and not part.isascii():
            _check_utf8(part, _utf8_decoder(), False)


def _frame_size(data: bytes) -> int:
    """Total size of the frame starting ``data`` if its header is complete, else 0."""
    if len(data) < 2:
        return 0
    length = data[1] & 0x7F
    if length < 126:
        return 2 + length
    if length == 126:
        return 4 + ((data[2] << 8) | data[3]) if len(data) >= 4 else 0
    return 10 + int.from_bytes(data[2:10], "big") if len(data) >= 10 else 0
