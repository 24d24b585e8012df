"""Engine.IO v4 / Socket.IO v5 packet encoding and decoding (websocket transport only).

Over websocket every Engine.IO packet is one frame: its first character is the
packet type, a message (``4``) carries one Socket.IO packet:
``<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]``.
Long-polling (many packets per HTTP response, i.e. fake bursts) is not spoken
on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from loadtests.protocol.errors import ProtocolError
from stream_harness.contract.protocol import SOCKETIO_PATH

# Engine.IO packet types (first byte of a websocket text frame)
EIO_OPEN = 0x30  # "0"
EIO_CLOSE = 0x31  # "1"
EIO_PING = 0x32  # "2"
EIO_PONG = 0x33  # "3"
EIO_MESSAGE = 0x34  # "4"
EIO_UPGRADE = 0x35  # "5"
EIO_NOOP = 0x36  # "6"
PONG = b"3"

# Socket.IO packet types
SIO_CONNECT = 0
SIO_DISCONNECT = 1
SIO_EVENT = 2
SIO_ACK = 3
SIO_CONNECT_ERROR = 4
SIO_BINARY_EVENT = 5
SIO_BINARY_ACK = 6


#: Most binary attachments one packet may announce, and most digits of an ack id.
MAX_ATTACHMENTS = 1000
MAX_ACK_ID_DIGITS = 15


class PacketError(ProtocolError):
    """A packet that does not follow the Engine.IO / Socket.IO grammar."""


def engineio_path(base_path: str) -> str:
    """Request target of the websocket endpoint under a base URL's path prefix."""
    return f"{base_path}{SOCKETIO_PATH}?EIO=4&transport=websocket"


def parse_open(frame: bytes) -> dict[str, Any]:
    """The Engine.IO open packet ``0{"sid":..,"pingInterval":..,"pingTimeout":..}``."""
    if not frame or frame[0] != EIO_OPEN:
        raise PacketError(f"expected an Engine.IO open packet, got {frame[:40]!r}")
    try:
        info = orjson.loads(frame[1:])
    except orjson.JSONDecodeError as exc:
        raise PacketError(f"bad open packet: {exc}") from None
    if type(info) is not dict or "sid" not in info:
        raise PacketError("open packet without sid")
    return info


def _ns_part(namespace: str) -> bytes:
    return b"" if namespace in ("", "/") else namespace.encode("utf-8") + b","


def encode_connect(namespace: str, auth: Any = None) -> bytes:
    """Engine.IO message carrying a Socket.IO CONNECT (``40/ns,{auth}``)."""
    return b"40" + _ns_part(namespace) + (orjson.dumps(auth) if auth is not None else b"")


def encode_disconnect(namespace: str) -> bytes:
    return b"41" + _ns_part(namespace)


def encode_event(namespace: str, args: list[Any], ack_id: int | None = None) -> bytes:
    """Engine.IO message carrying a Socket.IO EVENT (``42/ns,<id>["name",...]``)."""
    ack = b"" if ack_id is None else str(ack_id).encode("ascii")
    return b"42" + _ns_part(namespace) + ack + orjson.dumps(args)


def event_prefix(namespace: str) -> bytes:
    """Bytes every EVENT frame for ``namespace`` starts with (the reader's fast path)."""
    return b"42" + _ns_part(namespace)


@dataclass(slots=True)
class SioPacket:
    type: int
    namespace: str
    ack_id: int | None
    data: Any
    attachments: int = 0


def parse_sio(message: bytes) -> SioPacket:
    """Parse a Socket.IO packet (the Engine.IO message payload, after the ``4``)."""
    if not message or not 0x30 <= message[0] <= 0x36:
        raise PacketError(f"bad Socket.IO packet type in {message[:40]!r}")
    kind = message[0] - 0x30
    pos = 1
    n = len(message)
    attachments = 0
    if kind in (SIO_BINARY_EVENT, SIO_BINARY_ACK):
        dash = message.find(b"-", pos, pos + 5)
        if dash < 0 or not message[pos:dash].isdigit():
            raise PacketError("binary packet without attachment count")
        attachments = int(message[pos:dash])
        if attachments > MAX_ATTACHMENTS:
            raise PacketError(f"binary packet announcing {attachments} attachments")
        pos = dash + 1
    namespace = "/"
    if pos < n and message[pos] == 0x2F:  # "/"
        comma = message.find(b",", pos)
        end = comma if comma >= 0 else n
        namespace = message[pos:end].decode("utf-8", "replace")
        pos = end + 1 if comma >= 0 else n
    start = pos
    while pos < n and 0x30 <= message[pos] <= 0x39:
        pos += 1
    if pos - start > MAX_ACK_ID_DIGITS:
        raise PacketError("ack id too long")
    ack_id = int(message[start:pos]) if pos > start else None
    data = None
    if pos < n:
        try:
            data = orjson.loads(message[pos:])
        except orjson.JSONDecodeError as exc:
            raise PacketError(f"bad Socket.IO payload: {exc}") from None
    return SioPacket(kind, namespace, ack_id, data, attachments)


def fill_placeholders(data: Any, attachments: list[bytes]) -> Any:
    """A binary packet's data with each ``{"_placeholder": true, "num": n}`` replaced by attachment n."""
    try:
        return _fill(data, attachments)
    except RecursionError:
        raise PacketError("binary packet nested too deeply") from None


def _fill(data: Any, attachments: list[bytes]) -> Any:
    if type(data) is list:
        return [_fill(item, attachments) for item in data]
    if type(data) is dict:
        if data.get("_placeholder") is True and len(data) == 2:
            num = data.get("num")
            if type(num) is not int or not 0 <= num < len(attachments):
                raise PacketError(f"placeholder for attachment {num!r} of {len(attachments)}")
            return attachments[num]
        return {key: _fill(value, attachments) for key, value in data.items()}
    return data
