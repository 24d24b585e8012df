"""The typed objects of ``summary.json`` (schema 1), shared by every reader and writer.

The analysis builds them (``analysis.summary``), the Streams tab builds the
same transport objects live (``loadtests.live.stats``), and the report, the
regression gate, the PR comment, the tables and the benchmarks read them.
``TypedDict`` s: the JSON is the object, and a type checker sees every key.

Keys marked ``NotRequired`` are extensions a reader must not rely on (older
files lack them); readers ignore keys they do not know.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

#: The contract's latency keys, in order, and the percentiles behind them.
LATENCY_KEYS: tuple[str, ...] = ("p50", "p90", "p95", "p99", "p999", "max")
LATENCY_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9, 100.0)


class Latency(TypedDict):
    """Milliseconds; ``None`` where there is no data."""

    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    p999: float | None
    max: float | None


class StreamCounts(TypedDict):
    started: int
    completed: int
    failed: int
    cancelled: int
    errors: dict[str, int]  # ErrorKind -> streams
    running: NotRequired[int]  # live only: streams in flight now
    warmup: NotRequired[int]  # streams left out as warm-up


class EventCounts(TypedDict):
    total: int
    chunks: int
    malformed_lines: int


class EventsPerRead(TypedDict):
    mean: float | None
    p99: float | None


class ChunksPerStream(TypedDict):
    mean: float | None
    delivered_share: float | None  # of the chunks the backend promised (fake backend only)


class Evidence(TypedDict):
    """The numbers a buffering verdict rests on (``analysis.buffering.Evidence``)."""

    streams: int
    chunks: int
    chunk_rate_per_s: float | None
    coalesced_share: float | None
    chunks_per_burst: float | None
    burst_lead_ms: float | None
    first_burst_chunks: float | None
    headers_to_first_chunk_ms: float | None
    staleness_p99_ms: float | None
    staleness_max_ms: float | None
    stale_share: float | None
    encodings: list[str]
    ttfc_ms: float | None


class Buffering(TypedDict):
    verdict: str  # Verdict
    reasons: list[str]
    evidence: NotRequired[Evidence]


class CalibrationDelta(TypedDict):
    """One compared number: each kind of client's value, browser minus protocol, the tolerance (ms),
    and whether it was held to it (a TTFC p99 of too few streams is shown, not judged)."""

    protocol: float | None
    browser: float | None
    delta: float | None
    allowed: float | None
    judged: bool


class CalibrationPair(TypedDict):
    p50: CalibrationDelta
    p99: CalibrationDelta


class Calibration(TypedDict):
    """Do the protocol clients see what the browser sees on this transport? (``analysis.calibration``)"""

    agree: bool
    line: str  # "protocol clients agree with the browser", or why not
    reasons: list[str]
    notes: list[str]  # numbers shown but not judged, and why
    streams: dict[str, int]  # completed streams per kind of client
    ttfc_ms: CalibrationPair
    gap_ms: CalibrationPair
    events_per_read: dict[str, float | None]  # mean per kind of client (shown, not judged)
    verdicts: dict[str, str]  # buffering verdict per kind of client
    thresholds: dict[str, float | int | bool]


class TransportSummary(TypedDict):
    """One transport (or one endpoint of it, or one kind of client)."""

    streams: StreamCounts
    events: EventCounts
    time_to_headers_ms: Latency
    ttfc_ms: Latency
    first_event_ms: Latency
    gap_ms: Latency
    staleness_ms: Latency | None  # None without emit times, or when the clocks are unreliable
    jitter_ms: Latency | None
    events_per_read: EventsPerRead
    events_per_s: float | None
    chunks_per_stream: ChunksPerStream
    buffering: Buffering
    approximate: NotRequired[list[str]]  # latency keys read from 1% log buckets
    staleness_note: NotRequired[str]  # why staleness is None although emit times exist
    endpoints: NotRequired[dict[str, TransportSummary]]
    by_client: NotRequired[dict[str, TransportSummary]]
    calibration: NotRequired[Calibration]  # when by_client has both protocol and browser


class Harness(TypedDict):
    """The load generator's self-check (``loadtests.selfcheck``)."""

    saturated: bool
    cpu_percent_max: float | None
    loop_lag_ms_p99: float | None
    reasons: NotRequired[list[str]]


class RunSummary(TypedDict):
    id: str
    started_at: str
    duration_s: float
    host: str
    users: int
    workers: int
    harness: Harness
    worker_problems: NotRequired[list[dict[str, object]]]
    stopped_early: NotRequired[bool]
    warmup_s: NotRequired[float]


class ParityMetric(TypedDict):
    """One per-stream metric, NDJSON against Socket.io (the regression gate's statistics)."""

    ndjson_median: float  # ms, median over streams
    socketio_median: float
    difference: float  # ndjson - socketio medians, ms
    ci: list[float]  # 95% bootstrap interval of the difference: [low, high]
    p_value: float  # one-sided Mann-Whitney U, in the direction of the difference
    significant: bool  # p_value < alpha
    practical: bool  # |difference| >= the metric's *_ms and *_pct of the Socket.io median
    streams: dict[str, int]  # transport -> streams compared
    result: str  # ParityVerdict of this metric


class ParityFailures(TypedDict):
    ndjson_rate: float  # failed share of streams
    socketio_rate: float
    difference: float
    tolerance: float  # [tool.stream_harness.regression] failure_rate_tolerance
    p_value: float  # one-sided Fisher's exact test (1.0 when the difference is within the tolerance)
    result: str  # ParityVerdict


class ParityBuffering(TypedDict):
    ndjson: str  # Verdict
    socketio: str
    result: str  # ParityVerdict


class ParityJudgement(TypedDict):
    """NDJSON against Socket.io over one set of streams (the run, or one endpoint of it)."""

    verdict: str  # ParityVerdict
    reasons: list[str]  # why, worst first; empty for parity
    metrics: dict[str, ParityMetric]  # ttfc, gap_p99, staleness_p99: those both transports measured
    failures: ParityFailures
    buffering: ParityBuffering
    inconclusive: NotRequired[list[str]]  # what could not be judged (too few streams, ...)


class Parity(ParityJudgement):
    """``summary.json`` ``parity``: the run's answer; ``verdict`` is the worst of the run and its endpoints."""

    endpoints: dict[str, ParityJudgement]


class Summary(TypedDict):
    schema: int
    run: RunSummary
    transports: dict[str, TransportSummary]
    parity: NotRequired[Parity]  # runs with both transports only
