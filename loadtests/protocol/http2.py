"""HTTP/2 without sockets: the connection a browser opens, request headers, response heads.

The framing, HPACK and flow control are the ``h2`` library's (sans-IO, as
h11 is for HTTP/1.1: bytes in, events out).  This module only decides what
our client says, so that it says what a browser says:

- the settings Chromium announces (``net/spdy`` defaults: a 64 KiB HPACK
  table, no server push, a 6 MiB stream window, a 256 KiB header list) and
  its 15 MiB connection window.  Flow control is part of what is measured:
  a client with the protocol's 64 KiB default windows would stall streams a
  browser never stalls, and one with huge windows would hide stalls a browser
  sees;
- request headers in HTTP/2 form: pseudo-headers first, names lower-case,
  the HTTP/1.1 connection headers (``Host``, ``Connection``, ...) dropped or
  turned into ``:authority``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes, Settings

#: What Chromium sends in its first SETTINGS frame.
BROWSER_SETTINGS: Final[dict[SettingCodes, int]] = {
    SettingCodes.HEADER_TABLE_SIZE: 65536,
    SettingCodes.ENABLE_PUSH: 0,
    SettingCodes.INITIAL_WINDOW_SIZE: 6 * 1024 * 1024,
    SettingCodes.MAX_HEADER_LIST_SIZE: 256 * 1024,
}
#: Chromium's connection-level receive window (the protocol starts every connection at 65,535).
BROWSER_CONNECTION_WINDOW: Final = 15 * 1024 * 1024
DEFAULT_WINDOW: Final = 65535
#: HTTP/1.1 headers that have no place in an HTTP/2 request (RFC 9113 section 8.2.2).
CONNECTION_HEADERS: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "te"}
)


def new_client_connection() -> H2Connection:
    """A client connection that has queued its preface, settings and connection window.

    Send ``data_to_send()`` first thing on the new socket.  Inbound header
    validation stays on: a server that breaks the protocol is a finding.
    """
    config = H2Configuration(client_side=True, header_encoding=None)
    conn = H2Connection(config=config)
    conn.local_settings = Settings(client=True, initial_values=BROWSER_SETTINGS)
    # Settings given as initial values are in force from the start, so h2 never
    # "acknowledges" them into its HPACK decoder: tell the decoder directly that
    # the server may use the table we announce.
    conn.decoder.max_allowed_table_size = conn.local_settings.header_table_size
    conn.initiate_connection()
    conn.increment_flow_control_window(BROWSER_CONNECTION_WINDOW - DEFAULT_WINDOW)
    return conn


def request_headers(
    method: str,
    scheme: str,
    authority: str,
    target: str,
    defaults: Iterable[tuple[str, str]],
    overrides: Mapping[str, str] | None = None,
) -> list[tuple[bytes, bytes]]:
    """Pseudo-headers, then ``defaults`` with ``overrides`` replacing them by name (case-insensitive).

    Names go lower-case; connection-specific headers are dropped.  Raises
    ValueError for a header value with CR, LF or NUL in it.
    """
    given = {name.lower(): str(value) for name, value in (overrides or {}).items()}
    merged = [(name.lower(), value) for name, value in defaults if name.lower() not in given]
    merged.extend(given.items())
    out = [
        (b":method", method.encode("ascii")),
        (b":scheme", scheme.encode("ascii")),
        (b":authority", authority.encode("ascii")),
        (b":path", target.encode("ascii")),
    ]
    for name, value in merged:
        if name in CONNECTION_HEADERS or name.startswith(":"):
            continue
        if any(c in value for c in "\r\n\0") or not name or any(c in name for c in " :\r\n\0"):
            raise ValueError(f"invalid header {name!r}")
        out.append((name.encode("latin-1"), value.encode("latin-1")))
    return out


def response_status(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int, dict[str, str]]:
    """(``:status``, the other headers by lower-case name; repeated ones joined with ", ")."""
    status = 0
    out: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        if name == ":status":
            status = int(value) if value.isdigit() else 0
        elif not name.startswith(":"):
            out[name] = f"{out[name]}, {value}" if name in out else value
    return status, out
