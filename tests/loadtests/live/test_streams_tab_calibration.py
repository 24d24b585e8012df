"""The Streams tab's calibration line, drawn by its script in a real (headless) Chromium.

The tab's script (``loadtests/live/static/streams_tab.js``) is loaded into a
page that has only what it looks for (the Streams table's header) and reads
a ``streams/live.json`` the test serves: one line per transport read by both
kinds of client, saying whether the protocol clients agree with the browser,
and nothing for a transport without browser users.  (The whole tab, in
Locust's web UI, is tests/loadtests/live/test_webui_browser.py.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from analysis.calibration import AGREE_LINE
from loadtests.browser.chromium import CHROMIUM, LAUNCH_ARGS
from tests.support import REPO

ORIGIN = "http://streams-tab.test"
PAGE = '<html><body><table><thead><tr><th data-sortkey="stalenessP99">x</th></tr></thead></table></body></html>'


def live_json() -> dict[str, Any]:
    verdict = {"verdict": "clean", "reasons": ["fine"]}
    rows = [
        {"transport": t, "endpoint": "chat", "client": c, "buffering": verdict}
        for t, c in (("ndjson", "protocol"), ("ndjson", "browser"), ("socketio", "protocol"))
    ]
    series = {
        t: [{"t": 0, "gap_p99_ms": 5.0, "staleness_p99_ms": 2.0, "chunks_per_s": 10}] for t in ("ndjson", "socketio")
    }
    return {
        "generated_at": 1.0,
        "reset_at": 0.0,
        "bin_s": 2,
        "harness": {"reported": True, "saturated": False, "processes": {}},
        "rows": rows,
        "series": series,
        "calibration": {"ndjson": {"agree": True, "line": AGREE_LINE}},
    }


def test_the_tab_shows_one_calibration_line_per_calibrated_transport():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (`make browser` installs it as root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    script = (REPO / "loadtests" / "live" / "static" / "streams_tab.js").read_text(encoding="utf-8")  # no Locust import
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=list(LAUNCH_ARGS))
        try:
            page = browser.new_page()
            page.route(f"{ORIGIN}/", lambda route: route.fulfill(body=PAGE, content_type="text/html"))
            page.route(
                f"{ORIGIN}/streams/live.json",
                lambda route: route.fulfill(body=json.dumps(live_json()), content_type="application/json"),
            )
            page.goto(f"{ORIGIN}/")
            page.add_script_tag(content=script)
            line = page.locator('.stream-harness-calibration[data-transport="ndjson"]')
            line.wait_for(timeout=10_000)
            assert line.inner_text() == AGREE_LINE and line.get_attribute("data-agree") == "true"
            assert page.locator('.stream-harness-calibration[data-transport="socketio"]').count() == 0
            browser_reasons = page.locator('.stream-harness-reasons[data-client="browser"]')
            assert "chat (browser)" in browser_reasons.inner_text()
        finally:
            browser.close()
