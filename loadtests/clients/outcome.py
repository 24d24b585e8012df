"""How an NDJSON stream ends up in its record: the rules every NDJSON client applies.

The HTTP/1.1 and HTTP/2 clients and the browser users (whose pages report
what happened) call :func:`conclude_ndjson` once the body has ended, so a
missing ``end``, a short stream or a cancel is classified the same way
whoever read it.
"""

from __future__ import annotations

from typing import Final

from loadtests.protocol.ndjson_events import EventLines
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import ErrorKind, StreamStatus

#: After ``end``, how long the body's own end (the chunked terminator, END_STREAM)
#: may take before the stream counts as cut (a proxy that drops it is a bug).
END_GRACE_S: Final = 2.0

#: A reader's fault: (``ErrorKind``, detail).
Failure = tuple[ErrorKind, str]


def cut_failure(lines: EventLines, how: str) -> Failure:
    """The connection or the stream went away before the body ended."""
    if lines.ended:
        return ErrorKind.DISCONNECT, f"body not terminated after end ({how})"
    return ErrorKind.DISCONNECT, f"{how} before end, after {lines.n_chunks} chunks"


def expiry_failure(
    lines: EventLines,
    *,
    in_end_grace: bool,
    waiting_first_chunk: bool,
    first_chunk_timeout: float,
    stream_timeout: float,
) -> Failure:
    """A deadline passed: the end grace, the first chunk's or the stream's."""
    if in_end_grace:
        return ErrorKind.DISCONNECT, f"body not terminated within {END_GRACE_S:g} s after end"
    if waiting_first_chunk:
        return ErrorKind.TIMEOUT, f"no chunk within first_chunk_timeout={first_chunk_timeout:g} s"
    return ErrorKind.TIMEOUT, f"stream not done within stream_timeout={stream_timeout:g} s ({lines.n_chunks} chunks)"


def http_error_detail(status: int, body: bytes | str) -> str:
    """``HTTP 503: <the first 200 characters of the body>``."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    snippet = text[:200].strip()
    return f"HTTP {status}" + (f": {snippet}" if snippet else "")


def conclude_ndjson(
    record: StreamRecord,
    lines: EventLines,
    *,
    failure: tuple[str, str] | None,
    http_error: str | None,
    last_ms: float,
) -> None:
    """Status, error and duration of a finished stream (the first failure reason wins).

    ``failure``: a fault the reader saw (timeout, cut, malformed body) as
    (ErrorKind, detail); ``http_error``: the detail of a non-2xx response;
    ``last_ms``: when the last byte arrived (the duration when no ``end``).
    """
    if failure is not None:
        record.fail(*failure)
    elif http_error is not None:
        record.fail(ErrorKind.HTTP_STATUS, http_error)
    elif not lines.ended:
        record.fail(ErrorKind.MISSING_END, f"body ended without an end line after {lines.n_chunks} chunks")
    elif not lines.cancelled and 0 <= lines.n_chunks < record.expected_chunks:
        record.fail(ErrorKind.SHORT_STREAM, f"{lines.n_chunks} of {record.expected_chunks} chunks")
    if record.error is None:
        record.status = StreamStatus.CANCELLED if lines.cancelled else StreamStatus.COMPLETED
    record.duration_ms = lines.end_ms if lines.ended else last_ms
