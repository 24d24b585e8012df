"""Differential tests: our websocket frame parsing against wsproto's, on the same bytes.

Hypothesis builds server-to-client frame sequences (whole and fragmented
messages, control frames between fragments, close frames with every kind of
payload) and, for a hostile sequence, frames that break a rule: masked,
RSV bits, reserved opcodes, long or fragmented control frames, lengths not
minimally encoded, continuations out of place, text that is not UTF-8.  The
bytes go in random splits to our ``FrameParser`` and to wsproto's client
``FrameProtocol``; both must give the same messages up to the first close,
and reject the same sequences (after the same messages).
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from loadtests.protocol.websocket import OP_CLOSE, FrameParser, WebSocketError

ERROR = "error"
Message = tuple[int, bytes]


def ours(pieces: list[bytes]) -> tuple[list[Message], bool]:
    """(complete messages up to the first close, rejected?) from our parser."""
    parser = FrameParser()
    messages: list[Message] = []
    try:
        for piece in pieces:
            messages += parser.feed(piece)
    except WebSocketError as exc:
        return messages + exc.messages, True
    return messages, False


def theirs(pieces: list[bytes]) -> tuple[list[Message], bool]:
    """The same from wsproto, data frames reassembled into messages, closes as their raw payload."""
    protocol = FrameProtocol(client=True, extensions=[])
    messages: list[Message] = []
    opcode: int | None = None
    parts: list[bytes] = []
    try:
        for piece in pieces:
            protocol.receive_bytes(piece)
            for frame in protocol.received_frames():
                if frame.opcode is Opcode.CLOSE:
                    code, reason = frame.payload
                    payload = b"" if code == 1005 and not reason else struct.pack("!H", code) + reason.encode()
                    messages.append((OP_CLOSE, payload))
                    return messages, False  # wsproto reads nothing after a close
                if frame.opcode.iscontrol():
                    messages.append((int(frame.opcode), bytes(frame.payload)))
                    continue
                opcode = int(frame.opcode) if opcode is None else opcode
                data = frame.payload
                parts.append(data.encode("utf-8") if isinstance(data, str) else bytes(data))
                if frame.message_finished:
                    messages.append((opcode, b"".join(parts)))
                    opcode, parts = None, []
    except ParseFailed:
        return messages, True
    return messages, False


# --------------------------------------------------------------------------- the grammar


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = False, length_form: str = "minimal"
) -> bytes:
    n = len(payload)
    first = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    if length_form == "16" or (length_form == "minimal" and 126 <= n < 65536):
        header = first + bytes([bit | 126]) + struct.pack("!H", n)
    elif length_form == "64" or (length_form == "minimal" and n >= 65536):
        header = first + bytes([bit | 127]) + struct.pack("!Q", n)
    elif length_form == "64-msb":
        header = first + bytes([bit | 127]) + struct.pack("!Q", n | 1 << 63)
    else:
        header = first + bytes([bit | n])
    return header + (b"\0\0\0\0" if mask else b"") + payload


TEXTS = st.one_of(st.text(max_size=20).map(str.encode), st.sampled_from(["é😀 末".encode(), b"x" * 300]))
BAD_UTF8 = st.sampled_from([b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"a\x80b"])
CLOSE_PAYLOADS = st.one_of(
    st.sampled_from([b"", struct.pack("!H", 1000), struct.pack("!H", 1001) + "bye é".encode()]),
    st.sampled_from([1002, 1003, 1007, 1011, 1012, 1013, 3000, 4999]).map(lambda c: struct.pack("!H", c)),
)
BAD_CLOSE_PAYLOADS = st.sampled_from(
    [b"\x03", struct.pack("!H", 999), struct.pack("!H", 1004), struct.pack("!H", 1005), struct.pack("!H", 1006)]
    + [struct.pack("!H", 1014), struct.pack("!H", 1015), struct.pack("!H", 2999), struct.pack("!H", 5000)]
    + [struct.pack("!H", 1000) + b"\xff"]
)


@st.composite
def good_frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["text", "binary", "fragmented", "ping", "pong", "big binary"]))
    if kind == "text":
        return frame(0x1, draw(TEXTS))
    if kind == "binary":
        return frame(0x2, draw(st.binary(max_size=40)))
    if kind == "big binary":  # longer than the parser's collect-reads threshold
        return frame(0x2, b"\x07" * draw(st.sampled_from([70_000, 65_535, 65_536])))
    if kind in ("ping", "pong"):
        return frame(0x9 if kind == "ping" else 0xA, draw(st.binary(max_size=125)))
    opcode = draw(st.sampled_from([0x1, 0x2]))
    text = draw(TEXTS) if opcode == 0x1 else draw(st.binary(max_size=30))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), min_size=1, max_size=3)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    out = b""
    for i, piece in enumerate(pieces):
        out += frame(opcode if i == 0 else 0x0, piece, fin=i == len(pieces) - 1)
        if i < len(pieces) - 1 and draw(st.integers(0, 3)) == 0:
            out += frame(0x9, b"between")  # a control frame inside a fragmented message
    return out


@st.composite
def bad_frames(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            [
                "masked",
                "rsv",
                "reserved opcode",
                "long control",
                "fragmented control",
                "length 16 not minimal",
                "length 64 not minimal",
                "length 64 msb",
                "lone continuation",
                "message inside a message",
                "bad utf-8",
                "bad utf-8 fragment",
                "bad close",
            ]
        )
    )
    if kind == "masked":
        return frame(0x1, b"hi", mask=True)
    if kind == "rsv":
        return frame(0x2, b"hi", rsv=draw(st.integers(1, 7)))
    if kind == "reserved opcode":
        return frame(draw(st.sampled_from([0x3, 0x7, 0xB, 0xF])), b"x")
    if kind == "long control":
        return frame(0x9, b"p" * 126)
    if kind == "fragmented control":
        return frame(0x9, b"p", fin=False)
    if kind == "length 16 not minimal":
        return frame(0x2, b"short", length_form="16")
    if kind == "length 64 not minimal":
        return frame(0x2, b"short", length_form="64")
    if kind == "length 64 msb":
        return frame(0x2, b"", length_form="64-msb")
    if kind == "lone continuation":
        return frame(0x0, b"rest")
    if kind == "message inside a message":
        return frame(0x1, b"a", fin=False) + frame(0x2, b"b")
    if kind == "bad utf-8":
        return frame(0x1, draw(BAD_UTF8))
    if kind == "bad utf-8 fragment":
        return frame(0x1, b"ok", fin=False) + frame(0x0, draw(BAD_UTF8), fin=False) + frame(0x0, b"!")
    return frame(0x8, draw(BAD_CLOSE_PAYLOADS))


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    parts = draw(st.lists(good_frames(), max_size=5))
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), draw(bad_frames()))
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), frame(0x8, draw(CLOSE_PAYLOADS)))
    raw = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    return [p for p in (raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])) if p]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams())
@example([frame(0x1, b"one") + frame(0x1, b"\xff") + frame(0x1, b"never")])
@example([frame(0x8, b"") + b"\xff\xff garbage after the close"])
def test_frames_parse_as_wsproto_parses_them(pieces: list[bytes]):
    mine, reference = ours(pieces), theirs(pieces)
    assert mine == reference, f"{b''.join(pieces)[:200]!r}: ours {mine}, wsproto {reference}"
    event("rejected" if mine[1] else f"{min(len(mine[0]), 3)}+ messages")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40))
def test_random_bytes_are_rejected_or_read_as_wsproto_reads_them(noise: bytes):
    for raw in (noise, frame(0x1, b"ok") + noise, frame(0x1, "é".encode(), fin=False) + noise):
        assert ours([raw]) == theirs([raw]), raw
