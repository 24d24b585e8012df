"""NDJSON load client: the wire protocol (docs/PROTOCOL.md, "NDJSON") and the measurement traps.

Part 1 feeds the decoders every possible read split.  Part 2 runs the client
against loopback servers that send exact bytes.  Part 3 runs it against the
fake backend.  Timed assertions are generous: they check that the right read
is credited, not speed.
"""

from __future__ import annotations

import math
import shutil
import ssl
import subprocess
import time
import zlib

import brotli
import gevent
import orjson
import pytest

from loadtests.clients.ndjson import NdjsonClient, _StreamRun
from loadtests.protocol.content import ContentDecodingError, make_content_decoder
from loadtests.protocol.errors import FramingError
from loadtests.protocol.http1 import (
    ChunkedBody,
    CloseDelimitedBody,
    LengthBody,
    framing_for,
    parse_response_head,
)
from loadtests.protocol.lines import LineSplitter
from loadtests.protocol.ndjson_events import EventLines
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import EventKind
from stream_harness.contract.schema import CHUNK, END, ERROR, NO_SEQ, OTHER
from tests.support.cycles import left_in_cycles
from tests.support.loopback import LAST_CHUNK, ScriptedServer, chunk, free_port, http_head, line

UTF8_TEXT = "héllo wörld 日本語 😀 ok"
STATUS = EventKind.STATUS_UPDATE
HEARTBEAT = EventKind.HEARTBEAT


def new_record() -> StreamRecord:
    return StreamRecord(transport="ndjson", endpoint="chat", stream_id="t")


def run_stream(
    url: str,
    *,
    client: NdjsonClient | None = None,
    first_chunk_timeout: float = 5.0,
    stream_timeout: float = 10.0,
    headers: dict | None = None,
    path: str = "/api/ai/chat/unified",
    body: dict | None = None,
) -> StreamRecord:
    own = client is None
    client = client or NdjsonClient(url)
    record = new_record()
    try:
        client.stream(
            record,
            path,
            body or {"messages": []},
            headers or {"X-Fingerprint-ID": "fp"},
            first_chunk_timeout=first_chunk_timeout,
            stream_timeout=stream_timeout,
        )
    finally:
        if own:
            client.close()
    return record


def kinds(record: StreamRecord) -> list[int]:
    return list(record.kinds)


# =========================================================================== part 1: decoders


def split_feed(feed, data: bytes, cuts: tuple[int, ...]) -> list:
    out = []
    prev = 0
    for cut in (*cuts, len(data)):
        out.append(feed(data[prev:cut]))
        prev = cut
    return out


CHUNKED = (
    chunk(b'{"event":"chunk","data":{"text":"a"}}\n')
    + b"5;ext=1\r\nhello\r\n"  # a chunk extension
    + chunk(UTF8_TEXT.encode())
    + b"0\r\nX-Trailer: yes\r\n\r\n"
)  # a trailer
CHUNKED_PAYLOAD = b'{"event":"chunk","data":{"text":"a"}}\n' + b"hello" + UTF8_TEXT.encode()


@pytest.mark.parametrize("cut", range(1, len(CHUNKED)))
def test_chunked_body_any_single_split(cut):
    body = ChunkedBody()
    payload = b"".join(split_feed(body.feed, CHUNKED + b"NEXT", (cut,)))
    assert payload == CHUNKED_PAYLOAD
    assert body.done and body.leftover == b"NEXT"


def test_chunked_body_byte_by_byte_and_not_done_when_cut():
    body = ChunkedBody()
    payload = b"".join(body.feed(CHUNKED[i : i + 1]) for i in range(len(CHUNKED)))
    assert payload == CHUNKED_PAYLOAD and body.done
    cut = ChunkedBody()
    cut.feed(CHUNKED[:-2])
    assert not cut.done and not cut.clean_at_eof


@pytest.mark.parametrize("bad", [b"zz\r\nab\r\n", b"-1\r\n", b"2\r\nabXY"])
def test_chunked_body_rejects_broken_framing(bad):
    with pytest.raises(FramingError):
        ChunkedBody().feed(bad)


def test_framing_follows_rfc_9112():
    def head(*headers: str, status: int = 200):
        return parse_response_head((f"HTTP/1.1 {status} OK\r\n" + "\r\n".join(headers)).encode())

    assert isinstance(framing_for(head("Transfer-Encoding: gzip, chunked", "Content-Length: 5"), "POST"), ChunkedBody)
    length = framing_for(head("Content-Length: 3"), "POST")
    assert isinstance(length, LengthBody) and length.feed(b"abcdef") == b"abc" and length.leftover == b"def"
    assert isinstance(framing_for(head(), "POST"), CloseDelimitedBody)
    assert framing_for(head(status=204), "POST").done
    with pytest.raises(FramingError):
        framing_for(head("Content-Length: 3, 4"), "POST")


def test_response_head_parsing():
    head = parse_response_head(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nConnection: close")
    assert head.status == 200 and head.get("x-a") == "1, 2" and not head.keep_alive
    assert parse_response_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive").keep_alive
    with pytest.raises(FramingError):
        parse_response_head(b"garbage\r\n")


NDJSON_LINES = [b'{"event":"chunk","data":{"text":"%s"}}' % UTF8_TEXT.encode(), b"", b"{}", b"\xe2\x82\xac"]


@pytest.mark.parametrize("cut", range(1, len(b"\n".join(NDJSON_LINES)) + 1))
def test_line_splitter_splits_on_bytes_so_utf8_survives_any_split(cut):
    data = b"\n".join(NDJSON_LINES) + b"\n"
    splitter = LineSplitter()
    lines = [ln for part in split_feed(splitter.feed, data, (cut,)) for ln in part]
    assert lines == NDJSON_LINES
    assert orjson.loads(lines[0])["data"]["text"] == UTF8_TEXT
    assert splitter.take_rest() == b""


def test_line_splitter_keeps_unterminated_rest_and_drops_runaway_lines():
    splitter = LineSplitter(max_line=10)
    assert splitter.feed(b"abc") == [] and splitter.feed(b"de\nxy") == [b"abcde"]
    assert splitter.take_rest() == b"xy"
    assert splitter.feed(b"0123456789ABC") == [] and splitter.dropped == 1


def _sync_flush_pieces(coder, lines: list[bytes]) -> bytes:
    return b"".join(coder.compress(ln) + coder.flush(zlib.Z_SYNC_FLUSH) for ln in lines) + coder.flush()


def encode_body(encoding: str, lines: list[bytes]) -> bytes:
    if encoding == "gzip":
        return _sync_flush_pieces(zlib.compressobj(wbits=16 + zlib.MAX_WBITS), lines)
    if encoding == "deflate":
        return _sync_flush_pieces(zlib.compressobj(wbits=zlib.MAX_WBITS), lines)
    if encoding == "deflate-raw":
        return _sync_flush_pieces(zlib.compressobj(wbits=-zlib.MAX_WBITS), lines)
    return brotli.compress(b"".join(lines))


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "deflate-raw", "br"])
def test_content_decoders_work_byte_by_byte_and_detect_truncation(encoding):
    lines = [line("chunk", {"text": f"{i} {UTF8_TEXT}"}) for i in range(50)]
    data = encode_body(encoding, lines)
    header = encoding.replace("-raw", "")
    decoder = make_content_decoder(header)
    assert b"".join(decoder.decompress(data[i : i + 1]) for i in range(len(data))) == b"".join(lines)
    decoder.finish()
    truncated = make_content_decoder(header)
    truncated.decompress(data[: len(data) // 2])
    with pytest.raises(ContentDecodingError):
        truncated.finish()


def test_content_decoder_choice():
    assert make_content_decoder("") is None and make_content_decoder("identity") is None
    gz = encode_body("gzip", [b"x\n"])
    assert make_content_decoder("gzip").decompress(gz + gz) == b"x\nx\n"  # concatenated members
    with pytest.raises(ContentDecodingError):
        make_content_decoder("zstd")
    with pytest.raises(ContentDecodingError):
        make_content_decoder("gzip").decompress(b"definitely not gzip")


# =========================================================================== part 2: loopback


def one_response(pieces: list[bytes], gap: float = 0.03, close: bool = True):
    """Handler: read one request, send ``pieces`` with ``gap`` between them."""

    def handler(conn):
        if conn.read_request() is None:
            return
        conn.send_pieces(pieces, gap)
        if not close:
            while conn._fill():
                pass

    return handler


def test_lines_and_utf8_split_across_reads_are_recorded_per_line():
    started = time.time()
    body = b"".join(
        [
            line("status_update", {"status": "thinking"}, seq=0, ts=started + 0.001),
            line("chunk", {"text": UTF8_TEXT}, seq=1, ts=started + 0.002),
            line("chunk", {"text": "😀"}, seq=2, ts=started + 0.003),
            line("heartbeat", {}, seq=3),
            line("brand_new_event", {}, seq=4),
            line("chunk", {"text": "x"}),
            line("end", {}, seq=6, ts=started + 0.004),
        ]
    )
    raw = chunk(body[:37]) + chunk(body[37:]) + LAST_CHUNK
    emoji = raw.index("😀".encode()) + 2  # inside the 4-byte character
    cuts = [1, 42, 44, emoji, emoji + 3, len(raw) - 3]  # size line, CRLF, UTF-8, terminator
    pieces = [http_head(headers={"X-Request-ID": "req-1"})]
    prev = 0
    for cut in cuts + [len(raw)]:
        pieces.append(raw[prev:cut])
        prev = cut
    with ScriptedServer(one_response(pieces, close=False)) as server:
        client = NdjsonClient(server.url)
        record = run_stream(server.url, client=client)
        client.close()
    assert record.error is None and record.status == "completed", record.error_detail
    assert kinds(record) == [STATUS, CHUNK, CHUNK, HEARTBEAT, OTHER, CHUNK, END]
    assert list(record.seqs) == [0, 1, 2, 3, 4, NO_SEQ, 6]
    assert record.malformed_lines == 0 and record.http_status == 200
    assert client.last_request_id == "req-1"
    for i, offset in [(0, 0.001), (1, 0.002), (2, 0.003), (6, 0.004)]:
        assert record.emit_ms[i] == pytest.approx((started + offset - record.started_at) * 1000, abs=1e-6)
    assert math.isnan(record.emit_ms[3])
    assert list(record.t_ms) == sorted(record.t_ms) and list(record.reads) == sorted(record.reads)
    assert record.n_reads >= 2 and record.duration_ms == record.t_ms[-1]


def test_a_finished_stream_is_freed_at_once_not_by_the_cycle_collector():
    """The reader holds the record with all its columns: nothing of it may wait for a gc pass."""
    body = line("chunk", {"text": "a"}) + line("error", {"message": "x"}) + line("end", {})
    with ScriptedServer(one_response([http_head(), chunk(body) + LAST_CHUNK], close=False)) as server:
        client = NdjsonClient(server.url)
        record, left = left_in_cycles(lambda: run_stream(server.url, client=client), _StreamRun, EventLines)
        client.close()
    assert record.error == "stream_error_event" and list(record.kinds) == [CHUNK, ERROR, END]
    assert left == []


def test_each_line_gets_the_time_and_index_of_the_read_that_completed_it():
    first = line("chunk", {"text": "a"}) + line("chunk", {"text": "b"})
    second = line("chunk", {"text": "c"})
    pieces = [
        http_head(),
        chunk(first) + chunk(second[:10]),  # read 1: two lines + the start of a third
        chunk(second[10:]),  # read 2: completes the third
        chunk(line("end")) + LAST_CHUNK,
    ]
    with ScriptedServer(one_response(pieces, gap=0.25)) as server:
        record = run_stream(server.url)
    assert kinds(record) == [CHUNK, CHUNK, CHUNK, END]
    reads, t = list(record.reads), list(record.t_ms)
    assert reads[0] == reads[1] < reads[2] < reads[3]
    assert t[0] == t[1]  # same read, same arrival
    assert t[2] - t[1] > 150 and t[3] - t[2] > 150  # credited to the read that completed them
    assert record.time_to_headers_ms < t[0] - 150  # header time is not body time


def test_time_to_first_chunk_is_body_time_not_header_time():
    pieces = [http_head(), chunk(line("chunk", {"text": "late"})) + chunk(line("end")) + LAST_CHUNK]
    with ScriptedServer(one_response(pieces, gap=0.3)) as server:
        record = run_stream(server.url)
    assert record.status == "completed"
    assert record.time_to_headers_ms < 200 and record.t_ms[0] >= 280


def test_malformed_lines_are_counted_not_fatal():
    body = (
        b"not json\n"
        + b"[1, 2]\n"
        + b'{"event": "chunk"\n'
        + b"\n"
        + b"  \r\n"
        + line("chunk", {"text": "ok"})
        + b"\xff\xfe\n"
        + line("end")
    )
    with ScriptedServer(one_response([http_head(), chunk(body) + LAST_CHUNK])) as server:
        record = run_stream(server.url)
    assert record.status == "completed"
    assert kinds(record) == [CHUNK, END]
    assert record.malformed_lines == 4  # blank lines are not malformed


@pytest.mark.parametrize("framing", ["content-length", "close-delimited"])
def test_content_length_and_close_delimited_bodies(framing):
    body = line("chunk", {"text": "a"}) + line("chunk", {"text": "b"}) + line("end")
    extra = {"Content-Length": str(len(body))} if framing == "content-length" else {}
    pieces = [http_head(headers=extra, chunked=False) + body[:20], body[20:]]
    with ScriptedServer(one_response(pieces)) as server:
        record = run_stream(server.url)
    assert record.status == "completed" and kinds(record) == [CHUNK, CHUNK, END]


def test_last_line_without_newline_still_counts_at_clean_body_end():
    body = line("chunk", {"text": "a"}) + line("end").rstrip(b"\n")
    with ScriptedServer(one_response([http_head(), chunk(body) + LAST_CHUNK])) as server:
        record = run_stream(server.url)
    assert record.status == "completed" and kinds(record) == [CHUNK, END]


def keep_alive_handler(n_requests: int, close_after_first: bool = False):
    def handler(conn):
        for i in range(n_requests):
            if conn.read_request() is None:
                return
            conn.send(
                http_head(headers={"X-Request-ID": f"r{i}"})
                + chunk(line("chunk", {"text": "a"}) + line("end"))
                + LAST_CHUNK
            )
            if close_after_first:
                return  # keep-alive promised, then closed

    return handler


def test_keep_alive_connection_is_reused_after_a_clean_end():
    with ScriptedServer(keep_alive_handler(3)) as server:
        client = NdjsonClient(server.url)
        records = [run_stream(server.url, client=client) for _ in range(3)]
        client.close()
    assert [r.status for r in records] == ["completed"] * 3
    assert server.connections == 1 and client.last_request_id == "r2"


def test_a_keep_alive_connection_the_server_closed_is_replaced():
    with ScriptedServer(keep_alive_handler(1, close_after_first=True)) as server:
        client = NdjsonClient(server.url)
        first = run_stream(server.url, client=client)
        time.sleep(0.1)
        second = run_stream(server.url, client=client)
        client.close()
    assert first.status == second.status == "completed", second.error_detail
    assert server.connections == 2


def test_truncated_chunked_body_is_a_disconnect():
    pieces = [http_head(), chunk(line("chunk", {"text": "a"}) + line("chunk", {"text": "b"})[:9])]
    with ScriptedServer(one_response(pieces)) as server:
        record = run_stream(server.url)
    assert record.error == "disconnect" and record.status == "failed"
    assert kinds(record) == [CHUNK]


def test_connection_reset_mid_stream_is_a_disconnect():
    def handler(conn):
        conn.read_request()
        conn.send(http_head() + chunk(line("chunk", {"text": "a"})))
        time.sleep(0.05)
        conn.abort()

    with ScriptedServer(handler) as server:
        record = run_stream(server.url)
    assert record.error == "disconnect" and kinds(record) == [CHUNK]


def test_end_line_without_the_chunked_terminator_is_a_disconnect():
    pieces = [http_head(), chunk(line("chunk", {"text": "a"}) + line("end"))]
    with ScriptedServer(one_response(pieces)) as server:
        record = run_stream(server.url)
    assert record.error == "disconnect" and "after end" in record.error_detail
    assert kinds(record) == [CHUNK, END] and record.duration_ms == record.t_ms[-1]


def test_clean_body_end_without_end_line_is_missing_end():
    pieces = [http_head(), chunk(line("chunk", {"text": "a"})) + LAST_CHUNK]
    with ScriptedServer(one_response(pieces, close=False)) as server:
        record = run_stream(server.url)
    assert record.error == "missing_end" and kinds(record) == [CHUNK]


def test_error_event_fails_the_stream_which_is_still_read_to_its_end():
    body = (
        line("chunk", {"text": "a"})
        + line("error", {"error_type": "rate_limit", "message": "slow down", "user_message": "x"})
        + line("end", {"reason": "error"})
    )
    with ScriptedServer(one_response([http_head(), chunk(body) + LAST_CHUNK])) as server:
        record = run_stream(server.url)
    assert record.error == "stream_error_event" and "rate_limit" in record.error_detail
    assert kinds(record) == [CHUNK, ERROR, END]


def test_non_2xx_is_http_status_and_keeps_the_connection():
    def handler(conn):
        conn.read_request()
        conn.send(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
            b'Content-Length: 26\r\n\r\n{"detail":"missing auth"}\n'
        )
        conn.read_request()
        conn.send(http_head() + chunk(line("end")) + LAST_CHUNK)

    with ScriptedServer(handler) as server:
        client = NdjsonClient(server.url)
        denied = run_stream(server.url, client=client)
        ok = run_stream(server.url, client=client)
        client.close()
    assert denied.error == "http_status" and denied.http_status == 401
    assert "missing auth" in denied.error_detail and denied.n_events == 0
    assert ok.status == "completed" and server.connections == 1


def test_connect_failure_is_classified():
    record = run_stream(f"http://127.0.0.1:{free_port()}")
    assert record.error == "connect" and record.status == "failed"
    assert not math.isnan(record.duration_ms)


def wait_for_client_close(conn):
    while conn._fill():
        pass


def test_a_stream_that_never_sends_a_chunk_times_out_at_first_chunk_timeout():
    def handler(conn):
        conn.read_request()
        conn.send(http_head() + chunk(line("status_update", {"status": "queued"})))
        wait_for_client_close(conn)

    with ScriptedServer(handler) as server:
        record = run_stream(server.url, first_chunk_timeout=0.3, stream_timeout=10)
    assert record.error == "timeout" and "first_chunk_timeout" in record.error_detail
    assert 250 <= record.duration_ms < 3000
    assert kinds(record) == [STATUS]


def test_a_stream_that_never_ends_times_out_at_stream_timeout():
    def handler(conn):
        conn.read_request()
        conn.send(http_head())
        try:
            for _ in range(200):
                conn.send(chunk(line("chunk", {"text": "."})))
                time.sleep(0.02)
        except OSError:
            pass

    with ScriptedServer(handler) as server:
        record = run_stream(server.url, first_chunk_timeout=5, stream_timeout=0.5)
    assert record.error == "timeout" and "stream_timeout" in record.error_detail
    assert 450 <= record.duration_ms < 3000 and record.n_events > 3


def test_fewer_chunks_than_promised_is_a_short_stream():
    body = line("chunk", {"text": "a"}) * 3 + line("end")
    head = http_head(headers={"X-Harness-Chunks": "5"})
    with ScriptedServer(one_response([head, chunk(body) + LAST_CHUNK], close=False)) as server:
        record = run_stream(server.url)
    assert record.error == "short_stream" and record.expected_chunks == 5


def test_end_with_a_cancel_reason_is_cancelled_not_short():
    body = line("chunk", {"text": "a"}) + line("end", {"reason": "cancelled"})
    head = http_head(headers={"X-Harness-Chunks": "5"})
    with ScriptedServer(one_response([head, chunk(body) + LAST_CHUNK], close=False)) as server:
        record = run_stream(server.url)
    assert record.status == "cancelled" and record.error is None


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_compressed_bodies_are_decoded_incrementally(encoding):
    lines = [line("chunk", {"text": f"{i} {UTF8_TEXT}"}) for i in range(20)] + [line("end")]
    data = encode_body(encoding, lines)
    third = len(data) // 3
    pieces = [
        http_head(headers={"Content-Encoding": encoding}),
        chunk(data[:third]),
        chunk(data[third : 2 * third]),
        chunk(data[2 * third :]) + LAST_CHUNK,
    ]
    with ScriptedServer(one_response(pieces, close=False)) as server:
        record = run_stream(server.url)
    assert record.status == "completed", record.error_detail
    assert record.content_encoding == encoding and kinds(record) == [CHUNK] * 20 + [END]
    assert record.malformed_lines == 0


def test_garbage_under_a_content_encoding_is_malformed():
    pieces = [http_head(headers={"Content-Encoding": "gzip"}), chunk(b"plain text\n") + LAST_CHUNK]
    with ScriptedServer(one_response(pieces)) as server:
        record = run_stream(server.url)
    assert record.error == "malformed"


def test_request_carries_browser_accept_encoding_auth_headers_and_json_body():
    with ScriptedServer(keep_alive_handler(2)) as server:
        run_stream(server.url, headers={"Authorization": "Bearer jwt"}, body={"messages": ["hi"]})
        identity = NdjsonClient(server.url, accept_encoding="identity")
        run_stream(server.url, client=identity)
        identity.close()
    first, second = server.requests
    assert first.method == "POST" and first.target == "/api/ai/chat/unified"
    assert first.headers["accept-encoding"] == "gzip, deflate, br"
    assert first.headers["authorization"] == "Bearer jwt"
    assert orjson.loads(first.body) == {"messages": ["hi"]}
    assert second.headers["accept-encoding"] == "identity"


def test_base_url_path_prefix_and_cancel():
    def handler(conn):
        req = conn.read_request()
        status = b"202 Accepted" if req.target == "/prefix/api/ai/cancel/req%2F1" else b"404 No"
        conn.send(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")

    with ScriptedServer(handler) as server:
        client = NdjsonClient(server.url + "/prefix/")
        assert client.cancel("req/1", {"X-Fingerprint-ID": "fp"}) == 202
    assert server.requests[0].headers["x-fingerprint-id"] == "fp"
    assert NdjsonClient(f"http://127.0.0.1:{free_port()}").cancel("x", {}) == 0


def test_killing_the_greenlet_marks_the_record_stopped_and_closes_the_socket():
    closed = []

    def handler(conn):
        conn.read_request()
        conn.send(http_head() + chunk(line("chunk", {"text": "a"})))
        wait_for_client_close(conn)
        closed.append(True)

    with ScriptedServer(handler) as server:
        client = NdjsonClient(server.url)
        record = new_record()
        g = gevent.spawn(client.stream, record, "/x", {}, {}, first_chunk_timeout=5, stream_timeout=10)
        deadline = time.monotonic() + 5
        while record.n_events == 0 and time.monotonic() < deadline:
            gevent.sleep(0.01)
        g.kill(block=True, timeout=5)
        deadline = time.monotonic() + 5
        while not closed and time.monotonic() < deadline:
            time.sleep(0.01)
    assert g.dead and record.error == "stopped" and kinds(record) == [CHUNK]
    assert closed and not math.isnan(record.duration_ms)


@pytest.fixture(scope="module")
def tls_server_context(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx


def test_https_with_and_without_certificate_verification(tls_server_context):
    with ScriptedServer(keep_alive_handler(2), tls=tls_server_context) as server:
        assert server.url.startswith("https://")
        insecure_client = NdjsonClient(server.url, verify_tls=False)
        insecure = run_stream(server.url, client=insecure_client)
        insecure_client.close()
        verified = run_stream(server.url)
    assert insecure.status == "completed", insecure.error_detail
    assert verified.error == "connect" and "CERTIFICATE" in verified.error_detail.upper()


# =========================================================================== part 3: fake backend

CHAT = "/api/ai/chat/unified"


def chat_body(**harness) -> dict:
    return {"messages": [{"role": "user", "content": "hi"}], "harness": harness}


def test_fake_backend_counts_match_chunk_for_chunk(backend):
    record = run_stream(backend.url, body=chat_body(chunks=800, duration_s=0.5, seed=7))
    assert record.status == "completed", record.error_detail
    assert kinds(record).count(CHUNK) == record.expected_chunks == 800
    assert kinds(record)[-1] == END and record.malformed_lines == 0
    assert list(record.seqs) == list(range(record.n_events))  # every line, in order
    transit = [t - e for t, e in zip(record.t_ms, record.emit_ms)]
    assert all(-50 < x < 2000 for x in transit)  # emit times line up


def test_fake_backend_first_chunk_delay_is_measured_as_ttfc(backend):
    record = run_stream(backend.url, body=chat_body(chunks=20, duration_s=0.2, first_chunk_delay_ms=250, events=False))
    assert record.status == "completed"
    ttfc = record.t_ms[kinds(record).index(CHUNK)]
    assert 245 <= ttfc <= 330, ttfc
    assert record.time_to_headers_ms < ttfc


@pytest.mark.parametrize(
    "fault, error, chunks", [({"error_at": 5}, "stream_error_event", 5), ({"disconnect_at": 5}, "disconnect", 5)]
)
def test_fake_backend_faults_are_classified(backend, fault, error, chunks):
    record = run_stream(backend.url, body=chat_body(chunks=50, duration_s=0.2, events=False, **fault))
    assert record.error == error and kinds(record).count(CHUNK) == chunks


def test_fake_backend_buffering_shows_as_many_lines_per_read(backend):
    record = run_stream(backend.url, body=chat_body(chunks=200, duration_s=1.0, events=False, buffer_chunks=20))
    assert record.status == "completed"
    per_read: dict[int, int] = {}
    for read in record.reads:
        per_read[read] = per_read.get(read, 0) + 1
    assert sorted(per_read.values())[len(per_read) // 2] >= 10


def test_fake_backend_careless_gzip_is_decoded_and_seen_as_batches(backend):
    record = run_stream(backend.url, body=chat_body(chunks=300, duration_s=0.6, events=False, gzip=True))
    assert record.status == "completed", record.error_detail
    assert record.content_encoding == "gzip" and kinds(record).count(CHUNK) == 300
    assert len(set(record.reads)) < 60


def test_fake_backend_invalid_harness_is_http_422(backend):
    record = run_stream(backend.url, body=chat_body(chunks=-1))
    assert record.error == "http_status" and record.http_status == 422


def test_fake_backend_cancel_ends_the_stream_as_cancelled(backend):
    client = NdjsonClient(backend.url)
    record = new_record()
    g = gevent.spawn(
        client.stream,
        record,
        CHAT,
        chat_body(chunks=2000, duration_s=20, events=False),
        {"X-Fingerprint-ID": "fp"},
        first_chunk_timeout=10,
        stream_timeout=60,
    )
    deadline = time.monotonic() + 10
    while record.n_events < 3 and time.monotonic() < deadline:
        gevent.sleep(0.02)
    status = client.cancel(client.last_request_id, {"X-Fingerprint-ID": "fp"})
    g.join(timeout=10)
    client.close()
    assert 200 <= status < 300
    assert record.status == "cancelled" and record.error is None, record.error_detail
    assert record.duration_ms < 10_000 and kinds(record)[-1] == END
