"""The "harness" control field: what a request may ask the fake backend to do.

One table (``FIELDS``) describes every key once.  The request validator, the
server-wide defaults from ``FAKE_BACKEND_PROFILE`` and the CLI flags are all
derived from it, so a key cannot be valid in one place and unknown in another.

Precedence: per-request field > CLI flag > ``FAKE_BACKEND_PROFILE`` > built-in
default.  A request may send ``null`` for a key to fall back to the built-in
default (e.g. ``"buffer_ms": null`` switches off a server-wide buffering fault).

Caps exist so one request cannot pin the server: chunks <= 100,000,
duration <= 600 s, and chunks * chunk_chars <= 50,000,000 characters of text.
"""

from __future__ import annotations

import json
import math
import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

from fake_backend.errors import FakeBackendError

PACINGS: Final = ("steady", "poisson", "llm")
MAX_TEXT_CHARS: Final = 50_000_000
#: Built-in default chunk count range (the migration plan's 2,000-10,000).
DEFAULT_CHUNK_RANGE: Final = (2000, 10000)
#: Seconds a write may wait for a client that stopped reading before its stream ends.
DEFAULT_SEND_TIMEOUT_S: Final = 30.0


class ControlError(FakeBackendError, ValueError):
    """A control value is invalid; the message is one line meant for the client."""


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_in(lo: int, hi: int) -> Callable[[str, object], int]:
    def check(key: str, value: object) -> int:
        if not _is_int(value) or not lo <= value <= hi:
            raise ControlError(f"harness.{key} must be an integer in {lo}..{hi}, got {value!r}")
        return value

    return check


def _float_in(lo: float, hi: float, *, exclusive_lo: bool = False) -> Callable[[str, object], float]:
    def check(key: str, value: object) -> float:
        if not (_is_number(value) and (value > lo if exclusive_lo else value >= lo) and value <= hi):
            low = f"> {lo:g}" if exclusive_lo else f">= {lo:g}"
            raise ControlError(f"harness.{key} must be a number {low} and <= {hi:g}, got {value!r}")
        return float(value)

    return check


def _boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ControlError(f"harness.{key} must be true or false, got {value!r}")
    return value


def _pacing(key: str, value: object) -> str:
    if value not in PACINGS:
        raise ControlError(f"harness.{key} must be one of {', '.join(PACINGS)}, got {value!r}")
    return str(value)


def _seed(key: str, value: object) -> int:
    if not _is_int(value) or abs(value) >= 2**63:
        raise ControlError(f"harness.{key} must be an integer with |seed| < 2**63, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ControlKey:
    """One control key: how to check it and how it looks on the command line."""

    name: str
    check: Callable[[str, object], object]
    kind: type  # CLI value type: int, float, str or bool
    help: str


FIELDS: Final[tuple[ControlKey, ...]] = (
    ControlKey("chunks", _int_in(1, 100_000), int, "chunk lines per stream (default: 2000..10000 drawn from the seed)"),
    ControlKey(
        "duration_s", _float_in(0, 600), float, "seconds from first to last chunk (default 30; 0 = as fast as possible)"
    ),
    ControlKey("pacing", _pacing, str, "chunk timing: steady, poisson or llm (bursts and pauses)"),
    ControlKey("first_chunk_delay_ms", _float_in(0, 120_000), float, "request received -> first chunk (default 0)"),
    ControlKey("chunk_chars", _int_in(1, 10_000), int, "mean chunk text length in characters (default 4)"),
    ControlKey("events", _boolean, bool, "mix in status/tool/heartbeat/broker/data/completion events (default on)"),
    ControlKey("seed", _seed, int, "random seed (default: a fresh one per request)"),
    ControlKey("timing", _boolean, bool, "NDJSON seq/ts keys and Socket.io emit times (default on)"),
    ControlKey("buffer_ms", _float_in(0, 60_000, exclusive_lo=True), float, "fault: release held lines every N ms"),
    ControlKey("buffer_chunks", _int_in(1, 100_000), int, "fault: release held lines every N chunks"),
    ControlKey("stall_ms", _float_in(0, 120_000), float, "fault: pause this long before chunk stall_at"),
    ControlKey("stall_at", _int_in(0, 99_999), int, "fault: chunk index of the stall"),
    ControlKey("error_at", _int_in(0, 99_999), int, "fault: error event (then end) instead of chunk K"),
    ControlKey("disconnect_at", _int_in(0, 99_999), int, "fault: drop the connection instead of chunk K"),
    ControlKey("gzip", _boolean, bool, "fault: gzip the NDJSON body the careless way (full blocks only)"),
    ControlKey(
        "knee_streams",
        _int_in(0, 100_000),
        int,
        "load: running streams of a transport the backend serves without delay (with knee_delay_ms)",
    ),
    ControlKey(
        "knee_delay_ms",
        _float_in(0, 60_000),
        float,
        "load: extra first-chunk delay per running stream beyond knee_streams",
    ),
)
FIELD_BY_NAME: Final[dict[str, ControlKey]] = {f.name: f for f in FIELDS}


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """A fully resolved stream shape and fault set (every value decided)."""

    chunks: int
    duration_s: float = 30.0
    pacing: str = "steady"
    first_chunk_delay_ms: float = 0.0
    chunk_chars: int = 4
    events: bool = True
    seed: int = 0
    timing: bool = True
    buffer_ms: float | None = None
    buffer_chunks: int | None = None
    stall_ms: float | None = None
    stall_at: int | None = None
    error_at: int | None = None
    disconnect_at: int | None = None
    gzip: bool = False
    knee_streams: int | None = None
    knee_delay_ms: float | None = None

    def load_delay_ms(self, running: int) -> float:
        """Extra first-chunk delay when ``running`` streams of this one's transport run (itself included).

        ``knee_delay_ms`` per stream beyond ``knee_streams``: a backend whose
        first chunk slows down linearly past a known concurrency, so a
        capacity search has a true answer to find.
        """
        if self.knee_streams is None or self.knee_delay_ms is None:
            return 0.0
        return self.knee_delay_ms * max(0, running - self.knee_streams)


def check_values(raw: object, *, where: str = "harness") -> dict[str, object]:
    """Validate a partial control mapping (request field or server profile).

    Returns the checked values with ``None`` kept (meaning "built-in default").
    Raises ControlError with a one-line message naming the bad key.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ControlError(f"{where} must be a JSON object, got {type(raw).__name__}")
    checked: dict[str, object] = {}
    for key, value in raw.items():
        spec = FIELD_BY_NAME.get(key) if isinstance(key, str) else None
        if spec is None:
            known = ", ".join(FIELD_BY_NAME)
            raise ControlError(f"unknown {where} key {key!r} (known: {known})")
        checked[key] = None if value is None else spec.check(key, value)
    return checked


def resolve(request_raw: object, server_defaults: Mapping[str, object]) -> StreamSettings:
    """Merge a request's harness field over the server defaults and decide
    everything left open (seed, chunk count).  Cross-field rules live here."""
    merged = {**server_defaults, **check_values(request_raw)}
    values: dict[str, Any] = {k: v for k, v in merged.items() if v is not None}
    seed = values.get("seed")
    if seed is None:
        seed = secrets.randbits(62)
    values["seed"] = seed
    if "chunks" not in values:
        # Draw the count so that any fault position the caller did give fits.
        positions = [values[k] for k in ("stall_at", "error_at", "disconnect_at") if k in values]
        values["chunks"] = _default_chunks(seed, at_least=max(positions, default=-1) + 1)
    chunks = values["chunks"]
    if ("stall_ms" in values) != ("stall_at" in values):
        raise ControlError("harness.stall_ms and harness.stall_at must be given together")
    if ("knee_streams" in values) != ("knee_delay_ms" in values):
        raise ControlError("harness.knee_streams and harness.knee_delay_ms must be given together")
    for key in ("stall_at", "error_at", "disconnect_at"):
        at = values.get(key)
        if at is not None and at >= chunks:
            raise ControlError(f"harness.{key} ({at}) must be < chunks ({chunks})")
    chars = values.get("chunk_chars", 4)
    if chunks * chars > MAX_TEXT_CHARS:
        raise ControlError(
            f"harness.chunks * harness.chunk_chars = {chunks * chars:,} exceeds the cap of "
            f"{MAX_TEXT_CHARS:,} characters"
        )
    return StreamSettings(**values)


def _default_chunks(seed: int, at_least: int) -> int:
    lo, hi = DEFAULT_CHUNK_RANGE
    return random.Random(f"chunks:{seed}").randint(max(lo, at_least), max(hi, at_least))


def profile_from_env(environ: Mapping[str, str], var: str = "FAKE_BACKEND_PROFILE") -> dict[str, object]:
    """Server defaults from a JSON object in an environment variable."""
    text = environ.get(var, "").strip()
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ControlError(f"{var} is not valid JSON: {exc.msg} at column {exc.colno}") from None
    return check_values(raw, where=var)


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """Server-wide switches: auth, the default stream shape / faults, and how long
    a write may wait for a client that stopped reading (``fake_backend.slow_consumer``;
    0 = for ever)."""

    require_auth: bool = False
    defaults: Mapping[str, object] = field(default_factory=dict)
    send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S

    def __post_init__(self) -> None:
        if not (_is_number(self.send_timeout_s) and self.send_timeout_s >= 0):
            raise ControlError(f"send timeout must be a number >= 0, got {self.send_timeout_s!r}")
        object.__setattr__(self, "defaults", check_values(self.defaults, where="server default"))
        # Fail at startup, not on the first request: the defaults must
        # resolve on their own (e.g. error_at < chunks when both are set).
        resolve({"seed": 0}, self.defaults)
