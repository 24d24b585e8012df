"""Deterministic stream plans: what a stream will carry and when.

A plan is everything about a stream that does not depend on the transport or
on the clock: the chunk count, each chunk's due time (seconds after the first
chunk), the chunk texts and the other events mixed in.  The same settings and
seed always give the same plan, so a failing run can be replayed exactly.

Memory matters because many streams run at once: a plan keeps only one float
per chunk (the schedule) and the few dozen non-chunk events; chunk texts are
produced lazily by ``StreamPlan.events()`` from a seeded generator.

Events are yielded as ``(due, kind, payload)``: ``due`` is the chunk index the
event goes out with (non-chunk events go just before that chunk), ``-1`` means
at request start (before the first-chunk delay) and ``chunks`` means right after
the last chunk.  A payload that is not a dict is a callable taking the seconds
since request start and returning the dict at emit time (heartbeat and
tool-event timestamps, completion timing), so it tells the truth about *when*.
"""

from __future__ import annotations

import random
import time
from array import array
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Final

from fake_backend.control import StreamSettings

CHUNK: Final = "chunk"
STATUS_UPDATE: Final = "status_update"
TOOL_EVENT: Final = "tool_event"
COMPLETION: Final = "completion"
DATA: Final = "data"
ERROR: Final = "error"
BROKER: Final = "broker"
HEARTBEAT: Final = "heartbeat"
END: Final = "end"

#: Which event mix each endpoint gets; Socket.io services map onto these.
ENDPOINTS: Final = ("chat", "agent", "tool")

HEARTBEAT_EVERY_S: Final = 5.0
#: Within-burst and between-burst gap weights of the "llm" pacing.
LLM_BURST_TOKENS: Final = (3, 30)
LLM_PAUSE_WEIGHT: Final = 15.0

Payload = dict | Callable[[float], dict]
PlannedEvent = tuple[int, str, Payload]


def _build_corpus() -> str:
    """Fixed text to cut chunks from: mostly ASCII words, with multi-byte
    UTF-8 (accents, CJK, Greek, Cyrillic, emoji), quotes, backslashes and
    newlines sprinkled in so clients' decoders and JSON escaping get exercised."""
    words = (
        "the",
        "model",
        "stream",
        "answer",
        "token",
        "latency",
        "user",
        "chat",
        "server",
        "of",
        "and",
        "to",
        "is",
        "a",
        "in",
        "that",
        "it",
        "for",
        "with",
        "as",
        "on",
        "response",
        "context",
        "prompt",
        "tool",
        "result",
        "data",
        "value",
        "fast",
    )
    special = (
        "café",
        "naïve",
        "über",
        "Straße",
        "日本語",
        "中文",
        "Ελληνικά",
        "русский",
        "🙂",
        "🚀",
        "👍🏽",
        "—",
        "…",
        "“quoted”",
        '"json"',
        "back\\slash",
        "\n",
        "\n\n",
        "\t",
    )
    rng = random.Random(20240229)
    parts: list[str] = []
    size = 0
    while size < 9000:
        word = rng.choice(special) if rng.random() < 0.08 else rng.choice(words)
        parts.append(word)
        size += len(word) + 1
    return " ".join(parts) + " "


_CORPUS_BASE: Final = _build_corpus()
# Repeat so that any slice of up to 2 * max chunk_chars starting inside the base fits.
_CORPUS: Final = _CORPUS_BASE * (1 + (2 * 10_000) // len(_CORPUS_BASE) + 1)
_CORPUS_BASE_LEN: Final = len(_CORPUS_BASE)


def schedule(settings: StreamSettings) -> array:
    """Due time of each chunk in seconds after the first chunk (first is 0, last is duration_s)."""
    n, duration = settings.chunks, settings.duration_s
    if n == 1 or duration == 0:
        return array("d", bytes(8 * n))
    if settings.pacing == "steady":
        step = duration / (n - 1)
        return array("d", (i * step for i in range(n)))
    rng = random.Random(f"pacing:{settings.seed}")
    expo = rng.expovariate
    if settings.pacing == "poisson":
        gaps = [expo(1.0) for _ in range(n - 1)]
    else:  # llm: bursts of tokens separated by longer pauses
        gaps = []
        lo, hi = LLM_BURST_TOKENS
        while len(gaps) < n - 1:
            gaps.extend(expo(1.0) for _ in range(rng.randint(lo, hi) - 1))
            gaps.append(LLM_PAUSE_WEIGHT * expo(1.0))
        del gaps[n - 1 :]
    scale = duration / sum(gaps)
    offsets = array("d", [0.0])
    t = 0.0
    for gap in gaps:
        t += gap * scale
        offsets.append(t)
    offsets[-1] = duration
    return offsets


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """One stream's content and timing, independent of transport and clock."""

    settings: StreamSettings
    endpoint: str
    offsets: array  # due time per chunk, seconds after the first chunk
    extras: tuple[PlannedEvent, ...]  # non-chunk events, sorted by due

    @property
    def chunks(self) -> int:
        return self.settings.chunks

    def events(self, skip: Collection[str] = ()) -> Iterator[PlannedEvent]:
        """All events in order; ``skip`` drops non-chunk kinds a transport has no form for."""
        s = self.settings
        bits = random.Random(f"text:{s.seed}").getrandbits
        corpus, base_len, span = _CORPUS, _CORPUS_BASE_LEN, 2 * s.chunk_chars - 1
        extras = [e for e in self.extras if e[1] not in skip] if skip else list(self.extras)
        extras.append((s.chunks + 1, END, {}))  # sentinel: never yielded
        j = 0
        next_due = extras[0][0]
        for i in range(s.chunks):
            while next_due <= i:
                yield extras[j]
                j += 1
                next_due = extras[j][0]
            # one random draw per chunk: low 24 bits pick the start, the rest the length
            r = bits(48)
            start = (r & 0xFFFFFF) % base_len
            yield i, CHUNK, {"text": corpus[start : start + 1 + (r >> 24) % span]}
        yield from extras[j:-1]


def build_plan(settings: StreamSettings, endpoint: str) -> StreamPlan:
    """The plan for one stream; same settings (seed included) -> same plan."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}")
    offsets = schedule(settings)
    extras = _extras(settings, endpoint, offsets) if settings.events else ()
    return StreamPlan(settings, endpoint, offsets, extras)


def error_payload(chunk_index: int) -> dict:
    """The `error` event the error_at fault sends."""
    return {
        "error_type": "upstream_error",
        "message": f"injected fault: error at chunk {chunk_index}",
        "user_message": "Something went wrong while generating the answer. Please try again.",
        "code": "HARNESS_ERROR_AT",
        "details": {"chunk_index": chunk_index},
    }


# -- the event mix -----------------------------------------------------------


def _stamped(fields: dict, _elapsed: float) -> dict:
    return {**fields, "timestamp": time.time()}


def _heartbeat(_elapsed: float) -> dict:
    return {"timestamp": time.time()}


def _completion(usage: dict, settings: StreamSettings, elapsed: float) -> dict:
    return {
        "status": "complete",
        "output": None,
        "total_usage": usage,
        "timing_stats": {
            "total_time_s": round(elapsed, 6),
            "first_chunk_delay_ms": settings.first_chunk_delay_ms,
            "chunks": settings.chunks,
        },
        "finish_reason": "stop",
    }


_TOOLS: Final = (
    ("web_search", "Searching the web", {"query": "latency of streaming APIs"}),
    ("read_url", "Reading the page", {"url": "https://example.com/article"}),
    ("code_interpreter", "Running code", {"code": "print(sum(range(10)))"}),
    ("db_query", "Querying the knowledge base", {"table": "documents", "limit": 5}),
)


def _tool_call(rng: random.Random, call_id: str, due: int, n: int, *, steps: int, spread: int) -> list[PlannedEvent]:
    """tool_started, progress/step updates, a result preview, tool_completed
    (or, rarely, tool_error), spaced ``spread`` chunks apart from ``due`` on."""
    name, message, args = _TOOLS[rng.randrange(len(_TOOLS))]
    base = {"call_id": call_id, "tool_name": name}
    out: list[PlannedEvent] = [
        (
            due,
            TOOL_EVENT,
            partial(
                _stamped,
                {
                    "event": "tool_started",
                    **base,
                    "message": message,
                    "show_spinner": True,
                    "data": {"arguments": args},
                },
            ),
        )
    ]
    for k in range(steps):
        kind = "tool_step" if k % 3 == 2 else "tool_progress"
        out.append(
            (
                due,
                TOOL_EVENT,
                partial(
                    _stamped,
                    {
                        "event": kind,
                        **base,
                        "message": f"{message} ({k + 1}/{steps})",
                        "show_spinner": True,
                        "data": {"progress": round((k + 1) / (steps + 1), 3), "step": k + 1},
                    },
                ),
            )
        )
        due = min(n - 1, due + spread)
    out.append(
        (
            due,
            TOOL_EVENT,
            partial(
                _stamped,
                {
                    "event": "tool_result_preview",
                    **base,
                    "show_spinner": True,
                    "data": {"preview": f"{name} returned {rng.randint(1, 20)} results"},
                },
            ),
        )
    )
    failed = rng.random() < 0.05
    out.append(
        (
            min(n - 1, due + spread),
            TOOL_EVENT,
            partial(
                _stamped,
                {
                    "event": "tool_error" if failed else "tool_completed",
                    **base,
                    "message": "Tool failed, continuing without it" if failed else "Done",
                    "show_spinner": False,
                    "data": {"error": "timeout"} if failed else {"result_count": rng.randint(1, 20)},
                },
            ),
        )
    )
    return out


def _extras(settings: StreamSettings, endpoint: str, offsets: array) -> tuple[PlannedEvent, ...]:
    rng = random.Random(f"events:{settings.seed}")
    n = settings.chunks
    hexid = lambda: f"{rng.getrandbits(48):012x}"  # noqa: E731 - deterministic ids
    conversation_id = f"conv_{hexid()}"
    extras: list[PlannedEvent] = [
        (
            -1,
            STATUS_UPDATE,
            {
                "status": "processing",
                "system_message": "Request received",
                "user_message": "Thinking…",
                "metadata": {"endpoint": endpoint, "model": "fake-llm-1"},
            },
        ),
        (-1, DATA, {"type": "conversation", "conversation_id": conversation_id, "message_id": f"msg_{hexid()}"}),
        (0, STATUS_UPDATE, {"status": "streaming", "user_message": "Writing the answer"}),
    ]
    if endpoint == "tool":
        # One long tool run whose output is the text; progress every ~25 chunks.
        steps = max(1, n // 25)
        extras += _tool_call(rng, f"call_{hexid()}", 0, n, steps=steps, spread=max(1, n // (steps + 2)))
    else:
        calls = 1 + n // 4000 + (1 if endpoint == "agent" else 0)
        for _ in range(calls):
            at = int(n * (0.05 + 0.75 * rng.random()))
            extras += _tool_call(rng, f"call_{hexid()}", at, n, steps=rng.randint(1, 4), spread=1)
    for b in range(1 + n // 3000):
        extras.append(
            (
                rng.randrange(n),
                BROKER,
                {
                    "broker_id": f"broker_{b}",
                    "value": {"score": round(rng.random(), 4), "label": f"item {b}"},
                    "source": "agent",
                    "source_id": conversation_id,
                },
            )
        )
    for d in range(n // 5000):
        at = rng.randrange(n)
        extras.append((at, DATA, {"type": "progress", "index": d, "tokens_so_far": at}))
    last = 0.0
    for i, t in enumerate(offsets):
        if t - last >= HEARTBEAT_EVERY_S:
            extras.append((i, HEARTBEAT, _heartbeat))
            last = t
    usage = {"input_tokens": 50 + rng.randrange(2000), "output_tokens": n}
    usage["total_tokens"] = usage["input_tokens"] + n
    extras.append((n, COMPLETION, partial(_completion, usage, settings)))
    extras.sort(key=lambda e: e[0])  # stable: same-due events keep their order
    return tuple(extras)
