"""Finished streams -> one result set per run (run.json, parquet, summary.json).

Local run: every finished record goes to the run's result writer
(``loadtests.results.sink``) within half a second; at ``test_stop`` the writer
completes the result set.  Nothing here holds events for longer than that.

Distributed run (``--master`` + ``--worker`` / ``--processes``):

- Each worker batches its finished records and ships them to the master with
  Locust's custom messages (``runner.send_message``): every
  ``BATCH_INTERVAL_S`` or as soon as ``BATCH_MAX_EVENTS`` events are waiting.
  Records travel as :mod:`loadtests.results.wire` dicts (event columns as raw
  bytes).  Each batch also carries the worker's harness self-check.
- At its ``test_stop`` (which Locust fires after the users are stopped, so
  streams cut short are in as "stopped") a worker sends what is left and a
  ``done`` message.
- The master forwards each batch to its result writer as it arrives, without
  decoding the events: the master never holds a worker's events.
- At the master's ``test_stop`` the master asks every worker that has not said
  ``done`` to stop its users and flush (headless ``-t`` and signals reach the
  master's ``test_stop`` *before* the workers are told to stop), waits for the
  ``done`` messages (up to ``--stop-timeout`` + ``FINAL_REPORT_GRACE_S``, not
  for workers Locust already marks missing), then writes ONE result set.
- A worker that goes missing (no heartbeat) or never sends ``done`` is named
  in ``run.json`` ``worker_problems``; the streams it shipped until then are
  kept.

Batches carry the master's run id (handed to the workers in the spawn
message's ``parsed_options``) so a late batch of an earlier web-UI run is
never mixed into the next one.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import gevent
from gevent.event import Event
from locust import __version__ as locust_version
from locust.env import Environment
from locust.runners import STATE_MISSING, MasterRunner, Runner, WorkerRunner

from loadtests.clock import ClockKeeper
from loadtests.hooks import stream_finished_hook
from loadtests.options import OptionError, RunOptions
from loadtests.results.heap import release_free_heap
from loadtests.results.record import StreamRecord
from loadtests.results.sink import ResultsSink, SinkError
from loadtests.results.wire import encode_records
from loadtests.selfcheck import SelfCheck, worst
from stream_harness.allocator import running_allocator
from stream_harness.contract.kinds import TRANSPORTS
from stream_harness.provenance import package_versions

logger = logging.getLogger("stream_harness")

MSG_RECORDS: Final = "stream_harness_records"  # worker -> master: a batch of records
MSG_DONE: Final = "stream_harness_done"  # worker -> master: nothing more for this run
MSG_FLUSH: Final = "stream_harness_flush"  # master -> worker: stop users, send the rest
RUN_ID_OPTION: Final = "stream_harness_run_id"  # parsed_options key the spawn message carries

BATCH_INTERVAL_S: Final = 1.0
BATCH_MAX_EVENTS: Final = 200_000
FINAL_REPORT_GRACE_S: Final = 10.0
WATCH_INTERVAL_S: Final = 1.0


# --------------------------------------------------------------------------- per-run state


@dataclass(slots=True)
class WorkerState:
    """What the master knows about one worker during a run."""

    streams: int = 0
    done: bool = False
    harness: dict[str, Any] = field(default_factory=dict)
    last_report: float | None = None  # epoch s of its last batch
    problem: str | None = None
    clock: dict[str, Any] | None = None  # its clock estimate against the backend
    allocator: str | None = None  # the C allocator it runs on (stream_harness.allocator)


@dataclass(slots=True)
class RunState:
    id: str
    started_at: float  # epoch s
    started_monotonic: float
    options: RunOptions | None  # None: invalid options, nothing ran
    sink: ResultsSink | None = None  # None: invalid options, nothing is written
    transports: set[str] = field(default_factory=set)  # transports of the streams received
    workers: dict[str, WorkerState] = field(default_factory=dict)
    max_users: int = 0
    quitting: bool = False  # a signal / quit arrived before test_stop
    finished: bool = False


def new_run_id() -> str:
    """Sortable, unique: UTC time to the second plus random hex."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- collector


class StreamCollector:
    """Gathers finished records of a run and writes (or ships) them at test stop."""

    def __init__(
        self, environment: Environment, runner: Runner, monitor: SelfCheck, clock: ClockKeeper | None = None
    ) -> None:
        self.environment = environment
        self.runner = runner
        self.monitor = monitor
        self.clock = clock
        self.allocator = str(running_allocator())
        self.run: RunState | None = None
        self.last_results_dir: Path | None = None
        self.last_summary: dict[str, Any] | None = None
        # worker side
        self._pending: list[StreamRecord] = []
        self._pending_events = 0
        self._wake = Event()
        self._flusher: gevent.Greenlet | None = None
        self._worker_run_id: str | None = None
        # master side
        self._watcher: gevent.Greenlet | None = None

        events = environment.events
        events.test_start.add_listener(self._on_test_start)
        events.test_stop.add_listener(self._on_test_stop)
        events.quitting.add_listener(self._on_quitting)
        events.spawning_complete.add_listener(self._on_spawning_complete)
        stream_finished_hook(events).add_listener(self._on_stream_finished)
        if self.is_master:
            runner.register_message(MSG_RECORDS, self._on_records_message)
            runner.register_message(MSG_DONE, self._on_done_message)
        elif self.is_worker:
            runner.register_message(MSG_FLUSH, self._on_flush_message)

    @property
    def is_master(self) -> bool:
        return isinstance(self.runner, MasterRunner)

    @property
    def is_worker(self) -> bool:
        return isinstance(self.runner, WorkerRunner)

    # ------------------------------------------------------------------ events

    def _on_test_start(self, environment: Environment, **_: Any) -> None:
        try:
            options = RunOptions.from_namespace(environment.parsed_options)
        except OptionError:
            options = None  # users.select_user_classes logs it and spawns nobody
        if self.is_worker:
            self._worker_run_id = getattr(environment.parsed_options, RUN_ID_OPTION, None)
            self._pending, self._pending_events = [], 0
            self.monitor.start()
            self._flusher = gevent.spawn(self._flush_loop)
            return
        run_id = new_run_id()
        self.run = RunState(id=run_id, started_at=time.time(), started_monotonic=time.monotonic(), options=options)
        if options is not None:
            self.run.sink = self._open_sink(self.run)
        if self.is_master:
            if environment.parsed_options is not None:
                setattr(environment.parsed_options, RUN_ID_OPTION, run_id)
            for client in self._connected_workers():
                self.run.workers.setdefault(client, WorkerState())
            self._watcher = gevent.spawn(self._watch_workers)
        else:
            self.monitor.start()

    def _on_spawning_complete(self, user_count: int, **_: Any) -> None:
        if self.run is not None:
            self.run.max_users = max(self.run.max_users, int(user_count))

    def _on_stream_finished(self, record: StreamRecord, **_: Any) -> None:
        if self.is_worker:
            self._pending.append(record)
            self._pending_events += record.n_events
            if self._pending_events >= BATCH_MAX_EVENTS:
                self._wake.set()
        elif self.run is not None and not self.run.finished and self.run.sink is not None:
            self.run.transports.add(record.transport)
            self.run.sink.add(record)

    def _on_quitting(self, environment: Environment, **_: Any) -> None:
        if self.run is not None:
            self.run.quitting = True
        if self.is_worker and self._flusher is not None:
            # Our listener runs before WorkerRunner's own (quitting fires in
            # reverse), so the rest reaches the master before the "quit" message.
            self.runner.stop()
            self._finish_worker()
        elif self.run is not None and not self.run.finished:
            # Stop (so test_stop writes the results) now: Locust decides its exit
            # code after "quitting" but before runner.quit(), so a write that
            # failed there would exit 0.  The master stops as its quit() would.
            if self.is_master:
                self.runner.stop(send_stop_to_client=False)  # type: ignore[call-arg]
            else:
                self.runner.stop()

    def _on_test_stop(self, environment: Environment, **_: Any) -> None:
        if self.is_worker:
            self._finish_worker()
            return
        run = self.run
        if run is None or run.finished:
            return
        if self.is_master:
            if self._watcher is not None:
                self._watcher.kill(block=False)
            self._collect_final_reports(run)
        run.finished = True
        harness = self.monitor.stop() if not self.is_master else None
        if run.options is None:
            logger.error("stream harness: invalid options, run %s not written", run.id)
            return
        self._write(run, harness)

    # ------------------------------------------------------------------ worker side

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait(BATCH_INTERVAL_S)
            self._wake.clear()
            try:
                self._send_pending()
            except Exception as exc:
                logger.warning("stream harness: could not ship streams to the master (%s); will retry", exc)
            release_free_heap()  # the shipped records are gone now

    def _done_message(self, harness: dict[str, Any]) -> dict[str, Any]:
        return {"run_id": self._worker_run_id, "harness": harness, "clock": self._clock(), "allocator": self.allocator}

    def _send_pending(self) -> None:
        if not self._pending:
            return
        batch, self._pending, self._pending_events = self._pending, [], 0
        try:
            self.runner.send_message(
                MSG_RECORDS,
                {
                    "run_id": self._worker_run_id,
                    "byteorder": sys.byteorder,
                    "records": encode_records(batch),
                    "harness": self.monitor.summary(),
                },
            )
        except BaseException:
            self._pending[:0] = batch
            self._pending_events += sum(r.n_events for r in batch)
            raise

    def _finish_worker(self) -> None:
        """Send everything left and ``done`` (idempotent per run)."""
        if self._flusher is None:
            return
        flusher, self._flusher = self._flusher, None
        flusher.kill(block=True)
        harness = self.monitor.stop()
        try:
            self._send_pending()
            self.runner.send_message(MSG_DONE, self._done_message(harness))
        except Exception as exc:
            logger.error("stream harness: could not send final records to the master: %s", exc)

    def _on_flush_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        if self._flusher is None:
            # Finished already; the master did not see our "done" (yet): say it again.
            self.runner.send_message(MSG_DONE, self._done_message(self.monitor.summary()))
            return
        self.runner.stop()  # fires test_stop -> _finish_worker, after the users stopped
        self._finish_worker()

    # ------------------------------------------------------------------ master side

    def _connected_workers(self) -> list[str]:
        assert isinstance(self.runner, MasterRunner)
        clients = self.runner.clients
        return [c.id for c in clients.ready + clients.spawning + clients.running]

    def _worker(self, client_id: str) -> WorkerState | None:
        run = self.run
        if run is None or run.finished:
            return None
        return run.workers.setdefault(client_id, WorkerState())

    def _on_records_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        data = msg.data or {}
        run = self.run
        if run is None or data.get("run_id") != run.id or run.finished:
            logger.warning(
                "stream harness: dropped %d streams from %s (%s)",
                len(data.get("records", ())),
                msg.node_id,
                "after the results were written"
                if run is not None and data.get("run_id") == run.id
                else "not part of the current run",
            )
            return
        records = data.get("records") or []
        run.transports.update(str(item.get("transport")) for item in records)
        if run.sink is not None:
            try:
                run.sink.forward(records, data.get("byteorder", sys.byteorder))
            except SinkError:
                pass  # logged by the sink; the run's results report it at the end
        state = self._worker(msg.node_id)
        if state is not None:
            state.streams += len(records)
            state.last_report = time.time()
            state.harness = data.get("harness") or state.harness

    def _on_done_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        data = msg.data or {}
        if self.run is None or data.get("run_id") != self.run.id:
            return
        state = self._worker(msg.node_id)
        if state is not None:
            state.done = True
            state.harness = data.get("harness") or state.harness
            state.clock = data.get("clock")
            state.allocator = data.get("allocator")

    def _missing(self, client_id: str) -> bool:
        """Gone: disconnected, or no heartbeat (Locust's "missing")."""
        assert isinstance(self.runner, MasterRunner)
        client = self.runner.clients.get(client_id)
        return client is None or client.state == STATE_MISSING

    def _gone_reason(self, client_id: str) -> str:
        assert isinstance(self.runner, MasterRunner)
        client = self.runner.clients.get(client_id)
        return "disconnected" if client is None else "went missing (no heartbeat)"

    def _watch_workers(self) -> None:
        """Note workers that go missing while the run is on (they may never come back)."""
        while True:
            gevent.sleep(WATCH_INTERVAL_S)
            run = self.run
            if run is None or run.finished:
                return
            for client_id, state in run.workers.items():
                if state.problem is None and not state.done and self._missing(client_id):
                    state.problem = f"{self._gone_reason(client_id)} at {_iso(time.time())}"
                    logger.warning(
                        "stream harness: worker %s %s; keeping its %d streams so far",
                        client_id,
                        state.problem,
                        state.streams,
                    )

    def _collect_final_reports(self, run: RunState) -> None:
        """Ask workers for their last streams and wait for their ``done``."""
        waiting = [w for w, s in run.workers.items() if not s.done]
        for client_id in waiting:
            if not self._missing(client_id):
                self.runner.send_message(MSG_FLUSH, {"run_id": run.id}, client_id=client_id)
        budget = float(self.environment.stop_timeout or 0) + FINAL_REPORT_GRACE_S
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            waiting = [w for w in waiting if not run.workers[w].done and not self._missing(w)]
            if not waiting:
                break
            gevent.sleep(0.05)
        for client_id, state in run.workers.items():
            if state.done:
                continue
            if state.problem is None:
                state.problem = (
                    f"{self._gone_reason(client_id)} before its final report"
                    if self._missing(client_id)
                    else f"sent no final report within {budget:g} s"
                )
            logger.warning(
                "stream harness: worker %s %s; keeping its %d streams", client_id, state.problem, state.streams
            )

    # ------------------------------------------------------------------ writing

    def run_info(self, run: RunState, harness: dict[str, Any] | None) -> dict[str, Any]:
        """run.json content (no secrets: options come from ``RunOptions.public``)."""
        assert run.options is not None
        duration = time.monotonic() - run.started_monotonic
        planned = getattr(self.environment.parsed_options, "run_time", None)
        if self.is_master:
            harness = worst({w: s.harness for w, s in run.workers.items() if s.harness})
        else:
            harness = worst({"local": harness or {}})
        driven = run.transports
        lost_all_workers = (
            self.is_master and bool(run.workers) and all(s.problem is not None for s in run.workers.values())
        )
        stop_reason = (
            "signal or quit"
            if run.quitting
            else "all workers lost"
            if lost_all_workers
            else "run time reached"
            if planned and duration >= float(planned) - 1.0
            else "stopped"
        )
        return {
            "id": run.id,
            "started_at": _iso(run.started_at),
            "duration_s": round(duration, 3),
            "host": self.environment.host or "",
            "users": run.max_users or int(getattr(self.runner, "target_user_count", 0) or 0),
            "workers": len(run.workers) if self.is_master else 0,
            "worker_ids": sorted(run.workers) if self.is_master else [],
            "harness": harness,
            "clock": self._clocks(run),
            "allocator": self._allocators(run),
            "transports": [t for t in TRANSPORTS if t in driven] or list(run.options.transports),
            "options": run.options.public(),
            "worker_problems": [
                {
                    "worker": w,
                    "problem": s.problem,
                    "streams_received": s.streams,
                    "last_report_at": _iso(s.last_report) if s.last_report else None,
                }
                for w, s in sorted(run.workers.items())
                if s.problem is not None
            ],
            "stopped_early": stop_reason in ("signal or quit", "all workers lost")
            or bool(planned and duration < float(planned) - 1.0),
            "stop_reason": stop_reason,
            "planned_run_time_s": float(planned) if planned else None,
            "locust_version": locust_version,
            "versions": package_versions(),
        }

    def results_dir(self, run: RunState) -> Path:
        assert run.options is not None
        return Path(run.options.results_dir) if run.options.results_dir else Path("results") / run.id

    def _clock(self) -> dict[str, Any] | None:
        return self.clock.summary if self.clock is not None else None

    def _allocators(self, run: RunState) -> dict[str, str]:
        """run.json's ``allocator``: the C allocator of each load process."""
        if self.is_master:
            return {w: s.allocator for w, s in sorted(run.workers.items()) if s.allocator}
        return {"local": self.allocator}

    def _clocks(self, run: RunState) -> dict[str, Any] | None:
        """run.json's ``clock``: each load process's estimate (None: the backend has no clock)."""
        if self.is_master:
            clocks = {w: s.clock for w, s in sorted(run.workers.items()) if s.clock}
        else:
            mine = self._clock()
            clocks = {"local": mine} if mine else {}
        return clocks or None

    def _open_sink(self, run: RunState) -> ResultsSink | None:
        assert run.options is not None
        warmup = run.options.warmup_s
        try:
            return ResultsSink(self.results_dir(run), run.id, warmup_until=run.started_at + warmup if warmup else None)
        except OSError as exc:
            logger.error("stream harness: cannot start the result writer: %s", exc)
            self.environment.process_exit_code = 2
            return None

    def _write(self, run: RunState, harness: dict[str, Any] | None) -> None:
        directory = self.results_dir(run)
        if run.sink is None:
            return
        try:
            info = self.run_info(run, harness)
            reply = run.sink.finish(info)
        except Exception as exc:  # never take Locust's own shutdown down with us
            logger.error(
                "stream harness: could not write results to %s: %s",
                directory,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            logger.debug("stream harness: write failure", exc_info=True)
            self.environment.process_exit_code = 2
            return
        self.last_summary = reply["summary"]
        self.last_results_dir = directory
        logger.info(
            "stream harness: %d streams (%d failed) written to %s",
            reply["streams"],
            reply["failed"],
            os.fspath(directory),
        )
        if info["harness"].get("saturated"):
            logger.warning(
                "stream harness: the load generator was saturated (%s); latency numbers are not trustworthy",
                "; ".join(info["harness"].get("reasons", [])),
            )
