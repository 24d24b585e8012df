"""What a page is told to do for one stream: the product's request, the timeouts, the names it needs.

Plain data (JSON to the page through the bridge); the request bodies are
the protocol users' own (``loadtests.users.request_payload``), so a browser
and a protocol user on the same run ask the backend for the same stream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from loadtests.clients.outcome import END_GRACE_S
from loadtests.options import RunOptions
from loadtests.protocol.http1 import Origin
from stream_harness.contract.kinds import Transport
from stream_harness.contract.protocol import (
    NDJSON_PATHS,
    PROMISED_CHUNKS_HEADER,
    REQUEST_ID_HEADER,
    SOCKETIO_NAMESPACE,
    SOCKETIO_PATH,
    SOCKETIO_TASKS,
)


def ndjson_order(
    stream_id: str, origin: Origin, options: RunOptions, body: Mapping[str, Any], headers: Mapping[str, str]
) -> dict[str, Any]:
    """POST ``body`` to the endpoint's path with the user's auth headers, read the NDJSON to its end."""
    return {
        "transport": Transport.NDJSON,
        "stream": stream_id,
        "url": f"{origin.scheme}://{origin.host_header}{origin.target(NDJSON_PATHS[options.endpoint])}",
        "headers": {"Content-Type": "application/json", **headers},
        "body": json.dumps(body),
        "first_chunk_timeout_s": options.first_chunk_timeout,
        "stream_timeout_s": options.stream_timeout,
        "end_grace_s": END_GRACE_S,
        "request_id_header": REQUEST_ID_HEADER,
        "promised_header": PROMISED_CHUNKS_HEADER,
    }


def socketio_order(stream_id: str, origin: Origin, options: RunOptions, task_data: Mapping[str, Any]) -> dict[str, Any]:
    """Connect (once per page) with ``auth.token``, emit the task with an ack, listen on the events it names."""
    service, task_name = SOCKETIO_TASKS[options.endpoint]
    return {
        "transport": Transport.SOCKETIO,
        "stream": stream_id,
        "origin": f"{origin.scheme}://{origin.host_header}",
        "namespace": SOCKETIO_NAMESPACE,
        "path": origin.target(SOCKETIO_PATH),
        "token": options.auth_token or "",
        "service": options.sio_service or service,
        "task_name": task_name,
        "task_data": dict(task_data),
        "connect_timeout_s": options.first_chunk_timeout,
        "first_chunk_timeout_s": options.first_chunk_timeout,
        "stream_timeout_s": options.stream_timeout,
    }
