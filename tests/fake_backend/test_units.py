"""The fake backend's building blocks, without a server: control validation,
stream plans, the emit-times store, the careless gzip layer and the CLI."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import zlib

import pytest

from fake_backend.control import BackendConfig, ControlError, check_values, profile_from_env, resolve
from fake_backend.emit_log import EmitLog
from fake_backend.gzip_careless import CarelessGzip
from fake_backend.shapes import CHUNK, build_plan, schedule
from fake_backend.sio import to_message


def test_request_beats_server_defaults_and_null_restores_builtin():
    defaults = check_values({"chunks": 50, "duration_s": 1.0, "buffer_ms": 100.0})
    s = resolve({"chunks": 7, "buffer_ms": None, "seed": 3}, defaults)
    assert (s.chunks, s.duration_s, s.buffer_ms, s.seed) == (7, 1.0, None, 3)


def test_default_chunk_count_is_drawn_from_the_seed_within_2000_10000():
    counts = {resolve({"seed": seed}, {}).chunks for seed in range(30)}
    assert all(2000 <= c <= 10000 for c in counts) and len(counts) > 20
    assert resolve({"seed": 5}, {}).chunks == resolve({"seed": 5}, {}).chunks
    # a fault position given without a count always fits the drawn count
    assert all(resolve({"seed": s, "error_at": 9500}, {}).chunks > 9500 for s in range(10))


def test_fresh_seed_per_request_when_none_given():
    assert len({resolve(None, {}).seed for _ in range(5)}) == 5


@pytest.mark.parametrize(
    "raw",
    [
        {"chunks": 0},
        {"chunks": 1.5},
        {"chunks": False},
        {"duration_s": -1},
        {"duration_s": float("nan")},
        {"first_chunk_delay_ms": 120_001},
        {"timing": 1},
        {"seed": 2**63},
        {"buffer_chunks": 0},
        {"pacing": None, "nope": 1},
    ],
)
def test_invalid_values_raise_a_one_line_harness_error(raw):
    with pytest.raises(ControlError) as info:
        resolve(raw, {})
    assert "\n" not in str(info.value)


def test_cross_field_rules():
    with pytest.raises(ControlError, match="together"):
        resolve({"stall_at": 3}, {})
    with pytest.raises(ControlError, match="disconnect_at"):
        resolve({"chunks": 5, "disconnect_at": 5}, {})
    with pytest.raises(ControlError, match="cap"):
        resolve({"chunks": 50_000, "chunk_chars": 5_000}, {})


def test_server_config_is_checked_at_startup():
    with pytest.raises(ControlError):
        BackendConfig(defaults={"chunks": 10, "error_at": 10})
    with pytest.raises(ControlError, match="FAKE_BACKEND_PROFILE"):
        profile_from_env({"FAKE_BACKEND_PROFILE": "[1]"})
    assert profile_from_env({"FAKE_BACKEND_PROFILE": '{"gzip": true}'}) == {"gzip": True}


@pytest.mark.parametrize("pacing", ["steady", "poisson", "llm"])
def test_schedules_start_at_0_end_at_duration_and_never_go_back(pacing):
    offsets = schedule(resolve({"chunks": 3000, "duration_s": 30, "pacing": pacing, "seed": 1}, {}))
    assert offsets[0] == 0 and offsets[-1] == pytest.approx(30)
    assert all(a <= b for a, b in zip(offsets, offsets[1:]))


def test_pacings_differ_in_burstiness():
    def gap_cv(pacing: str) -> float:
        o = schedule(resolve({"chunks": 5000, "duration_s": 30, "pacing": pacing, "seed": 2}, {}))
        gaps = [b - a for a, b in zip(o, o[1:])]
        return statistics.pstdev(gaps) / statistics.mean(gaps)

    assert gap_cv("steady") < 0.01
    assert 0.8 < gap_cv("poisson") < 1.2
    assert gap_cv("llm") > 1.5  # bursts of tokens, then pauses


def test_unpaced_schedule_is_all_zero():
    assert set(schedule(resolve({"chunks": 100, "duration_s": 0}, {}))) == {0.0}


def test_plan_is_deterministic_and_chunk_text_has_the_requested_mean_length():
    settings = resolve({"chunks": 4000, "chunk_chars": 12, "seed": 8}, {})
    events = list(build_plan(settings, "chat").events())
    again = list(build_plan(settings, "chat").events())
    strip = lambda evs: [(d, k, p) for d, k, p in evs if isinstance(p, dict)]  # noqa: E731
    assert strip(events) == strip(again)
    texts = [p["text"] for _, k, p in events if k == CHUNK]
    assert len(texts) == 4000 and 10 < statistics.mean(map(len, texts)) < 14
    assert [d for d, _, _ in events] == sorted(d for d, _, _ in events)


def test_socketio_message_mapping():
    assert to_message("chunk", {"text": "hé"}) == "hé"
    assert to_message("status_update", {"status": "x"}) == {"info": {"status": "x"}}
    assert to_message("broker", {"broker_id": "b", "value": 1}) == {"broker": [{"broker_id": "b", "value": 1}]}
    assert to_message("end", {"reason": "complete"}) == {"end": True}
    assert to_message("end", {"reason": "cancelled"}) == {"end": True, "reason": "cancelled"}


def test_emit_log_is_bounded_by_tasks_and_timestamps():
    log = EmitLog(max_tasks=3, max_timestamps=100)
    for i in range(5):
        rec = log.open(f"t{i}", chunks=10, seed=i)
        rec.ts.extend([float(i)] * 30)
        log.finish(rec)
    assert len(log) == 3 and log.get("t0") is None and log.get("t4").done
    big = log.open("big", chunks=10, seed=0)
    big.ts.extend([1.0] * 90)
    log.finish(big)
    assert log.stored_timestamps <= 100 and log.get("big") is not None


def test_careless_gzip_holds_headers_until_a_full_block_then_finishes_cleanly():
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> None:
        gz = CarelessGzip(send)
        await gz({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"x")]})
        for i in range(100):
            await gz({"type": "http.response.body", "body": b'{"event":"chunk","seq":%d}\n' % i, "more_body": True})
        assert sent == []  # small body: no block, no headers yet
        await gz({"type": "http.response.body", "body": b"", "more_body": False})

    asyncio.run(run())
    assert sent[0]["type"] == "http.response.start" and (b"content-encoding", b"gzip") in sent[0]["headers"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert zlib.decompress(body, 16 + zlib.MAX_WBITS).count(b"\n") == 100


def test_cli_rejects_bad_defaults_with_one_line_and_exit_2():
    result = subprocess.run(
        [sys.executable, "-m", "fake_backend", "--chunks", "0"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "chunks" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_30s_stream_mixes_in_every_event_type_with_heartbeats_every_5s():
    settings = resolve({"chunks": 6000, "duration_s": 30, "seed": 3}, {})
    plan = build_plan(settings, "agent")
    events = list(plan.events())
    kinds = {k for _, k, _ in events}
    assert kinds == {"chunk", "status_update", "tool_event", "heartbeat", "broker", "data", "completion"}
    beats = [plan.offsets[d] for d, k, _ in events if k == "heartbeat"]
    assert len(beats) == 5 and all(4.9 < b - a < 6 for a, b in zip(beats, beats[1:]))
    heartbeat = next(p for _, k, p in events if k == "heartbeat")
    assert set(heartbeat(0.0)) == {"timestamp"}  # stamped when emitted
    assert events[-1][1] == "completion" and events[-1][2](1.5)["timing_stats"]["total_time_s"] == 1.5


def test_the_load_knee_adds_its_delay_per_running_stream_beyond_the_knee():
    settings = resolve({"chunks": 10, "knee_streams": 8, "knee_delay_ms": 100.0}, {})
    assert [settings.load_delay_ms(n) for n in (1, 8, 9, 12)] == [0.0, 0.0, 100.0, 400.0]
    assert resolve({"chunks": 10}, {}).load_delay_ms(1000) == 0.0
    with pytest.raises(ControlError, match="knee_streams and harness.knee_delay_ms must be given together"):
        resolve({"chunks": 10, "knee_streams": 8}, {})
