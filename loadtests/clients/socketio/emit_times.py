"""The fake backend's emit times of a finished Socket.io task, into its record.

The fake backend keeps each message's emit time per listener
(``EMIT_TIMES_PATH``).  A real backend has no such endpoint: only a backend
that answered like the fake backend (``backend_kind``) gets emit-time
look-ups, sent without credentials.
"""

from __future__ import annotations

from urllib.parse import quote

import numpy as np
import orjson
from gevent import ssl as gssl

from loadtests.clients.backend_kind import is_fake_backend
from loadtests.clients.connection import simple_request
from loadtests.clients.socketio.task import Task
from loadtests.protocol.errors import ProtocolError
from loadtests.protocol.http1 import Origin
from stream_harness.contract.kinds import ErrorKind
from stream_harness.contract.protocol import EMIT_TIMES_PATH


class EmitTimes:
    """Emit-time look-ups of one session's tasks."""

    def __init__(self, origin: Origin, timeout: float, ssl_context: gssl.SSLContext | None) -> None:
        self._origin = origin
        self._timeout = timeout
        self._ssl = ssl_context

    def fill(self, task: Task) -> None:
        """Fake backend only: emit_ms[i] = (ts[seq] - started_at) * 1000 per listener."""
        if not task.listeners or not is_fake_backend(self._origin, self._timeout, self._ssl):
            return
        record = task.record
        promised_total = 0
        promised_known = False
        for li, name in enumerate(task.listeners):
            try:
                response = simple_request(
                    self._origin,
                    "GET",
                    EMIT_TIMES_PATH.format(listener=quote(name, safe="")),
                    timeout=self._timeout,
                    ssl_context=self._ssl,
                )
                if response.status != 200:
                    continue
                doc = orjson.loads(response.body)
                ts = np.asarray(doc["ts"], dtype=np.float64)
            except (OSError, ProtocolError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            promised = doc.get("chunks")
            if type(promised) is int and promised >= 0:
                promised_total += promised
                promised_known = True
            if not len(record.seqs):
                continue
            seqs = np.frombuffer(record.seqs, dtype=np.int32)
            emit = np.frombuffer(record.emit_ms, dtype=np.float64)
            mask = (seqs >= 0) & (seqs < len(ts))
            if task.listener_of is not None:
                mask &= np.frombuffer(task.listener_of, dtype=np.int32) == li
            emit[mask] = (ts[seqs[mask]] - record.started_at) * 1000.0
            del seqs, emit, mask
        if promised_known:
            record.expected_chunks = promised_total
            if record.error is None and not task.cancelled and task.n_chunks < promised_total:
                record.fail(ErrorKind.SHORT_STREAM, f"{task.n_chunks} of {promised_total} chunks")
