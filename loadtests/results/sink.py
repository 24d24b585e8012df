"""Finished streams -> the result-set writer process, in small batches, from a gevent process.

The load process (or a distributed master) keeps a stream's events in memory
only while the stream runs: when it ends its record waits here at most
``FLUSH_INTERVAL_S`` (or until ``FLUSH_EVENTS`` events wait) and then goes, as
raw bytes, down a pipe to the writer process (``loadtests.results.writer``),
which folds and writes it.  A master forwards the batches its workers send
without decoding them.  :meth:`ResultsSink.finish` asks the writer to complete
the result set and returns its summary.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Final

import gevent
import msgpack
from gevent.event import Event
from gevent.lock import Semaphore

from loadtests.children import ChildProcess
from loadtests.errors import LoadtestError
from loadtests.results.heap import release_free_heap
from loadtests.results.record import StreamRecord
from loadtests.results.wire import encode_records
from loadtests.results.writer import HEADER

logger = logging.getLogger("stream_harness")

FLUSH_INTERVAL_S: Final = 0.5
FLUSH_EVENTS: Final = 100_000
#: How long the writer may take to complete the set once the run has stopped.
FINISH_TIMEOUT_S: Final = 600.0
#: How long the writer may take to exit once it has answered (or the sink gave up on it).
REAP_TIMEOUT_S: Final = 30.0


class SinkError(LoadtestError):
    """The writer process failed; ``str()`` is one line."""


class ResultsSink:
    """One run's stream of finished records to its writer process."""

    def __init__(self, directory: Path, run_id: str, *, warmup_until: float | None = None) -> None:
        command = [sys.executable, "-m", "loadtests.results.writer", str(directory), run_id]
        if warmup_until is not None:
            command += ["--warmup-until", repr(warmup_until)]
        self.directory = directory
        self._process = ChildProcess(command, stdin=True, stdout=True)
        self._pending: list[StreamRecord] = []
        self._pending_events = 0
        self._wake = Event()
        self._closed = False
        self._stopping = False
        # A frame is written whole or not at all: a frame cut short (a greenlet
        # killed, or another frame interleaved, while the pipe was full) would
        # make the writer read the rest of the stream as garbage.
        self._write_lock = Semaphore()
        self.error: str | None = None  # why the writer cannot take more (logged once)
        self.streams = 0
        self._flusher = gevent.spawn(self._flush_loop)

    # ------------------------------------------------------------------ feeding
    def add(self, record: StreamRecord) -> None:
        """A finished stream (its record is not touched after this)."""
        if self._closed or self.error is not None:
            return
        self._pending.append(record)
        self._pending_events += record.n_events
        self.streams += 1
        if self._pending_events >= FLUSH_EVENTS:
            self._wake.set()

    def forward(self, encoded: list[dict[str, Any]], byteorder: str) -> None:
        """A batch already in the wire format (a worker's, on the master): straight to the writer."""
        if self._closed or not encoded or self.error is not None:
            return
        self.streams += len(encoded)
        self._send({"op": "records", "records": encoded, "byteorder": byteorder})

    def _flush_loop(self) -> None:
        while not self._stopping:
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            try:
                self.flush()
            except SinkError:
                return  # logged in _send; finish() reports it
            release_free_heap()  # the batch's records are gone now

    def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending, self._pending_events = self._pending, [], 0
        self._send({"op": "records", "records": encode_records(batch), "byteorder": sys.byteorder})

    def _send(self, message: dict[str, Any]) -> None:
        if self.error is not None:
            raise SinkError(self.error)
        body = msgpack.packb(message, use_bin_type=True)
        stdin = self._process.stdin
        assert stdin is not None
        try:
            with self._write_lock:
                stdin.write(HEADER.pack(len(body)) + body)
                stdin.flush()
        except OSError as exc:
            self.error = f"the result writer process is gone ({exc}); streams after this are lost"
            logger.error("stream harness: %s", self.error)
            raise SinkError(self.error) from None

    # ------------------------------------------------------------------ ending
    def finish(self, run: dict[str, Any]) -> dict[str, Any]:
        """Everything left, then the set completed and installed; returns the writer's reply."""
        self._stop_flusher()
        try:
            self.flush()
            self._send({"op": "finish", "run": run})
            reply = self._read_reply()
        finally:
            self._closed = True
            self._reap()
        if "error" in reply:
            raise SinkError(str(reply["error"]))
        return reply

    def _stop_flusher(self) -> None:
        """Let the flusher finish the batch it is writing (the writer may be slow
        to read: it imports its code first), then end it."""
        self._stopping = True
        self._wake.set()
        flusher, self._flusher = self._flusher, None
        if flusher is None or flusher is gevent.getcurrent():
            return
        flusher.join(timeout=FINISH_TIMEOUT_S)
        if not flusher.dead:
            flusher.kill(block=True)
            self.error = f"the result writer took no batch within {FINISH_TIMEOUT_S:g} s"

    def _read_reply(self) -> dict[str, Any]:
        stdout = self._process.stdout
        stdin = self._process.stdin
        assert stdout is not None and stdin is not None
        stdin.close()
        with gevent.Timeout(
            FINISH_TIMEOUT_S, SinkError(f"the result writer did not finish within {FINISH_TIMEOUT_S:g} s")
        ):
            header = stdout.read(HEADER.size)
            if len(header) < HEADER.size:
                raise SinkError(f"the result writer exited ({self._process.wait()}) without writing the results")
            (size,) = HEADER.unpack(header)
            reply = msgpack.unpackb(stdout.read(size), raw=False)
        return reply if isinstance(reply, dict) else {"error": "the result writer answered nonsense"}

    def _reap(self) -> None:
        self._process.close(timeout=REAP_TIMEOUT_S)
