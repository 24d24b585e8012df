"""docs/grafana-dashboard.json: a well-formed dashboard that queries only metrics the harness exports.

(That every query runs and answers on a real Prometheus is checked in test_prometheus.py.)
"""

from __future__ import annotations

import re

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from analysis.histogram import LogHistogram
from loadtests.live.metrics import MetricsView, StreamRow, make_registry
from tests.support.dashboard import SUBSTITUTIONS, dashboard, queries


def exported_sample_names() -> set[str]:
    hist = LogHistogram()
    hist.add(1.0)
    row = StreamRow("ndjson", "chat", 1, 1, 1, 0, 0, {"timeout": 1}, 1, hist, hist, hist, "clean")
    text = generate_latest(make_registry(lambda: MetricsView((row,), False, 1.0, 1.0))).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_dashboard_is_well_formed() -> None:
    board = dashboard()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {variable["name"] for variable in board["templating"]["list"]}
    assert {"datasource", "transport", "endpoint"} <= variables
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_query_uses_exported_metrics_and_known_variables() -> None:
    exported = exported_sample_names()
    used = set()
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            variables = set(re.findall(r"\$\w+", target["expr"]))
            assert variables <= set(SUBSTITUTIONS), (panel["title"], variables)
    for title, expr in queries().items():
        names = set(re.findall(r"\bstream_harness_\w+", expr))
        assert names, title
        assert names <= exported, (title, names - exported)
        used |= names
    # every family shows up somewhere on the board
    families = {re.sub(r"_(bucket|count|sum)$", "", name) for name in exported}
    shown = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    assert families == shown, families - shown
