"""Browser pages against the fake backend: what a page records, and how faults end up in the record.

One Chromium for the module (Debian's, through the helper process and the
bridge, as the browser users run it), one page per transport.  The page runs
the product's client shape; the assertions are about what reaches the
StreamRecord: every event with the page's read index and time, the chunk
count the backend promised, the faults classified by the protocol clients'
rules.  Timing checks are about order and plausibility, not speed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import pytest

from fake_backend.process import BackendProcess
from loadtests.browser.channel import PageChannel, conclude
from loadtests.browser.chromium import CHROMIUM
from loadtests.browser.fleet import BrowserFleet
from loadtests.browser.orders import ndjson_order, socketio_order
from loadtests.options import RunOptions
from loadtests.protocol.http1 import parse_base_url
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import Client, ErrorKind, EventKind
from stream_harness.contract.schema import CHUNK, END

pytestmark = [pytest.mark.exclusive, pytest.mark.timeout(180)]
AUTH = {"X-Fingerprint-ID": "page-test"}


@pytest.fixture(scope="module")
def fleet() -> Iterator[BrowserFleet]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (`make browser` installs it as root)")
    browsers = BrowserFleet()
    browsers.start()
    try:
        yield browsers
    finally:
        browsers.stop()


@pytest.fixture(scope="module")
def pages(fleet: BrowserFleet, backend: BackendProcess) -> dict[str, PageChannel]:
    return {transport: fleet.open_page(backend.url) for transport in ("ndjson", "socketio")}


def run(page: PageChannel, backend: BackendProcess, transport: str, **options: object) -> StreamRecord:
    settings = RunOptions(**{"first_chunk_timeout": 10.0, "stream_timeout": 30.0, **options})  # type: ignore[arg-type]
    origin = parse_base_url(backend.url)
    record = StreamRecord(transport, "chat", f"{transport}-{time.monotonic_ns()}", client=Client.BROWSER)
    request = {"messages": [{"role": "user", "content": "hi"}], "harness": settings.harness_fields(transport)}
    if transport == "ndjson":
        order = ndjson_order(record.stream_id, origin, settings, request, AUTH)
    else:
        order = socketio_order(record.stream_id, origin, settings, request)
    timeout = settings.stream_timeout + settings.first_chunk_timeout + 10
    stream = page.run(record, order, transport, timeout)
    conclude(stream, gave_up_after_s=timeout)
    return record


def test_an_ndjson_stream_is_recorded_read_by_read(pages: dict[str, PageChannel], backend: BackendProcess):
    before = time.time()
    record = run(pages["ndjson"], backend, "ndjson", backend_options={"chunks": 150, "duration_s": 1.5, "seed": 4})
    assert (record.status, record.error) == ("completed", None), record.error_detail
    assert record.client == "browser" and record.http_version == "1.1" and record.http_status == 200
    kinds = np.asarray(record.kinds)
    assert int((kinds == CHUNK).sum()) == record.expected_chunks == 150 and kinds[-1] == END
    assert EventKind.STATUS_UPDATE in kinds  # the other event kinds come through too
    t_ms, reads = np.asarray(record.t_ms), np.asarray(record.reads)
    assert np.all(np.diff(t_ms) >= 0) and np.all(np.diff(reads) >= 0) and reads[0] == 0
    assert record.n_reads == reads[-1] + 1 and record.n_reads >= 50  # paced: reads, not one blob
    assert 0 < record.time_to_headers_ms <= t_ms[0]
    assert t_ms[-1] - t_ms[0] >= 600
    assert before - 1 < record.started_at < time.time()
    emit = np.asarray(record.emit_ms)
    assert np.isfinite(emit).all() and np.all(t_ms - emit > -5)  # emitted before it arrived (same clock)
    assert 0 < record.paint_lag_p99_ms < 1000  # every read reached a frame


def test_a_socketio_task_is_recorded_message_by_message(pages: dict[str, PageChannel], backend: BackendProcess):
    record = run(pages["socketio"], backend, "socketio", backend_options={"chunks": 80, "duration_s": 0.4})
    assert (record.status, record.error) == ("completed", None), record.error_detail
    kinds = np.asarray(record.kinds)
    assert int((kinds == CHUNK).sum()) == 80 and kinds[-1] == END
    assert EventKind.INFO in kinds and EventKind.DATA in kinds
    assert np.array_equal(np.asarray(record.reads), np.arange(len(kinds)))  # one message, one read
    assert np.array_equal(np.asarray(record.seqs), np.arange(len(kinds)))  # message index on its listener
    assert record.time_to_headers_ms > 0 and record.n_reads == len(kinds)
    # the same page runs the next task on the same socket
    again = run(pages["socketio"], backend, "socketio", backend_options={"chunks": 5, "duration_s": 0.05})
    assert again.status == "completed" and int((np.asarray(again.kinds) == CHUNK).sum()) == 5


@pytest.mark.parametrize(
    ("harness", "first_chunk_timeout", "error", "detail"),
    [
        ({"chunks": 0}, 10.0, ErrorKind.HTTP_STATUS, "HTTP 422"),
        ({"chunks": 20, "duration_s": 0.1, "error_at": 4}, 10.0, ErrorKind.STREAM_ERROR_EVENT, "injected fault"),
        ({"chunks": 20, "duration_s": 0.1, "disconnect_at": 6}, 10.0, ErrorKind.DISCONNECT, ""),
        ({"chunks": 3, "first_chunk_delay_ms": 3000}, 0.4, ErrorKind.TIMEOUT, "first_chunk_timeout"),
    ],
    ids=["http-status", "error-event", "disconnect", "first-chunk-timeout"],
)
def test_ndjson_faults_are_classified_as_the_protocol_client_does(
    pages: dict[str, PageChannel],
    backend: BackendProcess,
    harness: dict,
    first_chunk_timeout: float,
    error: str,
    detail: str,
):
    record = run(pages["ndjson"], backend, "ndjson", backend_options=harness, first_chunk_timeout=first_chunk_timeout)
    assert (record.status, record.error) == ("failed", error), record.error_detail
    assert detail in (record.error_detail or "")
    assert not math.isnan(record.duration_ms)
    if error == ErrorKind.TIMEOUT:
        assert 300 <= record.duration_ms < 2500


def test_a_socketio_error_event_fails_the_task(pages: dict[str, PageChannel], backend: BackendProcess):
    record = run(
        pages["socketio"], backend, "socketio", backend_options={"chunks": 20, "duration_s": 0.1, "error_at": 3}
    )
    assert record.error == ErrorKind.STREAM_ERROR_EVENT and int((np.asarray(record.kinds) == CHUNK).sum()) == 3


def test_the_pages_feed_the_self_check(fleet: BrowserFleet, pages: dict[str, PageChannel]):
    fleet.monitor.sample()
    summary = fleet.monitor.summary()
    assert summary["pages"] == 2 and summary["page_lag_samples"] > 0
    assert summary["paint_lag_ms_p99"] is not None and summary["rss_mb_max"] > 0
    assert fleet.monitor.cpu_time_s() > 0
