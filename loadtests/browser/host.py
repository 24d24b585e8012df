"""The browser helper process: Debian's Chromium driven by Playwright, one page per browser user.

``python -m loadtests.browser.host --chromium PATH [--insecure] [-- CHROMIUM FLAGS...]``

Playwright (asyncio) runs here, apart from the load process (gevent), which
talks to this process over its stdin and stdout, one JSON object per line:

- ``{"op": "open", "page": ID, "url": URL, "config": {...}}`` opens a page in
  a fresh browser context (its own cookies and connections, as a separate
  user's browser) at ``url`` on the backend's origin; the document
  (``loadtests.browser.page``) is fulfilled by Playwright, not fetched, and
  interception is switched off again before the page runs, so none of its
  requests pass through Playwright.  Answer: ``opened`` or ``failed`` (with
  ``detail``);
- ``{"op": "close", "page": ID}`` closes it; answer ``closed``.

On its own it says ``{"op": "ready"}`` once Chromium runs, and
``{"op": "crashed", "page": ID}`` when a page's renderer dies.  Closing
stdin closes the browser and ends the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from playwright.async_api import BrowserContext, Route, async_playwright

from loadtests.browser.page import PAGE_HEADERS, page_html

OPEN_TIMEOUT_MS = 60_000


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve(chromium: str, flags: list[str], insecure: bool) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    contexts: dict[str, BrowserContext] = {}
    tasks: set[asyncio.Task[None]] = set()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, headless=True, args=flags)
        emit({"op": "ready"})

        async def open_page(order: dict[str, Any]) -> None:
            page_id, url = order["page"], order["url"]
            html = page_html(order["config"])
            context = await browser.new_context(
                ignore_https_errors=insecure, service_workers="block", viewport={"width": 800, "height": 600}
            )
            contexts[page_id] = context

            async def fulfill(route: Route) -> None:
                await route.fulfill(status=200, headers=PAGE_HEADERS, body=html)

            def is_page(requested: str) -> bool:
                return requested == url

            try:
                await context.route(is_page, fulfill)
                page = await context.new_page()
                page.on("crash", lambda _page: emit({"op": "crashed", "page": page_id}))
                await page.goto(url, wait_until="load", timeout=OPEN_TIMEOUT_MS)
                await context.unroute(is_page, fulfill)
            except Exception as exc:  # Playwright's errors: say what, keep serving the others
                contexts.pop(page_id, None)
                await context.close()
                emit({"op": "failed", "page": page_id, "detail": f"{type(exc).__name__}: {exc}"[:300]})
                return
            emit({"op": "opened", "page": page_id})

        async def close_page(order: dict[str, Any]) -> None:
            context = contexts.pop(order["page"], None)
            if context is not None:
                await context.close()
            emit({"op": "closed", "page": order["page"]})

        handlers = {"open": open_page, "close": close_page}
        while True:
            line = await reader.readline()
            if not line:
                break
            try:
                order = json.loads(line)
                handler = handlers[order["op"]]
            except (ValueError, KeyError, TypeError):
                print(f"browser host: ignored a bad order {line[:120]!r}", file=sys.stderr)
                continue
            task = asyncio.create_task(handler(order))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        for task in list(tasks):
            task.cancel()
        for context in list(contexts.values()):
            await context.close()
        await browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.browser.host", description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", required=True, help="the Chromium executable")
    parser.add_argument("--insecure", action="store_true", help="accept any TLS certificate")
    parser.add_argument("flags", nargs="*", help="Chromium command-line flags (after --)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.chromium, args.flags, args.insecure))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # the load process reads this one line
        emit({"op": "error", "detail": f"{type(exc).__name__}: {exc}"[:500]})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
