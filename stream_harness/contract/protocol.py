"""The wire protocol's names: endpoint paths, the Socket.io namespace and tasks, headers.

``docs/PROTOCOL.md`` describes the protocol; this module is where the code
takes every name from.
"""

from __future__ import annotations

from typing import Final

from stream_harness.contract.kinds import Endpoint

#: NDJSON streaming endpoints (POST, JSON body, ``application/x-ndjson`` reply).
NDJSON_PATHS: Final[dict[Endpoint, str]] = {
    Endpoint.CHAT: "/api/ai/chat/unified",
    Endpoint.AGENT: "/api/ai/agent/execute",
    Endpoint.TOOL: "/api/tools/test/execute",
}
WARM_PATH: Final = "/api/ai/agent/warm"
CANCEL_PATH: Final = "/api/ai/cancel/{request_id}"
HEALTH_PATH: Final = "/api/health"

#: Socket.io: Engine.IO endpoint and the namespace every task runs on.
SOCKETIO_PATH: Final = "/socket.io/"
SOCKETIO_NAMESPACE: Final = "/UserSession"
#: (service event, taskName) a browser emits for each endpoint's kind of work.
SOCKETIO_TASKS: Final[dict[Endpoint, tuple[str, str]]] = {
    Endpoint.CHAT: ("chat_service", "direct_chat"),
    Endpoint.AGENT: ("chat_service", "direct_chat"),
    Endpoint.TOOL: ("tool_service", "execute_tool"),
}
#: The ack reply key naming the listener events a task streams on.
LISTENERS_KEY: Final = "response_listener_events"

#: Response headers (lower-case, as HTTP/2 and the clients' parsers hold them).
REQUEST_ID_HEADER: Final = "x-request-id"
CONVERSATION_ID_HEADER: Final = "x-conversation-id"

# The fake backend's measurement extras: optional, invisible to a client that
# ignores them, absent on a real backend.
#: Chunk lines a stream promises (NDJSON response header).
PROMISED_CHUNKS_HEADER: Final = "x-harness-chunks"
#: The seed of a stream's plan (NDJSON response header), to replay it.
SEED_HEADER: Final = "x-harness-seed"
#: Where the fake backend's measurement endpoints live (a real backend has none).
MEASUREMENT_PREFIX: Final = "/api/_harness/"
#: Emit times of one Socket.io task's messages, by listener name.
EMIT_TIMES_PATH: Final = MEASUREMENT_PREFIX + "emit-times/{listener}"
#: What the fake backend runs now (leak checks; also how a client learns it
#: talks to the fake backend).
STATS_PATH: Final = MEASUREMENT_PREFIX + "stats"
#: The fake backend's wall clock, for clock-offset estimates across hosts.
CLOCK_PATH: Final = MEASUREMENT_PREFIX + "clock"
