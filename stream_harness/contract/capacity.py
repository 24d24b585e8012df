"""The typed objects of ``capacity.json`` (schema 1): ``stream-harness sweep`` and the capacity load shape.

Per transport, the most concurrent streams that met the SLO, whether that is
only a lower bound (the load generator saturated first, or the search hit its
ceiling), and every step with its numbers and decision.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

CAPACITY_SCHEMA_VERSION = 1


class SloSpec(TypedDict):
    """The service-level objective a step must meet (``[tool.stream_harness.slo]``)."""

    ttfc_p99_ms: float  # 99% of streams see their first chunk within this
    gap_p99_ms: float  # 99% of streams have their own p99 chunk gap within this
    failure_rate: float  # at most this share of streams fails
    clean: bool  # the step's buffering verdict must be clean
    confidence: float  # of the Wilson intervals that decide each objective


class ObjectiveResult(TypedDict):
    """One objective at one step: the share of streams that missed it, with its Wilson interval."""

    limit: float  # ms, a share, or 1.0 for "clean"
    observed: float | None  # the step's TTFC p99 / gap p99 (ms) / failed share; None without data
    allowed: float  # share of streams that may miss it
    missed: int  # streams that missed it
    trials: int  # streams judged
    share: float | None  # missed / trials
    interval: list[float]  # Wilson interval of the missed share: [low, high]
    holds: bool  # point estimate within the allowed share
    resolved: bool  # the whole interval on one side of the allowed share
    verdict: NotRequired[str]  # the buffering objective: the step's verdict


class StepMetrics(TypedDict):
    ttfc_p99_ms: float | None  # p99 over streams of TTFC
    gap_p99_ms: float | None  # p99 over streams of each stream's own p99 chunk gap
    failure_rate: float | None
    verdict: str  # buffering verdict of the step's streams
    streams: int  # streams judged
    chunks_per_s: float | None  # chunks the step's streams received per second of the step


class CapacityStep(TypedDict):
    streams: int  # concurrent streams (users) of the step
    decision: str  # StepDecision
    resolved: bool  # decided with confidence (else: on the point estimates, when the step ran out of time)
    measured_s: float  # seconds of the step whose streams were judged (after the settle time)
    metrics: StepMetrics
    objectives: dict[str, ObjectiveResult]  # ttfc, gap, failures, buffering
    harness: dict[str, object]  # the load generator's self-check during the step
    reasons: list[str]
    retried: NotRequired[list[str]]  # why earlier attempts at this level were measured again (starved machine)


class TransportCapacity(TypedDict):
    max_streams_meeting_slo: int  # 0: not even the lowest level tried
    lower_bound: bool  # true: the capacity may be higher (generator saturated first, or the ceiling)
    breaks_at: int | None  # the lowest level at which the SLO broke
    saturated_at: int | None  # the lowest level at which the load generator saturated
    stop_reason: str
    summary: str  # one line for people
    steps: list[CapacityStep]


class Capacity(TypedDict):
    schema: int
    slo: SloSpec
    search: dict[str, float]  # start, max_streams, tolerance, step timings
    transports: dict[str, TransportCapacity]
    host: NotRequired[str]
    results: NotRequired[str]  # the sweep's result set (relative to capacity.json)
