"""Locust users for ``make soak``: the harness's own users, every stream with a fault drawn at random.

Loaded with ``locust -f loadtests/soak_locustfile.py`` (here, not in bench/:
Locust puts the locustfile's directory first on sys.path, and bench/analysis.py
would shadow the analysis package); importing
``loadtests.locustfile`` brings the harness's flags, listeners and result
files, so a soak run is an ordinary run whose streams misbehave in turns:
clean streams, error events, cut connections, buffering, stalls, careless
gzip (NDJSON), a first chunk that comes after ``--first-chunk-timeout``, and
invalid requests (HTTP 422 / ack error).  The user classes are subclasses (the
base classes are not put in this module's namespace, so Locust runs only
these), and keep the base classes' weights from ``--transport``.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any, Final

import loadtests.locustfile  # noqa: F401  (flags, event listeners, result files)
from loadtests import users
from loadtests.results.record import StreamRecord

#: (weight, harness fields); "K" is replaced by a chunk index of the stream.
FAULT_MIX: Final[tuple[tuple[float, dict[str, Any]], ...]] = (
    (6.0, {}),  # clean
    (1.0, {"error_at": "K"}),  # error event, then end
    (1.0, {"disconnect_at": "K"}),  # connection cut mid-stream
    (1.0, {"buffer_ms": 100.0}),  # a buffering layer
    (1.0, {"stall_ms": 400.0, "stall_at": "K"}),  # one long gap
    (1.0, {"gzip": True}),  # careless gzip (ignored by Socket.io)
    (0.5, {"first_chunk_delay_ms": 6000.0}),  # later than the soak's first-chunk timeout
    (0.5, {"chunks": 0}),  # invalid: HTTP 422 / ack error
)
CHUNKS: Final = (150, 450)
SECONDS: Final = (1.0, 2.5)


def draw_fault(rng: random.Random) -> dict[str, Any]:
    """One stream's harness field: a random shape plus a fault from FAULT_MIX."""
    chunks = rng.randint(*CHUNKS)
    fields: dict[str, Any] = {"chunks": chunks, "duration_s": round(rng.uniform(*SECONDS), 2)}
    fault = rng.choices([f for _, f in FAULT_MIX], weights=[w for w, _ in FAULT_MIX])[0]
    fields.update({k: rng.randrange(chunks) if v == "K" else v for k, v in fault.items()})
    return fields


class _Faulty:
    """Mixin: a fresh fault per stream, drawn from the user's own seeded generator."""

    transport: str

    def on_start(self) -> None:
        super().on_start()  # type: ignore[misc]
        self.base_options = self.options  # type: ignore[attr-defined]
        self.rng = random.Random(self.user_number)  # type: ignore[attr-defined]

    def run_stream(self, record: StreamRecord) -> None:
        key = "ndjson_backend_options" if self.transport == "ndjson" else "socketio_backend_options"
        self.options = replace(self.base_options, **{key: draw_fault(self.rng)})
        super().run_stream(record)  # type: ignore[misc]


class SoakNdjsonUser(_Faulty, users.NdjsonStreamUser):
    pass


class SoakSocketIOUser(_Faulty, users.SocketIOStreamUser):
    pass
