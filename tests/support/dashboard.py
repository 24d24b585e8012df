"""The Grafana dashboard's PromQL queries (docs/grafana-dashboard.json), ready to send to Prometheus."""

from __future__ import annotations

import json
from typing import Final

from tests.support import REPO

DASHBOARD: Final = REPO / "docs" / "grafana-dashboard.json"
#: Grafana's variables as a plain Prometheus query needs them: every transport and endpoint.
SUBSTITUTIONS: Final = {"$__rate_interval": "10s", "$transport": ".*", "$endpoint": ".*"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries() -> dict[str, str]:
    """Panel title (+ target) -> PromQL with the dashboard variables filled in."""
    out = {}
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in SUBSTITUTIONS.items():
                expr = expr.replace(variable, value)
            out[f"{panel['title']} [{target['refId']}]"] = expr
    return out
