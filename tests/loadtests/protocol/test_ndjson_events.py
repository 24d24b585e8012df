"""NDJSON event lines: what each line becomes, and the hooks a reader acts on."""

from __future__ import annotations

import math

import orjson
import pytest

from loadtests.protocol.ndjson_events import EventLines
from stream_harness.contract.schema import CHUNK, END, ERROR, NO_SEQ, OTHER

STARTED_AT = 1_700_000_000.0


def line(event: str, **fields: object) -> bytes:
    return orjson.dumps({"event": event, **fields})


class Reader:
    """Collects what EventLines hands out, and the hooks in the order they came."""

    def __init__(self) -> None:
        self.events: list[tuple[int, float, int, int, float]] = []
        self.calls: list[tuple[str, object]] = []
        self.lines = EventLines(
            lambda *event: self.events.append(event),
            STARTED_AT,
            on_first_chunk=lambda t_ms: self.calls.append(("first_chunk", t_ms)),
            on_end=lambda t_ms: self.calls.append(("end", t_ms)),
            on_error=lambda detail: self.calls.append(("error", detail)),
        )


def test_each_line_becomes_one_event_with_its_reads_time_and_the_servers_emit_time():
    reader = Reader()
    reader.lines.feed([line("chunk", seq=0, ts=STARTED_AT + 0.25), line("heartbeat", seq=1)], 5.0, 0)
    reader.lines.feed([line("mystery", seq=2**31), line("end", seq=3, ts=STARTED_AT + 1)], 9.0, 3)
    kinds = [event[0] for event in reader.events]
    assert kinds[0] == CHUNK and kinds[2] == OTHER and kinds[3] == END
    assert [event[1:3] for event in reader.events] == [(5.0, 0), (5.0, 0), (9.0, 3), (9.0, 3)]
    assert [event[3] for event in reader.events] == [0, 1, NO_SEQ, 3]  # seq beyond 2**31-1 is no seq
    emit = [event[4] for event in reader.events]
    assert emit[0] == pytest.approx(250.0) and math.isnan(emit[1]) and emit[3] == pytest.approx(1000.0)
    assert reader.lines.n_chunks == 1 and reader.lines.ended and reader.lines.end_ms == 9.0


def test_blank_lines_are_nothing_and_other_non_objects_are_malformed():
    reader = Reader()
    reader.lines.feed([b"", b"   ", b"[1, 2]", b'"text"', b'{"event": "chunk"', line("chunk")], 1.0, 0)
    assert reader.lines.malformed == 3 and [event[0] for event in reader.events] == [CHUNK]


def test_hooks_come_once_each_in_line_order():
    reader = Reader()
    reader.lines.feed([line("status_update"), line("chunk"), line("chunk")], 4.0, 0)
    reader.lines.feed([line("error", data={"error_type": "Boom", "message": "late"}), line("error")], 6.0, 1)
    reader.lines.feed([line("end", data={"reason": "cancelled"}), line("end")], 8.0, 2)
    assert reader.calls == [("first_chunk", 4.0), ("error", "Boom: late"), ("end", 8.0)]
    assert reader.lines.error_detail == "Boom: late" and reader.lines.cancelled
    assert [event[0] for event in reader.events].count(ERROR) == 2  # every event is still recorded


def test_a_first_chunk_hook_that_raises_refuses_the_chunk():
    class Late(Exception):
        pass

    def too_late(t_ms: float) -> None:
        raise Late

    lines = EventLines(lambda *event: pytest.fail("recorded"), STARTED_AT, on_first_chunk=too_late)
    with pytest.raises(Late):
        lines.feed([line("chunk")], 3.0, 0)
    assert lines.n_chunks == 0


def test_after_drop_hooks_the_lines_are_still_read_but_nobody_is_called():
    reader = Reader()
    reader.lines.drop_hooks()
    reader.lines.feed([line("chunk"), line("error"), line("end")], 2.0, 0)
    assert reader.calls == [] and len(reader.events) == 3 and reader.lines.ended
