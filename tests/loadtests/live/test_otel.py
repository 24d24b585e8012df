"""The stream metrics reach Locust's own ``--otel`` exporter, and Locust's Aggregated row stays streams.

Locust's ``--otel`` with the SDK's console exporter (every second) prints each
export as JSON; the harness's observable instruments must be in it with the
live totals, while the request count of Locust's "Aggregated" row is still
one per stream (the TTFC, gap and staleness numbers never go through request
events).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_backend.process import BackendProcess
from tests.support.locust_runs import LocustRun, finish, popen_locust

pytestmark = pytest.mark.timeout(120)


def exports(output: str) -> Iterator[dict]:
    """The JSON documents the console metric exporter printed."""
    decoder = json.JSONDecoder()
    start = output.find('{\n    "resource_metrics"')
    while start != -1:
        document, end = decoder.raw_decode(output, start)
        yield document
        start = output.find('{\n    "resource_metrics"', end)


def data_points(document: dict, name: str) -> list[dict]:
    return [
        point
        for resource in document["resource_metrics"]
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
        if metric["name"] == name
        for point in metric["data"]["data_points"]
    ]


def test_otel_console_export_has_the_stream_metrics_and_aggregated_counts_streams(
    backend: BackendProcess, tmp_path: Path
) -> None:
    results = tmp_path / "run"
    otel_console_every_second = {
        "OTEL_METRICS_EXPORTER": "console",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    }
    process = popen_locust(
        "--headless",
        "--otel",
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "4s",
        "--host",
        backend.url,
        "--chunks",
        "30",
        "--stream-seconds",
        "0.3",
        "--stop-timeout",
        "5",
        "--results-dir",
        str(results),
        "--csv",
        str(results / "locust"),
        "--only-summary",
        env=otel_console_every_second,
    )
    output = finish(process, timeout=90)
    run = LocustRun(process.returncode, output, results)
    streams = run.streams
    documents = list(exports(output))
    assert documents, output[-3000:]
    last = documents[-1]

    ttfc = data_points(last, "stream_harness.ttfc")
    assert {(p["attributes"]["transport"], p["attributes"]["quantile"]) for p in ttfc} >= {
        ("ndjson", "p50"),
        ("socketio", "p99"),
    }
    assert all(0 < p["value"] < 5 for p in ttfc)
    finished = {}
    for point in data_points(last, "stream_harness.streams"):
        transport = point["attributes"]["transport"]
        finished[transport] = finished.get(transport, 0) + point["value"]
    by_transport = streams.groupby("transport").size().to_dict()
    # the last export may precede the very last streams by up to one export interval
    for transport, count in by_transport.items():
        assert 0 < finished[transport] <= count, (transport, finished, by_transport)
    assert data_points(last, "stream_harness.buffering_verdict")
    assert data_points(last, "stream_harness.load_generator.saturated")

    stats = run.stats_csv()
    aggregated = stats[stats["Name"] == "Aggregated"].iloc[0]
    assert int(aggregated["Request Count"]) == len(streams)
