"""The harness's own command-line flags, and the one place that validates them.

The flags are added to Locust's parser (``events.init_command_line_parser``) so
they show up in the web UI's "custom parameters" too.  The web UI writes the
form values back into ``environment.parsed_options`` as *strings* (it converts
with ``type(default)(value)``), so every value flag here is declared as a
string and converted by :meth:`RunOptions.from_namespace`: the CLI (checked
once at ``init``) and every web-UI run (checked at ``test_start``) go through
the same conversion and give the same one-line error.
"""

from __future__ import annotations

import json
import math
import os
import re
import ssl
from argparse import Namespace
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from fake_backend.control import ControlError, check_values
from loadtests.clients.connection import make_ssl_context
from loadtests.errors import LoadtestError
from loadtests.protocol.content import READ_OUTPUT_LIMIT, STREAM_OUTPUT_LIMIT, format_size
from loadtests.redaction import command_line_secret
from stream_harness.contract.kinds import TRANSPORTS, Endpoint

TRANSPORT_CHOICES: Final = (*(str(t) for t in TRANSPORTS), "both")
ENDPOINTS: Final = tuple(str(e) for e in Endpoint)

DEFAULT_ACCEPT_ENCODING: Final = "gzip, deflate, br"
#: Size units of the decompression limits (binary: 1 KiB = 1024 bytes; K, KB mean the same).
SIZE_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_SIZE: Final = re.compile(r"([0-9]+(?:\.[0-9]*)?)\s*([kmgKMG]?)(?:i?[bB])?")
#: HTTP/2 streams per connection (--h2-streams-per-connection): a browser's usual fan-out per origin.
DEFAULT_H2_STREAMS: Final = 6


class OptionError(LoadtestError, ValueError):
    """A bad flag value; ``str()`` is the one line shown to the user."""


def add_arguments(parser: Any) -> None:
    """``init_command_line_parser`` listener: register the harness flags."""
    # parser.add_argument, not an argument group: only Locust's own parser
    # understands is_secret / include_in_web_ui.
    parser.add_argument(
        "--transport",
        choices=TRANSPORT_CHOICES,
        default="both",
        help="which load user(s) to run: ndjson, socketio or both (mixed by the weights)",
    )
    parser.add_argument(
        "--ndjson-weight", default="1", help="relative share of NDJSON users with --transport both (integer >= 0)"
    )
    parser.add_argument(
        "--socketio-weight", default="1", help="relative share of Socket.io users with --transport both (integer >= 0)"
    )
    parser.add_argument(
        "--endpoint",
        choices=ENDPOINTS,
        default="chat",
        help="which streaming endpoint / task to drive: chat, agent or tool",
    )
    parser.add_argument(
        "--chunks", default="", help="chunks per stream requested from the fake backend (empty: backend default)"
    )
    parser.add_argument(
        "--stream-seconds",
        default="",
        help="first-to-last chunk time requested from the fake backend (empty: backend default)",
    )
    parser.add_argument(
        "--auth-token", default="", is_secret=True, help="JWT sent as 'Authorization: Bearer' / Socket.io auth.token"
    )
    parser.add_argument(
        "--fingerprint-id",
        default="",
        is_secret=True,
        help="guest X-Fingerprint-ID (default: one generated per simulated user)",
    )
    parser.add_argument(
        "--results-dir",
        default="",
        help="where summary.json + streams.parquet go at test stop (default results/<run-id>)",
    )
    parser.add_argument(
        "--first-chunk-timeout",
        default="30",
        help="seconds from request sent to first chunk before the stream counts as timed out",
    )
    parser.add_argument(
        "--stream-timeout", default="300", help="seconds a whole stream may take before it counts as timed out"
    )
    parser.add_argument(
        "--accept-encoding",
        default=DEFAULT_ACCEPT_ENCODING,
        help="Accept-Encoding of the NDJSON requests (a browser's by default; 'identity' for none)",
    )
    parser.add_argument(
        "--decompress-limit",
        default=format_size(STREAM_OUTPUT_LIMIT).replace(" ", ""),
        help="most bytes one NDJSON stream may decompress to before it fails as malformed (e.g. 64MiB)",
    )
    parser.add_argument(
        "--decompress-read-limit",
        default=format_size(READ_OUTPUT_LIMIT).replace(" ", ""),
        help="most bytes decompressed in one step; the rest of a read follows step by step (e.g. 1MiB)",
    )
    parser.add_argument(
        "--backend-options",
        default="",
        help='extra fake-backend "harness" fields as a JSON object, e.g. {"buffer_ms": 100}',
    )
    parser.add_argument(
        "--ndjson-backend-options", default="", help="JSON object overriding --backend-options for NDJSON streams only"
    )
    parser.add_argument(
        "--socketio-backend-options",
        default="",
        help="JSON object overriding --backend-options for Socket.io tasks only",
    )
    parser.add_argument(
        "--sio-service",
        default="",
        help="Socket.io event (service) tasks are emitted on (default: chat_service, tool_service for --endpoint tool)",
    )
    parser.add_argument(
        "--warmup",
        default="0",
        help="seconds at the start of the run whose streams are kept in the raw data but left out of every statistic",
    )
    parser.add_argument(
        "--http2",
        action="store_true",
        default=False,
        help="NDJSON users speak HTTP/2 (ALPN h2 over https://, prior knowledge over http://), "
        "several streams per connection as a browser does",
    )
    parser.add_argument(
        "--h2-streams-per-connection",
        default=str(DEFAULT_H2_STREAMS),
        help="with --http2: streams one connection carries at once before another is opened (integer >= 1)",
    )
    parser.add_argument(
        "--browser-users",
        default="0",
        help="how many of the users are real headless Chromium pages (Debian's chromium), spread over the "
        "transports; the rest are the protocol clients",
    )
    parser.add_argument(
        "--ca-file",
        default="",
        help="PEM file of the CA(s) to trust for an https:// host instead of the system's (a private CA or a "
        "self-signed certificate)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=False,
        help="do not verify the https:// host's certificate (a TLS handshake still happens)",
    )
    # Process-level (read once at start-up), so not in the web UI's per-run form.
    parser.add_argument(
        "--metrics-port",
        default="",
        include_in_web_ui=False,
        help="serve the stream metrics for Prometheus on this port (/metrics) in headless runs too; "
        "the web UI always serves them on its own /metrics",
    )
    parser.add_argument(
        "--metrics-host",
        default="",
        include_in_web_ui=False,
        help="interface of --metrics-port (default: all, like --web-host)",
    )
    parser.add_argument(
        "--no-emit-times",
        action="store_true",
        default=False,
        help="do not fetch Socket.io emit times from the fake backend (use against real backends)",
    )


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The validated harness options of one run."""

    transport: str = "both"
    ndjson_weight: int = 1
    socketio_weight: int = 1
    endpoint: Endpoint = Endpoint.CHAT
    chunks: int | None = None
    stream_seconds: float | None = None
    auth_token: str | None = None
    fingerprint_id: str | None = None
    results_dir: str | None = None
    first_chunk_timeout: float = 30.0
    stream_timeout: float = 300.0
    accept_encoding: str = DEFAULT_ACCEPT_ENCODING
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    ndjson_backend_options: Mapping[str, Any] = field(default_factory=dict)
    socketio_backend_options: Mapping[str, Any] = field(default_factory=dict)
    sio_service: str | None = None  # None: by endpoint (stream_harness.contract.protocol.SOCKETIO_TASKS)
    emit_times: bool = True
    warmup_s: float = 0.0
    ca_file: str | None = None  # None: the system's trust store
    insecure: bool = False  # skip certificate verification
    metrics_port: int | None = None  # --metrics-port: serve Prometheus metrics there
    metrics_host: str = ""  # its interface ("": all)
    otel: bool = False  # Locust's own --otel: the stream metrics go to its meter provider too
    decoded_stream_limit: int = STREAM_OUTPUT_LIMIT
    decoded_read_limit: int = READ_OUTPUT_LIMIT
    http2: bool = False
    h2_streams_per_connection: int = DEFAULT_H2_STREAMS
    browser_users: int = 0

    @classmethod
    def from_namespace(cls, ns: Namespace | None) -> RunOptions:
        """Convert and check Locust's parsed options (CLI or web-UI strings)."""
        get = (lambda name, default: getattr(ns, name, default)) if ns is not None else (lambda _n, d: d)
        transport = _choice("transport", get("transport", "both"), TRANSPORT_CHOICES)
        endpoint = _choice("endpoint", get("endpoint", "chat"), ENDPOINTS)
        ndjson_weight = _int("ndjson-weight", get("ndjson_weight", "1"), minimum=0)
        socketio_weight = _int("socketio-weight", get("socketio_weight", "1"), minimum=0)
        if transport == "both" and ndjson_weight + socketio_weight == 0:
            raise OptionError("--ndjson-weight and --socketio-weight cannot both be 0 with --transport both")
        chunks = _optional(get("chunks", ""), lambda v: _int("chunks", v, minimum=1, maximum=100_000))
        stream_seconds = _optional(
            get("stream_seconds", ""), lambda v: _float("stream-seconds", v, minimum=0.0, maximum=600.0)
        )
        first_chunk_timeout = _float("first-chunk-timeout", get("first_chunk_timeout", "30"), minimum=0.001)
        stream_timeout = _float("stream-timeout", get("stream_timeout", "300"), minimum=0.001)
        accept_encoding = str(get("accept_encoding", DEFAULT_ACCEPT_ENCODING) or "").strip()
        if not accept_encoding:
            raise OptionError("--accept-encoding must not be empty (use 'identity' to ask for no compression)")
        sio_service = str(get("sio_service", "") or "").strip() or None
        ca_file = str(get("ca_file", "") or "").strip() or None
        insecure = _bool(get("insecure", False))
        if ca_file is not None and insecure:
            raise OptionError("--ca-file and --insecure contradict each other: pick one")
        decoded_stream_limit = _size("decompress-limit", get("decompress_limit", STREAM_OUTPUT_LIMIT))
        decoded_read_limit = _size("decompress-read-limit", get("decompress_read_limit", READ_OUTPUT_LIMIT))
        return cls(
            transport=transport,
            ndjson_weight=ndjson_weight,
            socketio_weight=socketio_weight,
            endpoint=Endpoint(endpoint),
            chunks=chunks,
            stream_seconds=stream_seconds,
            auth_token=command_line_secret(ns, "auth_token", str(get("auth_token", "") or "")) or None,
            fingerprint_id=command_line_secret(ns, "fingerprint_id", str(get("fingerprint_id", "") or "")) or None,
            results_dir=str(get("results_dir", "") or "") or None,
            first_chunk_timeout=first_chunk_timeout,
            stream_timeout=stream_timeout,
            accept_encoding=accept_encoding,
            backend_options=_backend_options("backend-options", get("backend_options", "")),
            ndjson_backend_options=_backend_options("ndjson-backend-options", get("ndjson_backend_options", "")),
            socketio_backend_options=_backend_options("socketio-backend-options", get("socketio_backend_options", "")),
            sio_service=sio_service,
            emit_times=not _bool(get("no_emit_times", False)),
            warmup_s=_float("warmup", get("warmup", "0"), minimum=0.0, maximum=86400.0),
            ca_file=ca_file,
            insecure=insecure,
            metrics_port=_optional(get("metrics_port", ""), _port),
            metrics_host=str(get("metrics_host", "") or "").strip(),
            otel=_bool(get("otel", False)),
            decoded_stream_limit=decoded_stream_limit,
            decoded_read_limit=decoded_read_limit,
            http2=_bool(get("http2", False)),
            h2_streams_per_connection=_int(
                "h2-streams-per-connection", get("h2_streams_per_connection", str(DEFAULT_H2_STREAMS)), minimum=1
            ),
            browser_users=_int("browser-users", get("browser_users", "0"), minimum=0, maximum=1000),
        )

    @property
    def transports(self) -> tuple[str, ...]:
        """The transports this run drives (weights of 0 drop one)."""
        if self.transport != "both":
            return (self.transport,)
        weights = {"ndjson": self.ndjson_weight, "socketio": self.socketio_weight}
        return tuple(t for t in TRANSPORTS if weights[t] > 0)

    def weight(self, transport: str) -> int:
        """Locust class weight for the user class of ``transport`` (0 = not run)."""
        if transport not in self.transports:
            return 0
        if self.transport != "both":
            return 1
        return self.ndjson_weight if transport == "ndjson" else self.socketio_weight

    def browser_count(self, transport: str) -> int:
        """How many of the ``--browser-users`` pages run ``transport``: N spread by the transports'
        weights (largest remainder, ties to the first transport), so ``--transport both`` halves it."""
        weights = {t: self.weight(t) for t in self.transports}
        total = sum(weights.values())
        if not total or transport not in weights:
            return 0
        exact = {t: self.browser_users * w / total for t, w in weights.items()}
        counts = {t: int(v) for t, v in exact.items()}
        left = self.browser_users - sum(counts.values())
        for t in sorted(weights, key=lambda t: counts[t] - exact[t])[:left]:
            counts[t] += 1
        return counts[transport]

    def auth_headers(self, fallback_fingerprint: str) -> dict[str, str]:
        """A signed-in user's bearer token, or a guest's fingerprint (``fallback_fingerprint`` if none given)."""
        if self.auth_token:
            return {"Authorization": f"Bearer {self.auth_token}"}
        return {"X-Fingerprint-ID": self.fingerprint_id or fallback_fingerprint}

    def harness_fields(self, transport: str) -> dict[str, Any]:
        """The fake backend's ``harness`` field for one request of ``transport``.

        Precedence, lowest first: --chunks/--stream-seconds, --backend-options,
        the per-transport override.  Empty means "send no harness field".
        """
        fields: dict[str, Any] = {}
        if self.chunks is not None:
            fields["chunks"] = self.chunks
        if self.stream_seconds is not None:
            fields["duration_s"] = self.stream_seconds
        fields.update(self.backend_options)
        fields.update(self.ndjson_backend_options if transport == "ndjson" else self.socketio_backend_options)
        return fields

    def public(self) -> dict[str, Any]:
        """The options as stored in run.json: everything except the secrets."""
        return {
            "transport": self.transport,
            "ndjson_weight": self.ndjson_weight,
            "socketio_weight": self.socketio_weight,
            "endpoint": self.endpoint,
            "chunks": self.chunks,
            "stream_seconds": self.stream_seconds,
            "auth": "token" if self.auth_token else ("fingerprint" if self.fingerprint_id else "generated-fingerprint"),
            "first_chunk_timeout": self.first_chunk_timeout,
            "stream_timeout": self.stream_timeout,
            "accept_encoding": self.accept_encoding,
            "backend_options": dict(self.backend_options),
            "ndjson_backend_options": dict(self.ndjson_backend_options),
            "socketio_backend_options": dict(self.socketio_backend_options),
            "sio_service": self.sio_service,
            "emit_times": self.emit_times,
            "warmup_s": self.warmup_s,
            "ca_file": self.ca_file,
            "insecure": self.insecure,
            "metrics_port": self.metrics_port,
            "decompress_limit": self.decoded_stream_limit,
            "decompress_read_limit": self.decoded_read_limit,
            "http2": self.http2,
            "h2_streams_per_connection": self.h2_streams_per_connection,
            "browser_users": self.browser_users,
        }


def add_sweep_arguments(parser: Any) -> None:
    """The capacity search's flags (``loadtests/capacity_locustfile.py`` adds them with its shape)."""
    parser.add_argument(
        "--slo",
        default="",
        help="SLO overrides, e.g. ttfc_p99_ms=1000,gap_p99_ms=250,failure_rate=0.01 "
        "(defaults: [tool.stream_harness.slo] in pyproject.toml)",
    )
    parser.add_argument("--sweep-start", default="4", help="concurrent streams of the first step (default 4)")
    parser.add_argument("--sweep-max-streams", default="256", help="the search's ceiling (default 256)")
    parser.add_argument(
        "--sweep-tolerance",
        default="0.1",
        help="stop bisecting when held and broken levels are within this share of the held one (default 0.1)",
    )
    parser.add_argument(
        "--sweep-step-seconds", default="10", help="a step that holds measures at least this long (default 10)"
    )
    parser.add_argument(
        "--sweep-max-step-seconds",
        default="30",
        help="a step undecided after this long is decided on its point estimates (default 30)",
    )
    parser.add_argument(
        "--sweep-settle-seconds",
        default="1",
        help="after a step's streams are all running, seconds before its streams count (default 1)",
    )
    parser.add_argument("--sweep-min-streams", default="10", help="no step is decided on fewer streams (default 10)")
    parser.add_argument(
        "--capacity-file", default="", help="where capacity.json goes (default: the run's results directory)"
    )


@dataclass(frozen=True, slots=True)
class SweepOptions:
    """The validated flags of a capacity search (the SLO itself is ``analysis.capacity.Slo``)."""

    slo: str = ""
    start: int = 4
    max_streams: int = 256
    tolerance: float = 0.1
    step_s: float = 10.0
    max_step_s: float = 30.0
    settle_s: float = 1.0
    min_streams: int = 10
    capacity_file: str | None = None

    @classmethod
    def from_namespace(cls, ns: Namespace | None) -> SweepOptions:
        get = (lambda name, default: getattr(ns, name, default)) if ns is not None else (lambda _n, d: d)
        start = _int("sweep-start", get("sweep_start", "4"), minimum=1, maximum=100_000)
        max_streams = _int("sweep-max-streams", get("sweep_max_streams", "256"), minimum=1, maximum=100_000)
        if start > max_streams:
            raise OptionError(f"--sweep-start ({start}) must not exceed --sweep-max-streams ({max_streams})")
        step_s = _float("sweep-step-seconds", get("sweep_step_seconds", "10"), minimum=0.1, maximum=3600.0)
        max_step_s = _float("sweep-max-step-seconds", get("sweep_max_step_seconds", "30"), minimum=0.1, maximum=3600.0)
        if step_s > max_step_s:
            raise OptionError(f"--sweep-step-seconds ({step_s:g}) must not exceed --sweep-max-step-seconds")
        return cls(
            slo=str(get("slo", "") or "").strip(),
            start=start,
            max_streams=max_streams,
            tolerance=_float("sweep-tolerance", get("sweep_tolerance", "0.1"), minimum=0.0, maximum=0.99),
            step_s=step_s,
            max_step_s=max_step_s,
            settle_s=_float("sweep-settle-seconds", get("sweep_settle_seconds", "1"), minimum=0.0, maximum=600.0),
            min_streams=_int("sweep-min-streams", get("sweep_min_streams", "10"), minimum=1, maximum=100_000),
            capacity_file=str(get("capacity_file", "") or "").strip() or None,
        )


def check_startup(ns: Namespace | None, host: str | None) -> RunOptions:
    """Everything the command line can get wrong, checked once before anything runs."""
    options = RunOptions.from_namespace(ns)
    users = getattr(ns, "num_users", None)
    if isinstance(users, int) and users < 0:  # Locust itself would fail later with a traceback
        raise OptionError(f"-u/--users must be >= 0 (got {users})")
    check_ca_file(options.ca_file)
    if options.browser_users:
        check_browser()
    if not getattr(ns, "worker", False):  # a worker gets host and paths from its master
        check_results_dir(options.results_dir)
        if getattr(ns, "headless", False) and not host:
            raise OptionError("--host is required with --headless (the backend's base URL)")
        check_host(host)
    return options


def check_browser() -> None:
    """--browser-users needs Debian's Chromium and Playwright here."""
    from loadtests.browser.chromium import BrowserUnavailable, check_available

    try:
        check_available()
    except BrowserUnavailable as exc:
        raise OptionError(str(exc)) from None


def check_host(host: str | None) -> None:
    """The target must be an http(s) base URL (empty: not chosen yet, e.g. in the web UI)."""
    if not host:
        return
    try:
        parts = urlsplit(host)
        _ = parts.port  # ValueError for a bad or out-of-range port
    except ValueError as exc:
        raise OptionError(f"--host {host!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in host):
        raise OptionError(f"--host must be an http:// or https:// base URL (got {host!r})")


def check_ca_file(path: str | None) -> None:
    """--ca-file must hold at least one PEM certificate this process can read."""
    if path is None:
        return
    try:
        make_ssl_context(verify=True, ca_file=path)
    except FileNotFoundError:
        raise OptionError(f"--ca-file {path}: no such file") from None
    except ssl.SSLError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise OptionError(f"--ca-file {path}: not a PEM certificate file ({reason})") from None
    except OSError as exc:
        raise OptionError(f"--ca-file {path}: cannot read it ({exc.strerror or exc})") from None


def check_results_dir(path: str | None) -> None:
    """Fail at start-up, not after the run, when --results-dir cannot be written.

    Creates the directory (it is about to be written anyway).
    """
    if not path:
        return
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionError(f"--results-dir {path}: cannot create it ({exc.strerror or exc})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OptionError(f"--results-dir {path}: not writable")


def _choice(flag: str, value: Any, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise OptionError(f"--{flag} must be one of {', '.join(choices)} (got {value!r})")
    return text


def _int(flag: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    return int(_number(flag, value, int, "an integer", minimum, maximum))


def _float(flag: str, value: Any, *, minimum: float | None = None, maximum: float | None = None) -> float:
    return _number(flag, value, float, "a number", minimum, maximum)


def _number(
    flag: str, value: Any, parse: Callable[[str], float], kind: str, minimum: float | None, maximum: float | None
) -> float:
    try:
        number = parse(str(value).strip())
    except ValueError:
        raise OptionError(f"--{flag} must be {kind} (got {value!r})") from None
    if (
        not math.isfinite(number)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    ):
        raise OptionError(f"--{flag} must be in {_range(minimum, maximum)} (got {value!r})")
    return number


def _range(minimum: float | None, maximum: float | None) -> str:
    lo = "-inf" if minimum is None else f"{minimum:g}"
    hi = "inf" if maximum is None else f"{maximum:g}"
    return f"{lo}..{hi}"


def _size(flag: str, value: Any) -> int:
    """A byte count with an optional binary unit: 65536, 512KiB, 64MiB, 1.5G."""
    match = _SIZE.fullmatch(str(value).strip())
    size = float(match[1]) * SIZE_UNITS[match[2].lower()] if match else 0.0
    if not 1 <= size <= 1 << 40:
        raise OptionError(f"--{flag} must be a size from 1 byte to 1TiB such as 65536, 512KiB or 64MiB (got {value!r})")
    return int(size)


def _optional(value: Any, convert: Any) -> Any:
    if value is None or str(value).strip() == "":
        return None
    return convert(value)


def _port(value: Any) -> int:
    return _int("metrics-port", value, minimum=1, maximum=65535)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _backend_options(flag: str, value: Any) -> dict[str, Any]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, Mapping):
        parsed: Any = dict(value)
    else:
        try:
            parsed = json.loads(str(value))
        except json.JSONDecodeError as exc:
            raise OptionError(f"--{flag} must be a JSON object ({exc.msg} at char {exc.pos})") from None
    if not isinstance(parsed, dict):
        raise OptionError(f"--{flag} must be a JSON object, e.g. '{{\"buffer_ms\": 100}}'")
    try:
        # The fake backend's own table of keys: a typo fails here, at start-up,
        # with the message the backend would give, not as 422s mid-run.
        check_values(parsed)
    except ControlError as exc:
        raise OptionError(f"--{flag}: {exc}") from None
    return parsed
