"""One load process's browser: the helper process running Chromium, the bridge, the pages' monitor.

Created by the first browser user of a Locust environment
(``loadtests.browser.users.fleet_for``) and kept until Locust quits, so the runs of one web-UI session share one
Chromium; each user opens its own page (a fresh browser context) on start
and closes it on stop.  The pages' CPU, memory and lag count in the
environment's harness self-check (``SelfCheck.probes``).
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from pathlib import Path
from typing import Any, Final

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from loadtests.browser.bridge import Bridge
from loadtests.browser.channel import PageChannel
from loadtests.browser.chromium import CHROMIUM, LAUNCH_ARGS, BrowserUnavailable, check_available, trust_args
from loadtests.browser.monitor import PageMonitor
from loadtests.browser.page import PAGE_PATH, page_config
from loadtests.children import ChildProcess
from loadtests.errors import LoadtestError
from loadtests.protocol.http1 import parse_base_url

logger = logging.getLogger("stream_harness")

START_TIMEOUT_S: Final = 60.0
OPEN_TIMEOUT_S: Final = 90.0
STOP_TIMEOUT_S: Final = 10.0


class BrowserError(LoadtestError):
    """The browser could not start or open a page; ``str()`` is one line."""


class BrowserFleet:
    """Chromium (through the helper process) and the pages it shows for this process's browser users."""

    def __init__(self, *, insecure: bool = False, ca_file: str | None = None, chromium: Path = CHROMIUM) -> None:
        self.insecure = insecure
        self.ca_file = ca_file
        self.chromium = chromium
        self.bridge = Bridge()
        self.monitor = PageMonitor(self.host_pid)
        self._process: ChildProcess | None = None
        self._reader: gevent.Greenlet | None = None
        self._ready = AsyncResult()
        self._replies: dict[str, AsyncResult] = {}
        self._pages: dict[str, PageChannel] = {}
        self._send_lock = Semaphore()
        self._starting = Semaphore()

    def host_pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        return self.host_pid() is not None and self._ready.successful()

    def start(self) -> None:
        """Start the bridge and Chromium (once; later calls wait for the first). Raises BrowserError."""
        with self._starting:
            if self.running:
                return
            try:
                check_available(self.chromium)
            except BrowserUnavailable as exc:
                raise BrowserError(str(exc)) from None
            self.bridge.start()
            argv = [sys.executable, "-m", "loadtests.browser.host", "--chromium", str(self.chromium)]
            if self.insecure:
                argv.append("--insecure")
            argv += ["--", *LAUNCH_ARGS, *trust_args(self.ca_file)]
            self._ready = AsyncResult()
            self._process = ChildProcess(argv, stdin=True, stdout=True)
            self._reader = gevent.spawn(self._read_replies, self._process)
            try:
                self._ready.get(timeout=START_TIMEOUT_S)
            except gevent.Timeout:
                self.stop()
                raise BrowserError(f"Chromium did not start within {START_TIMEOUT_S:g} s") from None
            except BrowserError:
                self.stop()
                raise
            self.monitor.start()

    def open_page(self, base_url: str) -> PageChannel:
        """A new page (its own browser context) at the backend's origin, polling the bridge. Raises BrowserError."""
        self.start()
        origin = parse_base_url(base_url)
        page_id = uuid.uuid4().hex
        channel = PageChannel(page_id, self.monitor)
        self.bridge.add(channel)
        reply = self._replies[page_id] = AsyncResult()
        url = f"{origin.scheme}://{origin.host_header}{origin.target(PAGE_PATH)}/{page_id}"
        self._send({"op": "open", "page": page_id, "url": url, "config": page_config(page_id, self.bridge.url)})
        try:
            answer = reply.get(timeout=OPEN_TIMEOUT_S)
        except gevent.Timeout:
            answer = {"op": "failed", "detail": f"no page within {OPEN_TIMEOUT_S:g} s"}
        finally:
            self._replies.pop(page_id, None)
        if answer.get("op") != "opened":
            self.bridge.remove(channel)
            raise BrowserError(f"Chromium could not open a page: {answer.get('detail', answer.get('op'))}")
        self._pages[page_id] = channel
        self.monitor.pages = len(self._pages)
        return channel

    def close_page(self, channel: PageChannel) -> None:
        channel.close()
        self.bridge.remove(channel)
        if self._pages.pop(channel.page_id, None) is not None:
            self.monitor.pages = len(self._pages)
            if self.host_pid() is not None:
                self._send({"op": "close", "page": channel.page_id})

    def stop(self) -> None:
        """Close every page, the browser and the bridge (idempotent)."""
        self.monitor.stop()
        for channel in list(self._pages.values()):
            channel.close("the browser is stopping")
        self._pages.clear()
        process, self._process = self._process, None
        if process is not None:
            process.close(timeout=STOP_TIMEOUT_S)
        if self._reader is not None:
            self._reader.kill(block=False)
            self._reader = None
        self.bridge.stop()

    # -- the helper's pipe -----------------------------------------------------------
    def _send(self, order: dict[str, Any]) -> None:
        process = self._process
        if process is None or process.stdin is None:
            raise BrowserError("the browser is not running")
        try:
            with self._send_lock:
                process.stdin.write((json.dumps(order) + "\n").encode())
                process.stdin.flush()
        except OSError as exc:
            raise BrowserError(f"the browser process is gone ({exc})") from None

    def _read_replies(self, process: ChildProcess) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            op = message.get("op")
            if op == "ready":
                self._ready.set(True)
            elif op == "error":
                self._ready.set_exception(BrowserError(f"the browser failed: {message.get('detail')}"))
            elif op == "crashed":
                channel = self._pages.get(str(message.get("page")))
                if channel is not None:
                    channel.close("the page crashed")
            elif op in ("opened", "failed"):
                reply = self._replies.get(str(message.get("page")))
                if reply is not None:
                    reply.set(message)
        # the helper ended: nothing will answer any more
        if not self._ready.ready():
            self._ready.set_exception(BrowserError("the browser process exited before Chromium ran"))
        for reply in list(self._replies.values()):
            reply.set({"op": "failed", "detail": "the browser process exited"})
        for channel in list(self._pages.values()):
            channel.close("the browser process exited")
