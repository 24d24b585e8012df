"""Finished streams -> Locust's own stats rows (tables, charts, CSV, HTML report).

Per transport (Locust's "Type" column) and endpoint, two rows:

- ``<endpoint> stream``: whole-stream time (request sent -> ``end``/failure),
  fired as a real ``request`` event, so failures carry a :class:`StreamFailure`
  with the reason (HTTP status, error event, disconnect, timeout, missing end,
  short stream, stopped, ...) and Locust's exit code and failure table see them.
- ``<endpoint> TTFC``: request sent -> first chunk, for streams that got one.

Why the TTFC row bypasses the ``request`` event: every request event is also
added to ``stats.total`` ("Aggregated"), so firing one per TTFC would double the
request count and mix first-chunk times into whole-stream times.  Instead the
TTFC time is logged straight into its own ``StatsEntry`` (``stats.get(...)``),
which leaves ``stats.total`` alone.  This still aggregates in distributed mode
(checked against Locust 2.47): a worker ships every entry in ``stats.entries``
(``serialize_stats``) and, separately, its own ``stats.total``; the master
``extend``s each entry and its total from those, never re-deriving the total
from the entries.  So the master shows the TTFC rows, and Aggregated counts
streams, exactly as in a local run.

Locust's ``--csv`` writer rewrites its files once a second and is closed at
exit without a last pass (locustio/locust#1806, #2299), so streams that end
in the final second (every stream cut at stop) would be missing from
``*_stats.csv``.  :func:`let_csv_catch_up` holds the exit for one writer
interval so the CSV matches the console summary and our own records.

Locust rounds response times to ~2 significant digits in its percentiles; the
exact numbers are in our own records (``streams.parquet``).
"""

from __future__ import annotations

import math
from typing import Any

import gevent
from locust import stats as locust_stats
from locust.env import Environment

from loadtests.errors import LoadtestError
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import Client
from stream_harness.contract.schema import CHUNK


class StreamFailure(LoadtestError):
    """Why a stream failed; ``kind`` is an ``stream_harness.contract.kinds.ErrorKind`` value."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


#: Short, stable failure texts (Locust groups failures by their text, so no
#: per-stream numbers in them except the HTTP status).
_REASONS = {
    "connect": "could not connect",
    "stream_error_event": "error event in stream",
    "disconnect": "connection dropped before end",
    "timeout": "timed out",
    "missing_end": "stream ended without end event",
    "malformed": "unparseable body",
    "short_stream": "fewer chunks than promised",
    "ack": "no usable Socket.io ack",
    "stopped": "test stopped mid-stream",
}


#: How the clients' connect failures name a TLS problem (``connection.connect_error_text``).
TLS_MARK = "TLS: "


def tls_failure(record: StreamRecord) -> str | None:
    """``TLS: <why>`` when the stream failed in the TLS handshake (e.g. an untrusted certificate)."""
    detail = record.error_detail or ""
    if record.error != "connect" or TLS_MARK not in detail:
        return None
    return detail[detail.index(TLS_MARK) :]


def stream_failure(record: StreamRecord) -> StreamFailure | None:
    """The failure to report for ``record``; ``None`` when it completed (or was cancelled)."""
    if record.status != "failed":
        return None
    kind = record.error or "unknown"
    tls = tls_failure(record)
    if tls is not None:  # OpenSSL's reason is stable per cause: fine as a Locust failure group
        return StreamFailure(kind, f"{_REASONS['connect']}: {tls}")
    if kind == "http_status":
        return StreamFailure(kind, f"HTTP {record.http_status}")
    if kind == "timeout" and record.error_detail and "first" in record.error_detail.lower():
        return StreamFailure(kind, "timed out waiting for first chunk")
    return StreamFailure(kind, _REASONS.get(kind, kind))


def ttfc_ms(record: StreamRecord) -> float:
    """Request sent -> first chunk in ms; NaN when no chunk arrived."""
    try:
        return record.t_ms[record.kinds.index(CHUNK)]
    except ValueError:
        return math.nan


def row_names(record: StreamRecord) -> tuple[str, str, str]:
    """(request type, whole-stream row name, TTFC row name) of ``record``; a browser user's rows say so."""
    endpoint = record.endpoint if record.client == Client.PROTOCOL else f"{record.endpoint} ({record.client})"
    return record.transport, f"{endpoint} stream", f"{endpoint} TTFC"


def report_stream(environment: Environment, record: StreamRecord) -> None:
    """``stream_finished`` listener: add one stream to Locust's stats."""
    request_type, stream_name, ttfc_name = row_names(record)
    duration = record.duration_ms if math.isfinite(record.duration_ms) else 0.0
    environment.events.request.fire(
        request_type=request_type,
        name=stream_name,
        response_time=duration,
        response_length=0,
        exception=stream_failure(record),
        context={"stream_id": record.stream_id},
        response=None,
        url=None,
        start_time=record.started_at,
    )
    first_chunk = ttfc_ms(record)
    if math.isfinite(first_chunk):
        # Straight into the row's entry: not a request, so not in stats.total.
        environment.stats.get(ttfc_name, request_type).log(first_chunk, 0)  # type: ignore[arg-type]  # Locust takes float ms too


def let_csv_catch_up(environment: Environment) -> None:
    """Register a ``quit`` listener that waits one CSV-writer pass (only with ``--csv``)."""
    options = environment.parsed_options
    if options is None or not getattr(options, "csv_prefix", None) or getattr(options, "worker", False):
        return

    def wait_for_final_csv_pass(**_: Any) -> None:
        gevent.sleep(locust_stats.CSV_STATS_INTERVAL_SEC + 0.2)

    environment.events.quit.add_listener(wait_for_final_csv_pass)
