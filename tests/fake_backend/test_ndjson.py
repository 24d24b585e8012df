"""The fake backend's NDJSON endpoints, checked line by line against docs/PROTOCOL.md."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from fake_backend.process import start_backend
from tests.support.rawstream import RawStream

CHAT, AGENT, TOOL = "/api/ai/chat/unified", "/api/ai/agent/execute", "/api/tools/test/execute"
BODIES = {
    CHAT: {"messages": [{"role": "user", "content": "Hello"}]},
    AGENT: {"prompt_id": "prompt-123", "variables": {"topic": "latency"}},
    TOOL: {"tool_name": "web_search", "arguments": {"query": "ndjson"}},
}
TOOL_EVENT_TYPES = {"tool_started", "tool_progress", "tool_step", "tool_result_preview", "tool_completed", "tool_error"}
OPTIONAL_KEYS = {
    "status_update": {"system_message", "user_message", "metadata"},
    "completion": {"output", "total_usage", "timing_stats", "finish_reason"},
    "error": {"code", "details"},
    "broker": {"source", "source_id"},
}


@pytest.fixture(scope="module")
def auth_backend():
    with start_backend("--require-auth") as b:
        yield b


def stream(
    base: str, path: str, harness: dict | None, *, body: dict | None = None, headers: dict | None = None
) -> tuple[httpx.Response, list[dict]]:
    payload = dict(body if body is not None else BODIES[path])
    if harness is not None:
        payload["harness"] = harness
    with httpx.stream("POST", base + path, json=payload, headers=headers, timeout=30) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    return response, lines


def check_line(line: dict) -> None:
    """One NDJSON line has exactly the shape docs/PROTOCOL.md gives its event type."""
    assert set(line) <= {"event", "data", "seq", "ts"} and {"event", "data"} <= set(line), line
    kind, data = line["event"], line["data"]
    assert isinstance(data, dict), line
    if kind == "chunk":
        assert set(data) == {"text"} and isinstance(data["text"], str) and data["text"]
    elif kind == "status_update":
        assert isinstance(data["status"], str) and set(data) - {"status"} <= OPTIONAL_KEYS[kind]
    elif kind == "tool_event":
        assert {"event", "call_id", "tool_name", "show_spinner", "data"} <= set(data), data
        assert set(data) <= {"event", "call_id", "tool_name", "timestamp", "message", "show_spinner", "data"}
        assert data["event"] in TOOL_EVENT_TYPES and isinstance(data["show_spinner"], bool)
        assert isinstance(data["call_id"], str) and isinstance(data["tool_name"], str)
        assert isinstance(data["data"], dict) and isinstance(data.get("timestamp", 0.0), float)
    elif kind == "completion":
        assert data["status"] in {"complete", "failed", "max_iterations_exceeded"}
        assert set(data) - {"status"} <= OPTIONAL_KEYS[kind]
    elif kind == "error":
        assert all(isinstance(data[k], str) for k in ("error_type", "message", "user_message"))
        assert set(data) - {"error_type", "message", "user_message"} <= OPTIONAL_KEYS[kind]
    elif kind == "broker":
        assert isinstance(data["broker_id"], str) and "value" in data
        assert set(data) - {"broker_id", "value"} <= OPTIONAL_KEYS[kind]
    elif kind == "heartbeat":
        assert set(data) <= {"timestamp"}
    elif kind == "end":
        assert set(data) <= {"reason"}
    else:
        assert kind == "data", f"unknown event type {kind!r}"


def check_stream(response: httpx.Response, lines: list[dict], *, chunks: int, end_reason: str = "complete") -> None:
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["x-request-id"]
    assert int(response.headers["x-harness-chunks"]) == chunks
    for line in lines:
        check_line(line)
    assert [line["seq"] for line in lines] == list(range(len(lines)))
    assert all(a["ts"] <= b["ts"] for a, b in zip(lines, lines[1:]))
    assert abs(lines[-1]["ts"] - time.time()) < 60
    assert [line["event"] for line in lines].count("end") == 1
    assert lines[-1] == {"event": "end", "data": {"reason": end_reason}, "seq": len(lines) - 1, "ts": lines[-1]["ts"]}
    assert sum(line["event"] == "chunk" for line in lines) == chunks


@pytest.mark.parametrize("path", [CHAT, AGENT, TOOL])
def test_stream_endpoints_speak_the_protocol(backend, path):
    response, lines = stream(backend.url, path, {"chunks": 300, "duration_s": 0.3, "seed": 11})
    check_stream(response, lines, chunks=300)
    kinds = [line["event"] for line in lines]
    assert kinds[0] == "status_update"
    assert kinds[-2] == "completion" and lines[-2]["data"]["status"] == "complete"
    assert {"tool_event", "broker", "data"} <= set(kinds)
    # every tool call opens with tool_started and closes with tool_completed/tool_error
    calls: dict[str, list[str]] = {}
    for line in lines:
        if line["event"] == "tool_event":
            calls.setdefault(line["data"]["call_id"], []).append(line["data"]["event"])
    for events in calls.values():
        assert events[0] == "tool_started" and events[-1] in {"tool_completed", "tool_error"}
        assert events.count("tool_started") == 1
    if path == TOOL:
        assert kinds.count("tool_event") >= 10  # "rich in tool_event lines"


def test_chunks_carry_multibyte_text_intact(backend):
    _, lines = stream(backend.url, CHAT, {"chunks": 3000, "duration_s": 0, "chunk_chars": 20, "seed": 5})
    text = "".join(line["data"]["text"] for line in lines if line["event"] == "chunk")
    assert any(ord(ch) > 0x7FF for ch in text)  # 3- and 4-byte UTF-8 made it through


def test_same_seed_gives_the_same_stream(backend):
    def content(seed: int) -> list:
        _, lines = stream(backend.url, AGENT, {"chunks": 200, "duration_s": 0, "seed": seed, "pacing": "llm"})
        out = []
        for line in lines:
            data = {k: v for k, v in line["data"].items() if k not in ("timestamp", "timing_stats")}
            out.append((line["event"], data))
        return out

    assert content(42) == content(42)
    assert content(42) != content(43)


def test_events_off_and_timing_off(backend):
    response, lines = stream(backend.url, CHAT, {"chunks": 50, "duration_s": 0, "events": False, "timing": False})
    assert [line["event"] for line in lines] == ["chunk"] * 50 + ["end"]
    assert all(set(line) == {"event", "data"} for line in lines)
    assert response.headers["x-harness-chunks"] == "50"


def test_request_ids_are_unique(backend):
    ids = {stream(backend.url, CHAT, {"chunks": 1, "duration_s": 0})[0].headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_cancel_ends_the_stream_with_reason(backend):
    with RawStream.post(backend.url, CHAT, {**BODIES[CHAT], "harness": {"chunks": 1000, "duration_s": 20}}) as s:
        request_id = s.headers["x-request-id"]
        body = b""
        reads = s.reads()
        while body.count(b'"event":"chunk"') < 3:
            body += next(reads)[1]
        cancelled = httpx.post(f"{backend.url}/api/ai/cancel/{request_id}")
        assert cancelled.status_code == 200 and cancelled.json()["request_id"] == request_id
        for _, piece in reads:
            body += piece
        assert s.terminated
    lines = [json.loads(line) for line in body.splitlines()]
    assert lines[-1]["event"] == "end" and lines[-1]["data"] == {"reason": "cancelled"}
    assert 3 <= sum(line["event"] == "chunk" for line in lines) < 1000
    again = httpx.post(f"{backend.url}/api/ai/cancel/{request_id}")
    assert again.status_code == 404


def test_health_and_warm(backend):
    assert httpx.get(backend.url + "/api/health").json() == {"status": "ok"}
    warm = httpx.post(backend.url + "/api/ai/agent/warm", json={"prompt_id": "prompt-123"})
    assert warm.status_code == 200 and warm.json()["status"] == "warm"


@pytest.mark.parametrize(
    "harness, fragment",
    [
        ({"chunks": -1}, "harness.chunks"),
        ({"chunks": 100_001}, "harness.chunks"),
        ({"chunks": True}, "harness.chunks"),
        ({"duration_s": 601}, "harness.duration_s"),
        ({"duration_s": "30"}, "harness.duration_s"),
        ({"pacing": "fast"}, "harness.pacing"),
        ({"chunk_chars": 0}, "harness.chunk_chars"),
        ({"events": "yes"}, "harness.events"),
        ({"buffer_ms": 0}, "harness.buffer_ms"),
        ({"stall_ms": 100}, "stall_at"),
        ({"chunks": 10, "error_at": 10}, "error_at"),
        ({"chunks": 100_000, "chunk_chars": 10_000}, "cap"),
        ({"chunkz": 5}, "unknown harness key 'chunkz'"),
        ([1, 2], "harness must be a JSON object"),
    ],
)
def test_bad_control_input_is_422_with_a_clear_message(backend, harness, fragment):
    response = httpx.post(backend.url + CHAT, json={**BODIES[CHAT], "harness": harness})
    assert response.status_code == 422
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize(
    "path, body, fragment",
    [
        (CHAT, {}, "messages"),
        (CHAT, {"messages": []}, "messages"),
        (AGENT, {"variables": {}}, "prompt_id"),
        (AGENT, {"prompt_id": "p", "variables": [1]}, "variables"),
        (TOOL, {"tool_name": 5}, "tool_name"),
    ],
)
def test_bad_request_body_is_422(backend, path, body, fragment):
    response = httpx.post(backend.url + path, json=body)
    assert response.status_code == 422 and fragment in response.json()["detail"]


def test_non_json_body_is_422_and_server_stays_up(backend):
    response = httpx.post(backend.url + CHAT, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "JSON" in response.json()["detail"]
    assert httpx.get(backend.url + "/api/health").status_code == 200


def test_auth_is_enforced_when_required(auth_backend):
    url = auth_backend.url
    harness = {"chunks": 3, "duration_s": 0}
    for path in (CHAT, AGENT, TOOL):
        assert httpx.post(url + path, json={**BODIES[path], "harness": harness}).status_code == 401
    assert httpx.post(url + "/api/ai/agent/warm", json={}).status_code == 401
    assert httpx.post(url + "/api/ai/cancel/abc").status_code == 401
    assert httpx.post(url + CHAT, json=BODIES[CHAT], headers={"Authorization": "Basic dXNlcjpwdw=="}).status_code == 401
    for headers in ({"Authorization": "Bearer jwt.token.here"}, {"X-Fingerprint-ID": "guest-1"}):
        response, lines = stream(url, CHAT, harness, headers=headers)
        check_stream(response, lines, chunks=3)
    assert httpx.get(url + "/api/health").status_code == 200
    assert httpx.get(url + "/api/_harness/stats").status_code == 200


def test_auth_is_off_by_default(backend):
    response, lines = stream(backend.url, CHAT, {"chunks": 2, "duration_s": 0})
    check_stream(response, lines, chunks=2)


def test_server_defaults_from_flags_and_profile_env():
    profile = json.dumps({"chunks": 20, "duration_s": 0, "events": False, "chunk_chars": 7})
    with start_backend("--chunks", "50", env={"FAKE_BACKEND_PROFILE": profile}) as b:
        response, lines = stream(b.url, CHAT, None)  # flag beats profile
        assert response.headers["x-harness-chunks"] == "50"
        assert [line["event"] for line in lines] == ["chunk"] * 50 + ["end"]  # profile beats built-in
        response, _ = stream(b.url, CHAT, {"chunks": 7})  # request beats flag
        assert response.headers["x-harness-chunks"] == "7"
        response, lines = stream(b.url, CHAT, {"chunks": None, "seed": 9})  # null = built-in default
        assert 2000 <= int(response.headers["x-harness-chunks"]) <= 10000
        assert sum(line["event"] == "chunk" for line in lines) == int(response.headers["x-harness-chunks"])


def test_vanished_clients_do_not_leak_streams(backend):
    sockets = []
    for _ in range(8):
        s = RawStream.post(backend.url, CHAT, {**BODIES[CHAT], "harness": {"chunks": 5000, "duration_s": 60}})
        next(s.reads())
        sockets.append(s)
    assert httpx.get(backend.url + "/api/_harness/stats").json()["active"]["ndjson"] >= 8
    for s in sockets:
        s.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if httpx.get(backend.url + "/api/_harness/stats").json()["active"]["ndjson"] == 0:
            break
        time.sleep(0.05)
    stats = httpx.get(backend.url + "/api/_harness/stats").json()
    assert stats["active"]["ndjson"] == 0
    assert stats["outcomes"].get("client_gone", 0) >= 8
