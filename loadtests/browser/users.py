"""Browser stream users: each one a real headless Chromium page reading the streams as the product does.

``--browser-users N`` makes N of the run's users these (``select_user_classes``
gives them fixed counts, spread over the transports); they share one Chromium
per load process (:func:`~loadtests.browser.fleet.fleet_for`), each in its own
browser context.  A stream is the same record as a protocol user's
(``client = browser``), announced and handed on through the same hooks; the
page fills it through the bridge, and the record's outcome follows the
protocol clients' rules (:func:`~loadtests.browser.channel.conclude`).
Socket.io emit times are fetched from the fake backend afterwards, off the
user's path, as the protocol client does.

TLS: ``--insecure`` and ``--ca-file`` apply to the pages too; Chromium also
trusts what ``SSL_CERT_FILE`` names, as the protocol clients do.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Final

from loadtests.browser.channel import PageChannel, PageStream, conclude
from loadtests.browser.fleet import BrowserError, BrowserFleet
from loadtests.browser.orders import ndjson_order, socketio_order
from loadtests.clients.connection import make_ssl_context
from loadtests.clients.socketio.emit_times import EmitTimes
from loadtests.clients.socketio.task import Task
from loadtests.harness_run import harness_run
from loadtests.protocol.http1 import Origin, parse_base_url
from loadtests.results.record import StreamRecord
from loadtests.users import StreamUser, request_payload
from stream_harness.contract.kinds import Client, ErrorKind, Transport

#: On top of the stream's own timeouts, how long a page may take to report before it counts as hung.
PAGE_GRACE_S: Final = 10.0


class BrowserStreamUser(StreamUser):
    """Common part: one page per user, one stream at a time on it."""

    abstract = True
    client_kind: ClassVar[str] = Client.BROWSER

    def on_start(self) -> None:
        super().on_start()
        assert self.host, "select_user_classes checks --host before users start"
        self.origin: Origin = parse_base_url(self.host)
        self.fleet: BrowserFleet | None = None
        self.page: PageChannel | None = None

    def on_stop(self) -> None:
        if self.fleet is not None and self.page is not None:
            self.fleet.close_page(self.page)
        self.page = None

    def tls(self) -> tuple[bool, str | None]:
        """(insecure, ca_file): the run's ``--insecure`` and ``--ca-file``, which the pages follow too."""
        return self.options.insecure, self.options.ca_file

    def _ensure_page(self, record: StreamRecord) -> PageChannel | None:
        """This user's page (opened again if it crashed); a failure is this stream's ``connect`` failure."""
        if self.page is not None and self.page.dead is None:
            return self.page
        started = time.perf_counter()
        record.started_at = time.time()
        try:
            insecure, ca_file = self.tls()
            self.fleet = fleet_for(self.environment, insecure=insecure, ca_file=ca_file)
            if self.page is not None:
                self.fleet.close_page(self.page)
            self.page = None
            self.page = self.fleet.open_page(self.host or "")
        except BrowserError as exc:
            record.fail(ErrorKind.CONNECT, f"browser: {exc}")
            record.duration_ms = (time.perf_counter() - started) * 1000.0
            return None
        return self.page

    def run_stream(self, record: StreamRecord) -> Callable[[], None] | None:
        page = self._ensure_page(record)
        if page is None:
            return None
        options = self.options
        timeout = options.stream_timeout + options.first_chunk_timeout + PAGE_GRACE_S
        record.started_at = time.time()  # until the page's own stamp of the request arrives
        stream = page.run(record, self.order(record), self.transport, timeout)
        if stream.facts is None and page.dead is None:
            page.close("it did not report a stream")  # reopened for the next stream
        conclude(stream, gave_up_after_s=timeout)
        return self.follow_up(stream)

    def order(self, record: StreamRecord) -> dict[str, Any]:
        """What the page is told to do for ``record``."""
        raise NotImplementedError

    def follow_up(self, stream: PageStream) -> Callable[[], None] | None:
        """What is left to fill in once the page reported, off the user's path (``StreamUser.run_stream``)."""
        return None


class NdjsonBrowserUser(BrowserStreamUser):
    """A browser page on the FastAPI NDJSON path: fetch + reader + TextDecoder + line split."""

    transport = Transport.NDJSON

    def order(self, record: StreamRecord) -> dict[str, Any]:
        options = self.options
        body = request_payload(options.endpoint, options.harness_fields(Transport.NDJSON))
        return ndjson_order(record.stream_id, self.origin, options, body, self.headers)


class SocketIOBrowserUser(BrowserStreamUser):
    """A browser page on the legacy Socket.io path: the npm socket.io-client, one socket per page."""

    transport = Transport.SOCKETIO

    def order(self, record: StreamRecord) -> dict[str, Any]:
        options = self.options
        task_data = request_payload(options.endpoint, options.harness_fields(Transport.SOCKETIO))
        return socketio_order(record.stream_id, self.origin, options, task_data)

    def on_start(self) -> None:
        super().on_start()
        insecure, ca_file = self.tls()
        ssl_context = make_ssl_context(not insecure, ca_file) if self.origin.is_tls else None
        self.emit_times = EmitTimes(self.origin, self.options.first_chunk_timeout, ssl_context)

    def on_stop(self) -> None:
        super().on_stop()
        self.finish_follow_ups()

    def follow_up(self, stream: PageStream) -> Callable[[], None] | None:
        """The fake backend's emit times, by the protocol client's own code (none from a real backend)."""
        facts = stream.facts or {}
        listeners = facts.get("listeners")
        if not self.options.emit_times or not isinstance(listeners, list) or not listeners:
            return None
        task = Task(stream.record)
        task.listeners = [str(name) for name in listeners]
        task.listener_of = stream.listener_of if len(listeners) > 1 else None
        task.n_chunks = int(facts.get("n_chunks") or 0)
        task.cancelled = bool(facts.get("cancelled"))
        return lambda: self.emit_times.fill(task)


_FLEETS: weakref.WeakKeyDictionary[Any, BrowserFleet] = weakref.WeakKeyDictionary()


def fleet_for(environment: Any, *, insecure: bool = False, ca_file: str | None = None) -> BrowserFleet:
    """The browser of ``environment``'s process, created on first use and stopped when Locust quits.

    Its monitor joins the environment's harness self-check.
    """
    fleet = _FLEETS.get(environment)
    if fleet is not None and (fleet.insecure, fleet.ca_file) == (insecure, ca_file):
        return fleet
    if fleet is not None:
        fleet.stop()
    fleet = _FLEETS[environment] = BrowserFleet(insecure=insecure, ca_file=ca_file)
    run = harness_run(environment)
    if run is not None:
        run.selfcheck.probes = [p for p in run.selfcheck.probes if p.name != fleet.monitor.name]
        run.selfcheck.probes.append(fleet.monitor)
    environment.events.quitting.add_listener(lambda **_: fleet.stop())
    return fleet
