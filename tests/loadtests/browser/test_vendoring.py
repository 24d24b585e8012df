"""The page's socket.io-client is the npm package's own build, at the version tools/socketio-client pins."""

from __future__ import annotations

import json

from loadtests.browser.page import PAGE_HEADERS, VENDORED_SOCKETIO, page_config, page_html
from tests.support import REPO

TOOL = REPO / "tools" / "socketio-client"


def test_the_vendored_build_is_the_pinned_version():
    lock = json.loads((TOOL / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/socket.io-client"]["version"]
    assert pinned.startswith("4.")
    assert VENDORED_SOCKETIO.read_text(encoding="utf-8").startswith(f"/*!\n * Socket.IO v{pinned}\n")
    installed = TOOL / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
    if installed.exists():  # after `make vendor-socketio`: byte for byte the package's file
        assert installed.read_bytes() == VENDORED_SOCKETIO.read_bytes()


def test_the_page_is_one_self_contained_isolated_document():
    html = page_html(page_config("p1", "http://127.0.0.1:1"))
    assert html.count("<script>") == 3 and "<script src" not in html  # nothing fetched from anywhere
    assert '"bridge": "http://127.0.0.1:1"' in html and '"chunk": 0' in html
    assert PAGE_HEADERS["cross-origin-embedder-policy"] == "require-corp"
