"""The harness's closed vocabularies as enums.

``StrEnum`` members are their own string values, so they go into JSON,
parquet columns and Locust rows unchanged, and compare equal to the strings
that files written by earlier versions hold.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Final


class Transport(StrEnum):
    NDJSON = "ndjson"  # FastAPI NDJSON over fetch (the target)
    SOCKETIO = "socketio"  # Socket.io v5 / Engine.IO v4 (the legacy path)


#: Preferred order of transports in summaries, reports and tables.
TRANSPORTS: Final[tuple[Transport, ...]] = (Transport.NDJSON, Transport.SOCKETIO)


class Endpoint(StrEnum):
    CHAT = "chat"
    AGENT = "agent"
    TOOL = "tool"


class Client(StrEnum):
    """Who read the stream: one of the harness's protocol clients, or a real browser page."""

    PROTOCOL = "protocol"
    BROWSER = "browser"


class EventKind(IntEnum):
    """Kinds of received events, stored as their int8 code in ``events`` (never renumber)."""

    CHUNK = 0
    STATUS_UPDATE = 1
    TOOL_EVENT = 2
    COMPLETION = 3
    DATA = 4
    ERROR = 5
    BROKER = 6
    HEARTBEAT = 7
    END = 8
    INFO = 9  # Socket.io only: an ``{"info": ...}`` message
    OTHER = 10  # any event type the protocol does not name

    @property
    def wire_name(self) -> str:
        """The NDJSON ``event`` value of this kind (``chunk``, ``status_update``, ...)."""
        return self.name.lower()


#: NDJSON ``event`` value -> code, for the client's hot path (a plain dict lookup).
EVENT_CODE_BY_NAME: Final[dict[str, int]] = {kind.wire_name: int(kind) for kind in EventKind}


class StreamStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ErrorKind(StrEnum):
    """Why a stream failed (``streams.errors`` keys in summary.json)."""

    CONNECT = "connect"  # could not connect / handshake failed
    HTTP_STATUS = "http_status"  # non-2xx response
    STREAM_ERROR_EVENT = "stream_error_event"  # an ``error`` event / Socket.io {"error": ...}
    DISCONNECT = "disconnect"  # connection closed before ``end``
    TIMEOUT = "timeout"  # stream or first-chunk timeout
    MISSING_END = "missing_end"  # body ended cleanly but without an ``end`` line
    MALFORMED = "malformed"  # body not parseable (bad framing or encoding)
    SHORT_STREAM = "short_stream"  # fewer chunks than the backend promised
    ACK = "ack"  # Socket.io ack missing or without listeners
    STOPPED = "stopped"  # the test stopped while the stream ran


class Verdict(StrEnum):
    """The buffering verdict of a group of streams."""

    CLEAN = "clean"
    BUFFERED = "buffered"
    INCONCLUSIVE = "inconclusive"  # too few chunks, or the load generator was saturated


class ParityVerdict(StrEnum):
    """NDJSON against Socket.io in one run (``summary.json`` ``parity.verdict``)."""

    PARITY = "parity"  # no difference both significant and large enough to matter
    NDJSON_WORSE = "ndjson_worse"
    NDJSON_BETTER = "ndjson_better"
    INCONCLUSIVE = "inconclusive"  # too few streams, an inconclusive buffering verdict, or a saturated harness


class StepDecision(StrEnum):
    """What one step of a capacity search found (``capacity.json``)."""

    HOLDS = "holds"  # the SLO held at this many concurrent streams
    BREAKS = "breaks"  # an objective of the SLO was missed
    SATURATED = "saturated"  # the load generator was the limit: the step says nothing about the backend
