"""Socket.IO binary packets: placeholders, and packets that announce what they cannot be."""

from __future__ import annotations

import pytest

from loadtests.protocol.engineio import (
    MAX_ATTACHMENTS,
    SIO_BINARY_ACK,
    PacketError,
    fill_placeholders,
    parse_sio,
)


def test_placeholders_are_replaced_by_their_attachments_at_any_depth():
    data = ["L", {"a": {"_placeholder": True, "num": 1}, "b": [{"_placeholder": True, "num": 0}]}]
    assert fill_placeholders(data, [b"zero", b"one"]) == ["L", {"a": b"one", "b": [b"zero"]}]
    assert fill_placeholders({"_placeholder": True, "num": 0, "more": 1}, [b"x"]) == {
        "_placeholder": True,
        "num": 0,
        "more": 1,
    }  # not a placeholder: three keys


@pytest.mark.parametrize("num", [2, -1, "0", None])
def test_a_placeholder_without_its_attachment_is_a_packet_error(num):
    with pytest.raises(PacketError):
        fill_placeholders(["L", {"_placeholder": True, "num": num}], [b"a", b"b"])


def test_binary_acks_parse_with_their_attachment_count_and_id():
    packet = parse_sio(b'61-/UserSession,12[{"_placeholder":true,"num":0}]')
    assert (packet.type, packet.attachments, packet.ack_id, packet.namespace) == (SIO_BINARY_ACK, 1, 12, "/UserSession")


@pytest.mark.parametrize(
    "message",
    [
        b"5%d-/UserSession,[]" % (MAX_ATTACHMENTS + 1),
        b"5123456-/UserSession,[]",
        b"3/UserSession," + b"9" * 5000 + b"[]",  # an ack id int() would refuse with ValueError
    ],
)
def test_absurd_counts_and_ids_are_packet_errors(message: bytes):
    with pytest.raises(PacketError):
        parse_sio(message)


def test_data_nested_deeper_than_python_recurses_is_a_packet_error():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(PacketError, match="nested"):
        fill_placeholders(deep, [])
