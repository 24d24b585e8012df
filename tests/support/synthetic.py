"""Synthetic runs: arrival series with known pacing, buffering and client noise.

Tests, the detector's calibration and ``make bench-analysis`` need runs whose
truth is known.  A run is simulated per chunk, vectorised over all streams:

1. the server *emits* chunks with a pacing (``steady``, ``poisson`` or
   ``llm``: quick bursts of tokens, each its own write, then pauses);
2. something on the path may *release* them later: a timer window
   (``buffer_ms``), every N chunks (``buffer_chunks``), a compressor that
   flushes only full blocks (``gzip_block_bytes``, counted in compressed
   bytes; the headers wait for the first block too, as measured through the
   fake backend) or a buffering proxy (``proxy_buffer_bytes``, raw bytes);
3. bytes cross loopback (tens of microseconds), then the client's read loop
   picks them up after a wake-up latency plus occasional CPU stalls; every
   line that arrived before a read returns is completed by that read, which
   is how 2-3 lines coalesce now and then on a loaded machine.

The output has exactly the raw-data layout of ``stream_harness.contract.schema``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from analysis.frames import coerce_events, coerce_streams, stream_event_columns
from stream_harness.contract.kinds import EventKind
from stream_harness.contract.schema import CHUNK, END

STATUS_UPDATE: Final = EventKind.STATUS_UPDATE

#: Client-side noise: wake-up latency after data arrives, frequent short
#: stalls and rare long ones (GC, scheduler, other processes on 2 shared cores).
NOISE_PROFILES: Final[dict[str, dict[str, float]]] = {
    "quiet": {
        "wake_ms": 0.02,
        "wake_exp_ms": 0.03,
        "stall_p": 0.002,
        "stall_ms": 1.0,
        "big_stall_p": 0.0002,
        "big_stall_low_ms": 5.0,
        "big_stall_high_ms": 20.0,
    },
    "loaded": {
        "wake_ms": 0.03,
        "wake_exp_ms": 0.08,
        "stall_p": 0.02,
        "stall_ms": 2.0,
        "big_stall_p": 0.002,
        "big_stall_low_ms": 10.0,
        "big_stall_high_ms": 40.0,
    },
    "heavy": {
        "wake_ms": 0.05,
        "wake_exp_ms": 0.15,
        "stall_p": 0.05,
        "stall_ms": 3.0,
        "big_stall_p": 0.005,
        "big_stall_low_ms": 10.0,
        "big_stall_high_ms": 50.0,
    },
}

#: ``llm`` pacing: mean tokens per burst and mean spacing inside a burst.
LLM_BURST_TOKENS: Final = 8
LLM_INTRA_GAP_MS: Final = 0.6

#: Bytes of one NDJSON chunk line with the fake backend's seq/ts keys, and
#: what it compresses to inside a long gzip stream of similar lines.
LINE_BYTES: Final = (60, 80)
GZIP_LINE_BYTES: Final = (10, 20)


@dataclass(frozen=True)
class SyntheticSpec:
    """What to simulate; defaults are a small clean run of both transports."""

    transports: tuple[str, ...] = ("ndjson", "socketio")
    endpoints: tuple[str, ...] = ("chat",)
    streams: int = 20  # per transport
    chunks: tuple[int, int] = (600, 800)  # per stream, drawn uniformly
    rate: float = 333.0  # chunks/s while a stream runs
    pacing: str = "steady"  # steady | poisson | llm
    headers_ms: float = 2.0
    first_chunk_delay_ms: float = 3.0  # headers -> first chunk emitted
    buffer_ms: float | None = None
    buffer_chunks: int | None = None
    gzip_block_bytes: int | None = None
    proxy_buffer_bytes: int | None = None
    emit_times: bool = True
    noise: str = "loaded"
    loss: float = 0.0  # share of chunk lines lost on the way
    failure_share: float = 0.0  # streams cut by a disconnect
    users: int = 10
    saturated: bool = False
    seed: int = 0
    transport_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


def synthetic_run(spec: SyntheticSpec) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """``(run, streams, events)`` of a simulated run (schema dtypes, stream_key = row)."""
    rng = np.random.default_rng(spec.seed)
    parts = []
    for transport in spec.transports:
        overrides = spec.transport_overrides.get(transport, {})
        parts.append(_simulate(replace(spec, **overrides), transport, rng))
    streams = pd.concat([part[0] for part in parts], ignore_index=True)
    offsets = np.cumsum([0] + [len(part[0]) for part in parts[:-1]])
    events = pd.concat(
        [part[1].assign(stream_key=part[1]["stream_key"] + offset) for part, offset in zip(parts, offsets)],
        ignore_index=True,
    )
    streams["stream_key"] = np.arange(len(streams), dtype=np.int32)
    streams["stream_id"] = [f"{t}-{i}" for t, i in zip(streams["transport"], streams.index)]
    streams = _schedule(streams, spec.users, rng)
    run = _run_metadata(spec, streams)
    return run, coerce_streams(streams), coerce_events(events)


def write_synthetic_run(directory: str | Path, spec: SyntheticSpec) -> dict[str, Any]:
    """Simulate ``spec`` and write it as a results directory; returns the summary."""
    from analysis.results import write_results

    run, streams, events = synthetic_run(spec)
    return write_results(directory, run, streams, events)


def _simulate(spec: SyntheticSpec, transport: str, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_streams = spec.streams
    counts = rng.integers(spec.chunks[0], spec.chunks[1] + 1, size=n_streams)
    stream = np.repeat(np.arange(n_streams), counts)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    ends = starts + counts - 1
    position = np.arange(stream.size) - starts[stream]

    headers = spec.headers_ms + rng.exponential(0.3, n_streams)
    emit = _emit_times(spec, rng, stream, position, starts) + (headers + spec.first_chunk_delay_ms)[stream]
    release = _release_times(spec, rng, emit, stream, position, starts, ends)
    arrival = _network(rng, release, stream, starts)
    t_ms, new_read = _client_reads(NOISE_PROFILES[spec.noise], rng, arrival, stream, starts)
    read = np.cumsum(new_read)
    read = read - read[starts][stream] + 1  # read 0 carried the status_update

    keep = np.ones(stream.size, dtype=bool)
    if spec.loss > 0:
        keep &= rng.random(stream.size) >= spec.loss
    failed = rng.random(n_streams) < spec.failure_share
    cut_at = np.where(failed, (counts * rng.uniform(0.2, 0.8, n_streams)).astype(np.int64), counts)
    keep &= position < cut_at[stream]

    end_t = t_ms[ends] + 0.05 + rng.exponential(0.05, n_streams)
    status_t = np.minimum(headers + 0.5 + rng.exponential(0.05, n_streams), t_ms[starts])
    if spec.gzip_block_bytes:
        # the compressor holds the headers and the first lines until its first block is full
        headers = status_t = t_ms[starts]
    chunk_emit = emit if spec.emit_times else np.full(emit.size, np.nan)
    seq = (position + 1).astype(np.int32)
    ev_stream = np.concatenate([np.arange(n_streams), stream[keep], np.flatnonzero(~failed)])
    ev_order = np.concatenate([np.full(n_streams, -1), position[keep], counts[~failed]])
    ev = pd.DataFrame(
        {
            "stream_key": ev_stream.astype(np.int32),
            "kind": np.concatenate(
                [np.full(n_streams, STATUS_UPDATE), np.full(keep.sum(), CHUNK), np.full((~failed).sum(), END)]
            ).astype(np.int8),
            "t_ms": np.concatenate([status_t, t_ms[keep], end_t[~failed]]),
            "read": np.concatenate([np.zeros(n_streams, np.int64), read[keep], read[ends][~failed] + 1]).astype(
                np.int32
            ),
            "seq": np.concatenate([np.zeros(n_streams, np.int32), seq[keep], counts[~failed].astype(np.int32) + 1]),
            "emit_ms": np.concatenate(
                [
                    headers + 0.4 if spec.emit_times else np.full(n_streams, np.nan),
                    chunk_emit[keep],
                    (emit[ends] + 0.01)[~failed] if spec.emit_times else np.full((~failed).sum(), np.nan),
                ]
            ),
            "_order": ev_order,
        }
    )
    ev = ev.sort_values(["stream_key", "_order"], kind="stable").drop(columns="_order")
    ev = ev.reset_index(drop=True)

    last_t = np.where(failed, t_ms[np.minimum(starts + np.maximum(cut_at - 1, 0), ends)] + 1.0, end_t)
    streams = pd.DataFrame(
        {
            "transport": transport,
            "endpoint": [spec.endpoints[i % len(spec.endpoints)] for i in range(n_streams)],
            "time_to_headers_ms": headers,
            "duration_ms": last_t + 0.05,
            "n_reads": read[ends] + 2,
            "status": np.where(failed, "failed", "completed"),
            "error": pd.array(np.where(failed, "disconnect", None), dtype="string"),
            "error_detail": pd.array(np.where(failed, "connection closed before end", None), dtype="string"),
            "http_status": 200 if transport == "ndjson" else 0,
            "content_encoding": "gzip" if spec.gzip_block_bytes else "",
            "malformed_lines": 0,
            "expected_chunks": counts.astype(np.int32),
        }
    )
    ev_columns = stream_event_columns(ev, np.arange(n_streams))
    streams = streams.assign(**ev_columns)
    return streams, ev


def _emit_times(
    spec: SyntheticSpec, rng: np.random.Generator, stream: np.ndarray, position: np.ndarray, starts: np.ndarray
) -> np.ndarray:
    """Server emit time of each chunk relative to the stream's first chunk (ms)."""
    mean_gap = 1000.0 / spec.rate
    n = stream.size
    if spec.pacing == "steady":
        gaps = np.full(n, mean_gap)
    elif spec.pacing == "poisson":
        gaps = rng.exponential(mean_gap, n)
    elif spec.pacing == "llm":
        burst_start = rng.random(n) < 1.0 / LLM_BURST_TOKENS
        pause = LLM_BURST_TOKENS * mean_gap - (LLM_BURST_TOKENS - 1) * LLM_INTRA_GAP_MS
        gaps = np.where(burst_start, rng.uniform(0.5, 1.5, n) * pause, rng.exponential(LLM_INTRA_GAP_MS, n))
    else:
        raise ValueError(f"unknown pacing {spec.pacing!r}")
    gaps[starts] = 0.0
    total = np.cumsum(gaps)
    return total - total[starts][stream]


def _release_times(
    spec: SyntheticSpec,
    rng: np.random.Generator,
    emit: np.ndarray,
    stream: np.ndarray,
    position: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
) -> np.ndarray:
    """When each chunk leaves the server side of the path (after any buffer)."""
    release = emit.copy()
    if spec.buffer_ms:
        anchor = emit[starts][stream]
        window = np.floor((emit - anchor) / spec.buffer_ms) + 1.0
        release = np.maximum(release, anchor + window * spec.buffer_ms)
    if spec.buffer_chunks:
        last_of_group = np.minimum(
            starts[stream] + (position // spec.buffer_chunks + 1) * spec.buffer_chunks - 1, ends[stream]
        )
        release = np.maximum(release, emit[last_of_group])
    for block, sizes in ((spec.gzip_block_bytes, GZIP_LINE_BYTES), (spec.proxy_buffer_bytes, LINE_BYTES)):
        if block:
            release = np.maximum(release, _block_flush_times(rng, emit, stream, starts, ends, block, sizes))
    return release


def _block_flush_times(
    rng: np.random.Generator,
    emit: np.ndarray,
    stream: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    block: int,
    line_bytes: tuple[int, int],
) -> np.ndarray:
    """Release times when lines leave only as full ``block``-byte blocks (rest at the end)."""
    sizes = rng.integers(line_bytes[0], line_bytes[1] + 1, emit.size)
    cumulative = np.cumsum(sizes)
    within = cumulative - (cumulative[starts] - sizes[starts])[stream]
    total = within[ends]
    stride = (int(total.max()) // block + 2) * block
    offset = np.arange(starts.size, dtype=np.int64) * stride
    global_bytes = within + offset[stream]
    target = (within - 1) // block * block + block + offset[stream]
    flusher = np.searchsorted(global_bytes, target, side="left")
    in_stream = flusher <= ends[stream]
    flusher = np.where(in_stream, flusher, ends[stream])
    return emit[flusher]


def _network(rng: np.random.Generator, release: np.ndarray, stream: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Loopback transit: lines released together travel together; order is kept."""
    new_release = np.ones(release.size, dtype=bool)
    new_release[1:] = release[1:] != release[:-1]
    new_release[starts] = True
    group = np.cumsum(new_release) - 1
    transit = 0.03 + rng.exponential(0.02, group[-1] + 1 if group.size else 0)
    return _cummax_within(release + transit[group], stream)


def _client_reads(
    noise: dict[str, float], rng: np.random.Generator, arrival: np.ndarray, stream: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Time each line's read returns, and where a new read starts.

    A line that arrives before the read serving the previous line returned is
    completed by that same read.
    """
    n = arrival.size
    delay = noise["wake_ms"] + rng.exponential(noise["wake_exp_ms"], n)
    stall = rng.random(n) < noise["stall_p"]
    delay[stall] += rng.exponential(noise["stall_ms"], int(stall.sum()))
    big = rng.random(n) < noise["big_stall_p"]
    delay[big] += rng.uniform(noise["big_stall_low_ms"], noise["big_stall_high_ms"], int(big.sum()))
    ready = _cummax_within(arrival + delay, stream)
    new_read = np.ones(n, dtype=bool)
    new_read[1:] = arrival[1:] > ready[:-1]
    new_read[starts] = True
    read_id = np.cumsum(new_read) - 1
    last_of_read = np.r_[np.flatnonzero(new_read)[1:] - 1, n - 1]
    return ready[last_of_read][read_id], new_read


def _cummax_within(values: np.ndarray, stream: np.ndarray) -> np.ndarray:
    return pd.Series(values).groupby(stream).cummax().to_numpy()


def _schedule(streams: pd.DataFrame, users: int, rng: np.random.Generator) -> pd.DataFrame:
    """Give each stream a user and a start time: each user runs its streams back to back.

    Every transport has its own ``users`` users, all running at the same time.
    """
    transport = streams["transport"].to_numpy(dtype=object)
    index_in_transport = pd.Series(np.ones(len(streams))).groupby(transport).cumsum() - 1
    user = (index_in_transport.to_numpy() % max(users, 1)).astype(np.int32)
    duration_s = streams["duration_ms"].to_numpy() / 1000.0 + rng.uniform(0.01, 0.05, len(streams))
    before = pd.Series(duration_s).groupby([transport, user]).cumsum().to_numpy() - duration_s
    run_start = 1_700_000_000.0
    return streams.assign(user=user, worker="local", started_at=run_start + user * 0.01 + before)


def _run_metadata(spec: SyntheticSpec, streams: pd.DataFrame) -> dict[str, Any]:
    start = float(streams["started_at"].min())
    end = float((streams["started_at"] + streams["duration_ms"] / 1000.0).max())
    options = {key: value for key, value in asdict(spec).items() if key != "transport_overrides"}
    return {
        "id": f"synthetic-{spec.seed}",
        "started_at": dt.datetime.fromtimestamp(start, tz=dt.UTC).isoformat(),
        "duration_s": round(end - start, 3),
        "host": "synthetic",
        "users": spec.users,
        "workers": 1,
        "harness": {
            "saturated": spec.saturated,
            "cpu_percent_max": 97.0 if spec.saturated else 45.0,
            "loop_lag_ms_p99": 60.0 if spec.saturated else 1.5,
        },
        "options": {"synthetic": options},
    }
