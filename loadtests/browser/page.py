"""The page a browser stream user runs: one HTML document, its scripts inlined.

The harness serves it at the backend's own origin (``PAGE_PATH`` there,
fulfilled by Playwright without reaching the backend), so the product's
requests are same-origin as they are for the product's own pages.  The
document carries the vendored npm ``socket.io-client`` (``static/``, see
``VENDORED_SOCKETIO``) and ``static/stream_page.js``, and its configuration
(page id, the bridge's URL, event codes).  It is cross-origin isolated
(COOP + COEP), which gives ``performance.now()`` its fine (5 µs) resolution
instead of 100 µs.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, Final

from stream_harness.contract.kinds import EVENT_CODE_BY_NAME

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
#: socket.io-client's browser build, copied from the npm package (tools/socketio-client pins the version).
VENDORED_SOCKETIO: Final = STATIC_DIR / "socket.io.min.js"
PAGE_SCRIPT: Final = STATIC_DIR / "stream_page.js"
#: Where the page lives on the backend's origin (never requested from the backend itself).
PAGE_PATH: Final = "/__stream_harness/page"
#: Batches of stamps leave the page at least this often (ms).
BATCH_MS: Final = 100
#: The page samples its own event-loop lag this often (ms).
LAG_INTERVAL_MS: Final = 100
#: Response headers of the document: cross-origin isolation.
PAGE_HEADERS: Final = {
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
}


def page_config(page_id: str, bridge_url: str) -> dict[str, Any]:
    """What the page script reads from ``window.STREAM_HARNESS``."""
    return {
        "page": page_id,
        "bridge": bridge_url,
        "kinds": EVENT_CODE_BY_NAME,
        "batchMs": BATCH_MS,
        "lagMs": LAG_INTERVAL_MS,
    }


@cache
def _scripts() -> tuple[str, str]:
    return VENDORED_SOCKETIO.read_text(encoding="utf-8"), PAGE_SCRIPT.read_text(encoding="utf-8")


def page_html(config: dict[str, Any]) -> str:
    """The document, scripts inlined (nothing else to fetch)."""
    socketio, script = _scripts()
    settings = json.dumps(config).replace("</", "<\\/")
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>stream harness page</title></head>'
        '<body><div id="out" style="white-space:pre-wrap;font:14px sans-serif"></div>'
        f"<script>window.STREAM_HARNESS = {settings};</script>"
        f"<script>{socketio}</script>"
        f"<script>{script}</script>"
        "</body></html>"
    )
