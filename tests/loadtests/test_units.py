"""Unit checks of the Locust-side helpers that need no Locust process.

(Nothing here imports ``locust``: importing it monkey-patches the whole pytest
process, which other suites must not inherit.  The Locust behaviour itself is
tested in subprocesses, see test_locust_runs.py.)
"""

from __future__ import annotations

import math
import sys
from argparse import Namespace
from array import array
from pathlib import Path

import pytest

from loadtests.options import OptionError, RunOptions, check_host
from loadtests.results.record import StreamRecord
from loadtests.results.wire import decode_records, encode_records
from loadtests.selfcheck import (
    CPU_SATURATED_PERCENT,
    LAG_P99_SATURATED_MS,
    MIN_CPU_SAMPLES,
    MIN_LAG_SAMPLES,
    STALL_MS,
    summarize,
    worst,
)
from stream_harness.contract.kinds import EventKind
from stream_harness.contract.schema import CHUNK, END


def ns(**values: object) -> Namespace:
    return Namespace(**values)


# --------------------------------------------------------------------------- options


def test_defaults_drive_both_transports_one_to_one():
    options = RunOptions.from_namespace(ns())
    assert options.transports == ("ndjson", "socketio")
    assert options.weight("ndjson") == options.weight("socketio") == 1
    assert options.harness_fields("ndjson") == {}


def test_one_transport_gives_the_other_weight_zero():
    options = RunOptions.from_namespace(ns(transport="socketio", ndjson_weight="5"))
    assert options.transports == ("socketio",)
    assert options.weight("ndjson") == 0 and options.weight("socketio") == 1


def test_web_ui_strings_are_converted_like_cli_values():
    options = RunOptions.from_namespace(
        ns(
            transport="both",
            ndjson_weight="3",
            socketio_weight="0",
            chunks="50",
            stream_seconds="1.5",
            first_chunk_timeout="2",
            stream_timeout="9",
            no_emit_times="true",
            backend_options='{"first_chunk_delay_ms": 250, "buffer_ms": null}',
            socketio_backend_options='{"first_chunk_delay_ms": 10}',
        )
    )
    assert options.transports == ("ndjson",)
    assert (options.chunks, options.stream_seconds) == (50, 1.5)
    assert options.emit_times is False
    assert options.harness_fields("ndjson") == {
        "chunks": 50,
        "duration_s": 1.5,
        "first_chunk_delay_ms": 250,
        "buffer_ms": None,
    }
    assert options.harness_fields("socketio")["first_chunk_delay_ms"] == 10


@pytest.mark.parametrize(
    "values, message",
    [
        ({"transport": "foo"}, "--transport must be one of ndjson, socketio, both"),
        ({"endpoint": "chatty"}, "--endpoint must be one of chat, agent, tool"),
        ({"chunks": "many"}, "--chunks must be an integer"),
        ({"chunks": "0"}, "--chunks must be in 1..100000"),
        ({"stream_seconds": "-1"}, "--stream-seconds must be in 0..600"),
        ({"first_chunk_timeout": "nan"}, "--first-chunk-timeout must be in"),
        ({"ndjson_weight": "0", "socketio_weight": "0"}, "cannot both be 0"),
        ({"backend_options": "{buffer_ms: 1}"}, "--backend-options must be a JSON object"),
        ({"backend_options": "[1]"}, "--backend-options must be a JSON object"),
        ({"backend_options": '{"bufer_ms": 1}'}, "unknown harness key 'bufer_ms'"),
        ({"ndjson_backend_options": '{"buffer_ms": -5}'}, "--ndjson-backend-options: harness.buffer_ms"),
        ({"accept_encoding": "  "}, "--accept-encoding must not be empty"),
        ({"decompress_limit": "lots"}, "--decompress-limit must be a size from 1 byte to 1TiB"),
        ({"decompress_read_limit": "0"}, "--decompress-read-limit must be a size"),
    ],
)
def test_bad_values_give_one_line_naming_the_flag(values, message):
    with pytest.raises(OptionError) as info:
        RunOptions.from_namespace(ns(**values))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_decompression_limits_take_sizes_with_binary_units():
    assert (RunOptions().decoded_stream_limit, RunOptions().decoded_read_limit) == (64 << 20, 1 << 20)
    options = RunOptions.from_namespace(ns(decompress_limit="1.5GiB", decompress_read_limit="256 KiB"))
    assert (options.decoded_stream_limit, options.decoded_read_limit) == (3 << 29, 256 << 10)
    assert RunOptions.from_namespace(ns(decompress_limit="65536")).decoded_stream_limit == 65536
    assert options.public()["decompress_limit"] == 3 << 29


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "ftp://x", "http://"])
def test_host_must_be_an_http_base_url(host):
    with pytest.raises(OptionError, match="--host must be an http:// or https:// base URL"):
        check_host(host)
    check_host("https://staging.example.com/prefix")


def test_public_options_never_carry_secrets():
    options = RunOptions.from_namespace(ns(auth_token="s3cret-jwt", fingerprint_id="fp-secret"))
    text = repr(options.public())
    assert "s3cret" not in text and "fp-secret" not in text
    assert options.public()["auth"] == "token"


# --------------------------------------------------------------------------- harness monitor


def test_idle_process_is_not_saturated():
    verdict = summarize([5.0, 7.0, 6.0], [0.2] * 100)
    assert verdict["saturated"] is False and verdict["reasons"] == []
    assert verdict["cpu_percent_max"] == 7.0
    assert verdict["loop_lag_ms_p99"] == pytest.approx(0.2)


def test_sustained_cpu_or_loop_lag_marks_saturation():
    busy = summarize([CPU_SATURATED_PERCENT + 5] * 4 + [10.0] * 6, [1.0] * 100)
    assert busy["saturated"] and "CPU" in busy["reasons"][0]
    one_busy_second = summarize([99.0] + [10.0] * 9, [1.0] * 100)
    assert not one_busy_second["saturated"]
    laggy = summarize([10.0] * 5, [1.0] * 95 + [LAG_P99_SATURATED_MS * 2] * 5)
    assert laggy["saturated"] and "lag" in laggy["reasons"][0]
    assert "short of CPU" in laggy["reasons"][0]  # lag while this process hardly ran
    busy_and_laggy = summarize([95.0] * 5, [1.0] * 95 + [LAG_P99_SATURATED_MS * 2] * 5)
    assert "short of CPU" not in busy_and_laggy["reasons"][0]


def test_too_few_samples_to_tell_a_hiccup_from_a_limit_is_not_saturated():
    short = summarize([99.0] * (MIN_CPU_SAMPLES - 1), [LAG_P99_SATURATED_MS * 4] * (MIN_LAG_SAMPLES - 1))
    assert short["saturated"] is False
    assert short["loop_lag_ms_p99"] == LAG_P99_SATURATED_MS * 4  # still reported


def test_worst_process_decides_the_run_verdict():
    calm = summarize([10.0] * 5, [1.0] * MIN_LAG_SAMPLES)
    laggy = summarize([20.0] * 5, [LAG_P99_SATURATED_MS * 3] * MIN_LAG_SAMPLES)
    verdict = worst({"w1": calm, "w2": laggy})
    assert verdict["saturated"] is True
    assert verdict["loop_lag_ms_p99"] == laggy["loop_lag_ms_p99"]
    assert verdict["cpu_percent_max"] == 20.0
    assert set(verdict["processes"]) == {"w1", "w2"}
    assert all(reason.startswith("w2: ") for reason in verdict["reasons"])
    empty = worst({})
    assert empty["saturated"] is False and empty["loop_lag_ms_p99"] is None


# --------------------------------------------------------------------------- record wire format


def _record() -> StreamRecord:
    record = StreamRecord(
        "ndjson",
        "chat",
        "w1-u0-s1",
        worker="host_abc",
        user=3,
        started_at=1.5e9,
        t0=12.0,
        time_to_headers_ms=3.5,
        duration_ms=99.0,
        status="failed",
        error="disconnect",
        error_detail="peer closed",
        http_status=200,
        content_encoding="gzip",
        malformed_lines=1,
        n_reads=2,
        expected_chunks=10,
    )
    record.add_event(CHUNK, 4.0, 0, 0, 1.25)
    record.add_event(EventKind.HEARTBEAT, 5.0, 0)
    record.add_event(END, 9.5, 1, 2, 8.0)
    return record


def test_records_survive_the_wire_unchanged():
    original = _record()
    (copy,) = decode_records(encode_records([original]))
    for name in (
        "transport",
        "endpoint",
        "stream_id",
        "worker",
        "user",
        "started_at",
        "status",
        "error",
        "error_detail",
        "http_status",
        "content_encoding",
        "malformed_lines",
        "n_reads",
        "expected_chunks",
        "duration_ms",
        "time_to_headers_ms",
    ):
        assert getattr(copy, name) == getattr(original, name), name
    assert copy.kinds == original.kinds and copy.t_ms == original.t_ms
    assert copy.reads == original.reads and copy.seqs == original.seqs
    assert math.isnan(copy.emit_ms[1]) and copy.emit_ms[2] == 8.0


def test_wire_columns_are_bytes_and_foreign_byte_order_is_swapped():
    (item,) = encode_records([_record()])
    assert item["t_ms"][0] == "d" and isinstance(item["t_ms"][1], bytes)
    swapped = array("d", [4.0, 5.0, 9.5])
    swapped.byteswap()
    item["t_ms"] = ["d", swapped.tobytes()]
    other = "big" if __import__("sys").byteorder == "little" else "little"
    (copy,) = decode_records([item], byteorder=other)
    assert list(copy.t_ms) == [4.0, 5.0, 9.5]


def test_a_summary_that_cannot_be_built_still_leaves_the_raw_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import loadtests.results.writer as writer_module
    from analysis.results import load_results

    def broken(*_: object, **__: object) -> None:
        raise KeyError("saturated")

    monkeypatch.setattr(writer_module, "build_summary", broken)
    (tmp_path / "summary.json").write_text("{}")  # an earlier set's: must not pass for this one's
    writer = writer_module.Writer(tmp_path, "run-1", float("-inf"))
    writer.add(encode_records([_record()]), sys.byteorder)
    with pytest.raises(writer_module.SummaryError, match=r"KeyError: 'saturated' \(the raw data is written"):
        writer.finish({"id": "run-1", "harness": {}})
    assert not (tmp_path / "summary.json").exists()
    loaded = load_results(tmp_path)
    assert list(loaded.streams["stream_id"]) == ["w1-u0-s1"] and len(loaded.events) == 3


def test_monitor_sees_a_blocked_event_loop_as_lag():
    import time

    import gevent

    from loadtests.selfcheck import SelfCheck

    monitor = SelfCheck(lag_interval=0.01, cpu_interval=0.05, warmup=0.0)
    monitor.start()
    gevent.sleep(0.05)
    time.sleep(0.15)  # not gevent-aware: blocks the hub like a CPU-bound harness
    gevent.sleep(0.1)
    verdict = monitor.stop()
    assert not monitor.running
    assert verdict["loop_lag_ms_max"] >= 100
    assert verdict["samples"] >= 5
    assert verdict["cpu_percent_max"] is not None


def test_one_stall_marks_the_run_saturated_whatever_the_sample_count():
    stalled = summarize([10.0], [1.0, 12_000.0])  # two samples: the 12 s one could not be taken on time
    assert stalled["saturated"] is True
    assert stalled["reasons"] == [f"event loop blocked for 12.0 s (one stall >= {STALL_MS:g} ms)"]
    short = summarize([10.0], [1.0, STALL_MS])
    assert short["reasons"] == [f"event loop blocked for {STALL_MS:.0f} ms (one stall >= {STALL_MS:g} ms)"]
    assert summarize([10.0], [1.0, STALL_MS - 1])["saturated"] is False  # left to the p99 rule
    verdict = worst({"w1": summarize([10.0], [1.0]), "w2": stalled})
    assert verdict["saturated"] and verdict["reasons"][0].startswith("w2: event loop blocked for 12.0 s")


def _block(seconds: float) -> None:
    import time

    time.sleep(seconds)  # not gevent-aware: the hub (and the monitor's timer) cannot run


def test_monitor_counts_a_sleep_the_loop_has_not_woken_from_yet():
    import gevent

    from loadtests.selfcheck import SelfCheck

    monitor = SelfCheck(lag_interval=0.05, cpu_interval=1.0, warmup=0.0)
    monitor.start()
    gevent.sleep(0.12)  # a few normal samples
    _block(0.4)
    live = monitor.summary()  # taken while the sampler still waits for its wake-up
    verdict = monitor.stop()
    for summary in (live, verdict):
        assert summary["saturated"] is True, summary
        assert summary["loop_lag_ms_max"] >= 300
        assert "event loop blocked for" in summary["reasons"][0]
    assert verdict["samples"] <= 5  # the stall counted once


def test_monitor_counts_a_stall_that_outlasts_the_warm_up():
    import gevent

    from loadtests.selfcheck import SelfCheck

    monitor = SelfCheck(lag_interval=0.05, cpu_interval=1.0, warmup=0.1)
    monitor.start()
    gevent.sleep(0)  # the sampler starts its warm-up sleep
    _block(0.5)  # blocked from the warm-up well into the run
    gevent.sleep(0.1)
    verdict = monitor.stop()
    assert verdict["saturated"] is True and verdict["loop_lag_ms_max"] >= 350, verdict
