"""The two load users: one protocol per class, like Locust's own users.

- :class:`NdjsonStreamUser`: POSTs to the chosen FastAPI endpoint and reads the
  NDJSON body with :class:`~loadtests.clients.ndjson.NdjsonClient`.
- :class:`SocketIOStreamUser`: one Socket.io session per simulated browser
  (connected on start, reconnected when it drops, closed on stop) running
  tasks with :class:`~loadtests.clients.socketio.SocketIOSession`.

Each task is one stream: a fresh :class:`StreamRecord` that the client fills,
announced with ``stream_started`` and handed on with ``stream_finished``
(:mod:`loadtests.hooks`); the users never know who consumes it.

``--transport`` picks the classes through Locust's class weights:
:func:`select_user_classes` (a ``test_start`` listener, so every web-UI run
re-reads it) gives an unselected class weight 0, which Locust's dispatcher
never spawns; ``--transport both`` uses ``--ndjson-weight`` /
``--socketio-weight`` (1:1 by default, so ``-u 2`` gives one of each).
Browser users (``loadtests.browser.users``, ``client_kind = browser``) get fixed
counts instead: ``--browser-users N`` of the users, spread over the
transports the same way.
Locust's own class pickers (class names on the command line,
``--class-picker``) keep working on top of that.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, Final

import gevent
from gevent import GreenletExit
from gevent.pool import Group
from locust import User, constant, task
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtests.clients.ndjson import NdjsonClient
from loadtests.clients.ndjson_h2 import H2NdjsonClient
from loadtests.clients.socketio import SessionError, SocketIOSession
from loadtests.hooks import stream_ending_hook, stream_finished_hook, stream_started_hook
from loadtests.options import OptionError, RunOptions, check_ca_file, check_host, check_results_dir
from loadtests.redaction import redact_record
from loadtests.results.record import StreamRecord
from loadtests.stats_rows import tls_failure
from stream_harness.contract.kinds import Client, ErrorKind, StreamStatus
from stream_harness.contract.protocol import NDJSON_PATHS, SOCKETIO_TASKS

logger = logging.getLogger("stream_harness")

#: Pause between two streams of one user: small, so a user is streaming
#: nearly all the time and the load is set by -u.
WAIT_BETWEEN_STREAMS_S: Final = 0.05
#: Back-off after a failed connect (doubles up to the max, reset by any connect).
RECONNECT_BACKOFF_S: Final = (0.5, 8.0)
#: How long a stopping user waits for its streams' follow-ups (emit-time
#: look-ups) before handing those records on without them.
FOLLOW_UP_GRACE_S: Final = 2.0

PROMPT: Final = "Explain, step by step, how streaming responses reach a browser."


def request_payload(endpoint: str, harness: dict[str, Any]) -> dict[str, Any]:
    """The request body (NDJSON) / taskData (Socket.io) of one stream of ``endpoint``."""
    if endpoint == "chat":
        payload: dict[str, Any] = {"messages": [{"role": "user", "content": PROMPT}]}
    elif endpoint == "agent":
        payload = {"prompt_id": "harness-load-test", "variables": {"question": PROMPT}}
    else:
        payload = {"tool_name": "web_search", "arguments": {"query": PROMPT}}
    if harness:
        payload["harness"] = harness
    return payload


_TLS_WARNED: set[str] = set()


def warn_tls_failure(record: StreamRecord, host: str | None) -> None:
    """Say on the console, once per cause and process, that connecting failed in TLS, and what helps."""
    tls = tls_failure(record)
    if tls is None or tls in _TLS_WARNED:
        return
    _TLS_WARNED.add(tls)
    logger.error(
        "stream harness: could not connect to %s: %s (--ca-file PATH trusts a private CA or a self-signed "
        "certificate; --insecure skips verification)",
        host,
        tls,
    )


class StreamUser(User):
    """Common part: one stream per task, a record per stream."""

    abstract = True
    transport: ClassVar[str] = ""
    client_kind: ClassVar[str] = Client.PROTOCOL  # who reads the streams: our protocol client or a browser page
    wait_time = constant(WAIT_BETWEEN_STREAMS_S)
    _user_numbers: ClassVar = itertools.count()

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.user_number = next(StreamUser._user_numbers)
        self.stream_count = 0
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            self.worker, self.worker_tag = runner.client_id, f"w{runner.worker_index}"
        else:
            self.worker, self.worker_tag = "local", "local"
        self.fingerprint = f"harness-{uuid.uuid4().hex[:16]}"
        self.options = RunOptions()
        self.headers: dict[str, str] = {}
        self.secrets: tuple[str, ...] = ()  # scrubbed from every record (loadtests.redaction)
        self._backoff = RECONNECT_BACKOFF_S[0]
        self._follow_ups = Group()  # records finishing off the critical path

    def on_start(self) -> None:
        self.options = RunOptions.from_namespace(self.environment.parsed_options)
        self.headers = self.options.auth_headers(self.fingerprint)
        self.secrets = tuple(s for s in (self.options.auth_token, self.options.fingerprint_id) if s)

    def new_record(self) -> StreamRecord:
        self.stream_count += 1
        return StreamRecord(
            transport=self.transport,
            endpoint=self.options.endpoint,
            stream_id=f"{self.worker_tag}-u{self.user_number}-s{self.stream_count}",
            worker=self.worker,
            user=self.user_number,
            client=self.client_kind,
        )

    @task
    def one_stream(self) -> None:
        record = self.new_record()
        stream_started_hook(self.environment.events).fire(record=record)
        try:
            follow_up = self.run_stream(record)
        except BaseException as exc:
            # GreenletExit: Locust stops this user mid-stream; anything else is
            # a harness bug (Locust reports it).  Either way the stream counts.
            if record.status != StreamStatus.COMPLETED and record.error is None:
                if isinstance(exc, GreenletExit):
                    record.fail(ErrorKind.STOPPED, "the test stopped while the stream ran")
                else:
                    record.fail(ErrorKind.DISCONNECT, f"client error: {exc!r}"[:200])
            self.hand_on(record)
            raise
        if follow_up is None:
            self.hand_on(record)
        else:  # the user goes on with its next stream meanwhile
            self._follow_ups.spawn(self._complete, record, follow_up)
        self.after_stream(record)

    def run_stream(self, record: StreamRecord) -> Callable[[], None] | None:
        """Fill ``record`` with one stream (never raises for network or stream faults).

        Returns what is left to do for the record off the user's critical path
        (it is handed on when that is done), or None.
        """
        raise NotImplementedError

    def hand_on(self, record: StreamRecord) -> None:
        """The record is final: scrub it, let it be completed, announce it."""
        redact_record(record, self.secrets)
        events = self.environment.events
        stream_ending_hook(events).fire(record=record)
        stream_finished_hook(events).fire(record=record)

    def _complete(self, record: StreamRecord, follow_up: Callable[[], None]) -> None:
        try:
            follow_up()
        except Exception:
            logger.exception("stream harness: completing stream %s failed", record.stream_id)
        finally:
            self.hand_on(record)

    def finish_follow_ups(self) -> None:
        """On stop: give the pending follow-ups a moment, then hand their records on as they are."""
        self._follow_ups.join(timeout=FOLLOW_UP_GRACE_S)
        self._follow_ups.kill(block=True, timeout=FOLLOW_UP_GRACE_S)

    def after_stream(self, record: StreamRecord) -> None:
        """Back off after a failed connect, so a dead backend is not hammered
        (and the results not flooded with thousands of instant failures)."""
        if record.error == ErrorKind.CONNECT:
            warn_tls_failure(record, self.host)
            gevent.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, RECONNECT_BACKOFF_S[1])
        else:
            self._backoff = RECONNECT_BACKOFF_S[0]


class NdjsonStreamUser(StreamUser):
    """A browser on the FastAPI NDJSON path: POST, read the body to its ``end``."""

    transport = "ndjson"

    def on_start(self) -> None:
        super().on_start()
        assert self.host, "select_user_classes checks --host before users start"
        self.client: NdjsonClient | H2NdjsonClient
        if self.options.http2:
            self.client = H2NdjsonClient(
                self.host,
                accept_encoding=self.options.accept_encoding,
                streams_per_connection=self.options.h2_streams_per_connection,
                verify_tls=not self.options.insecure,
                ca_file=self.options.ca_file,
                decoded_read_limit=self.options.decoded_read_limit,
                decoded_stream_limit=self.options.decoded_stream_limit,
            )
        else:
            self.client = NdjsonClient(
                self.host,
                accept_encoding=self.options.accept_encoding,
                verify_tls=not self.options.insecure,
                ca_file=self.options.ca_file,
                decoded_read_limit=self.options.decoded_read_limit,
                decoded_stream_limit=self.options.decoded_stream_limit,
            )

    def on_stop(self) -> None:
        self.client.close()

    def run_stream(self, record: StreamRecord) -> None:
        options = self.options
        self.client.stream(
            record,
            NDJSON_PATHS[options.endpoint],
            request_payload(options.endpoint, options.harness_fields("ndjson")),
            self.headers,
            first_chunk_timeout=options.first_chunk_timeout,
            stream_timeout=options.stream_timeout,
        )


class SocketIOStreamUser(StreamUser):
    """A browser on the legacy Socket.io path: one session, many tasks."""

    transport = "socketio"

    def on_start(self) -> None:
        super().on_start()
        self.session: SocketIOSession | None = None

    def on_stop(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        self.finish_follow_ups()

    def _new_session(self) -> SocketIOSession:
        assert self.host, "select_user_classes checks --host before users start"
        return SocketIOSession(
            self.host,
            auth_token=self.options.auth_token,
            headers=self.headers,
            connect_timeout=self.options.first_chunk_timeout,
            verify_tls=not self.options.insecure,
            ca_file=self.options.ca_file,
        )

    def _ensure_connected(self, record: StreamRecord) -> bool:
        """Connect (or reconnect after a drop); a failure is this stream's failure."""
        if self.session is not None and self.session.connected:
            return True
        if self.session is not None:
            self.session.close()
        self.session = self._new_session()
        record.started_at, record.t0 = time.time(), time.perf_counter()
        try:
            self.session.connect()
        except SessionError as exc:
            record.duration_ms = (time.perf_counter() - record.t0) * 1000.0
            record.fail("connect", f"{exc.kind}: {exc.detail}")
            self.session.close()
            self.session = None
            return False
        return True

    def run_stream(self, record: StreamRecord) -> Callable[[], None] | None:
        if not self._ensure_connected(record):
            return None
        options = self.options
        service, task_name = SOCKETIO_TASKS[options.endpoint]
        session = self.session
        assert session is not None
        task = session.run_task(
            record,
            options.sio_service or service,
            task_name,
            request_payload(options.endpoint, options.harness_fields("socketio")),
            ack_timeout=options.first_chunk_timeout,
            first_chunk_timeout=options.first_chunk_timeout,
            stream_timeout=options.stream_timeout,
            emit_times=False,  # looked up below, off the critical path
        )
        return session.emit_times_lookup(task) if options.emit_times else None


def select_user_classes(environment: Environment, **_: Any) -> None:
    """``test_start`` listener: weights from --transport, browser counts from --browser-users;
    nobody spawns on bad options."""
    classes = [c for c in environment.user_classes if issubclass(c, StreamUser)] or [
        NdjsonStreamUser,
        SocketIOStreamUser,
    ]
    try:
        options = RunOptions.from_namespace(environment.parsed_options)
        if not environment.host:
            raise OptionError("no target: pass --host URL (or fill Host in the web UI)")
        check_host(environment.host)
        check_ca_file(options.ca_file)
        if not isinstance(environment.runner, WorkerRunner):
            check_results_dir(options.results_dir)
    except OptionError as exc:
        logger.error("stream harness: %s; no users will be started", exc)
        for cls in classes:
            cls.weight, cls.fixed_count = 0, 0
        return
    for cls in classes:
        if cls.client_kind == Client.BROWSER:
            cls.weight, cls.fixed_count = 0, options.browser_count(cls.transport)
        else:
            cls.weight, cls.fixed_count = options.weight(cls.transport), 0
