"""The bridge: the loopback HTTP server the pages take orders from and send their stamps to.

One per load process that runs browser users, on ``127.0.0.1`` (a free
port), served by gevent's WSGI server inside the load process, so a batch of
stamps is appended to its record by a greenlet of the same hub as every
other stream.  Two routes per page (``/p/<page id>/...``):

- ``GET next``: the page's long poll for its next order (``LONG_POLL_S``;
  204 when none came, and the page asks again);
- ``POST stamps``: a batch (JSON sent as ``text/plain``, a "simple" request,
  so no CORS preflight per batch).

The pages live at the backend's origin, so the bridge answers cross-origin:
``Access-Control-Allow-Origin: *``, and a preflight (with Private Network
Access' header, for a public backend origin talking to loopback) is
answered once.  Nothing here is reachable from another host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

import orjson
from gevent.pywsgi import WSGIServer

from loadtests.browser.channel import PageChannel

logger = logging.getLogger("stream_harness")

LONG_POLL_S: Final = 20.0
#: A batch larger than this is refused (a page sends ~100 ms of stamps at a time).
MAX_BATCH_BYTES: Final = 32 * 1024 * 1024
CORS_HEADERS: Final = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST"),
    ("Access-Control-Allow-Headers", "content-type"),
    ("Access-Control-Allow-Private-Network", "true"),
    ("Access-Control-Max-Age", "86400"),
    ("Cache-Control", "no-store"),
]

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _QuietLog:
    """pywsgi's error log: connection resets from closing pages are not news."""

    def write(self, text: str) -> None:
        if text.strip():
            logger.debug("browser bridge: %s", text.strip())

    def flush(self) -> None:
        return None


class Bridge:
    """The pages' end of the load process."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.pages: dict[str, PageChannel] = {}
        self._server = WSGIServer((host, 0), self._app, log=None, error_log=_QuietLog())

    @property
    def url(self) -> str:
        host, port = self._server.address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        for page in list(self.pages.values()):
            page.close("the load process is stopping")
        self._server.stop(timeout=1)

    def add(self, page: PageChannel) -> None:
        self.pages[page.page_id] = page

    def remove(self, page: PageChannel) -> None:
        self.pages.pop(page.page_id, None)

    # -- WSGI ----------------------------------------------------------------------
    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        if method == "OPTIONS":
            return _reply(start_response, "204 No Content")
        parts = environ.get("PATH_INFO", "").split("/")
        if len(parts) != 4 or parts[1] != "p":
            return _reply(start_response, "404 Not Found")
        page = self.pages.get(parts[2])
        if page is None:
            return _reply(start_response, "404 Not Found")
        action = parts[3]
        if action == "next" and method == "GET":
            order = page.next_order(LONG_POLL_S) if page.dead is None else {"op": "stop"}
            if order is None:
                return _reply(start_response, "204 No Content")
            return _reply(start_response, "200 OK", orjson.dumps(order), "application/json")
        if action == "stamps" and method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BATCH_BYTES:
                return _reply(start_response, "413 Content Too Large")
            try:
                batch = orjson.loads(environ["wsgi.input"].read(length))
            except (orjson.JSONDecodeError, OSError):
                return _reply(start_response, "400 Bad Request")
            if isinstance(batch, dict):
                page.absorb(batch)
            return _reply(start_response, "204 No Content")
        return _reply(start_response, "405 Method Not Allowed")


def _reply(start_response: StartResponse, status: str, body: bytes = b"", content_type: str = "") -> list[bytes]:
    headers = list(CORS_HEADERS)
    if content_type:
        headers.append(("Content-Type", content_type))
    headers.append(("Content-Length", str(len(body))))
    start_response(status, headers)
    return [body]
