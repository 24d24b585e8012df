"""``stream-harness ui`` (``make ui``): the fake backend plus Locust's web UI on loopback, ready to press Start.

Prints the URL, keeps both running until Ctrl-C, then stops Locust (which
writes the results of a run in progress) and the backend.  Extra arguments go
to Locust, e.g. ``stream-harness ui -- --transport ndjson --chunks 2000``.

:func:`start_web_ui` is the one way the project starts a Locust web UI as a
subprocess (``make ui`` and the browser tests use it): a free loopback port,
ready once the UI answers, stopped on exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fake_backend.process import BackendStartError, start_backend
from stream_harness.allocator import locust_env
from stream_harness.cli.errors import CommandError
from stream_harness.paths import CAPACITY_LOCUSTFILE, LOCUSTFILE, PACKAGES_ROOT

SUMMARY = "fake backend + Locust web UI on loopback (with the Streams tab), ready to press Start"
EXAMPLES = """\
  stream-harness ui
  stream-harness ui --web-port 8089 -- --transport ndjson --chunks 2000
  stream-harness ui --capacity-shape        # pick CapacitySearchShape in the start form: capacity under the SLO
"""


class WebUIError(CommandError):
    """The Locust web UI did not come up; ``str()`` is one line with the cause."""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WebUIProcess:
    """A running ``locust -f loadtests/locustfile.py`` with its web UI on 127.0.0.1."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path | None) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT (Locust writes what it measured), then SIGTERM, then SIGKILL."""
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            self.process.send_signal(sig)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return self.process.wait()

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


def _wait_ready(ui: WebUIProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ui.process.poll() is not None:
            tail = ui.log_tail().strip().splitlines()
            cause = (tail[-1] if tail else "no output") if ui.log_path else "its message is above"
            raise WebUIError(f"locust exited with {ui.process.returncode} before its web UI answered ({cause})")
        try:
            with urllib.request.urlopen(ui.url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise WebUIError(f"the Locust web UI did not answer on {ui.url} within {timeout:g} s")


@contextmanager
def start_web_ui(
    host: str,
    *locust_args: str,
    port: int = 0,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    capacity_shape: bool = False,
) -> Iterator[WebUIProcess]:
    """Run the harness's Locust web UI against ``host`` until the block ends.

    ``port=0`` picks a free loopback port.  Output goes to ``log_path`` (or is
    inherited when None, as ``make ui`` wants).  ``capacity_shape`` adds the
    capacity search's load shape, picked in the start form (Locust's class picker).
    """
    port = port or free_port()
    locustfiles = f"{LOCUSTFILE},{CAPACITY_LOCUSTFILE}" if capacity_shape else str(LOCUSTFILE)
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        locustfiles,
        *(["--class-picker"] if capacity_shape else []),
        "--host",
        host,
        "--web-host",
        "127.0.0.1",
        "--web-port",
        str(port),
        *locust_args,
    ]
    # the subprocess writes to the file while the block runs: closed in the finally below
    log = open(log_path, "wb") if log_path is not None else None  # noqa: SIM115
    try:
        process = subprocess.Popen(
            cmd, cwd=PACKAGES_ROOT, env=locust_env(env), stdout=log, stderr=subprocess.STDOUT if log else None
        )
        ui = WebUIProcess(process, port, log_path)
        try:
            _wait_ready(ui, timeout)
            yield ui
        finally:
            ui.stop()
    finally:
        if log is not None:
            log.close()


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--web-port", type=int, default=0, help="web UI port (default: a free one)")
    p.add_argument("--backend-profile", default="", help="server-wide default profile for the fake backend (JSON)")
    p.add_argument(
        "--capacity-shape",
        action="store_true",
        help="offer the capacity search (CapacitySearchShape) in the start form's class picker",
    )
    p.add_argument("locust_args", nargs="*", help="extra Locust arguments (after --)")


def execute(args: argparse.Namespace) -> int:
    if not 0 <= args.web_port <= 65535:
        raise CommandError("--web-port must be 0..65535")
    env = dict(os.environ)
    if args.backend_profile:
        env["FAKE_BACKEND_PROFILE"] = args.backend_profile
    try:
        with (
            start_backend(env=env) as backend,
            start_web_ui(backend.url, *args.locust_args, port=args.web_port, capacity_shape=args.capacity_shape) as ui,
        ):
            print(
                f"\nLocust web UI: {ui.url}   (fake backend: {backend.url})\n"
                "Open the URL, press Start, watch the Streams tab. Ctrl-C stops both.\n",
                flush=True,
            )
            try:
                ui.process.wait()
            except KeyboardInterrupt:
                # Ctrl-C reached Locust too (same process group): give it time to
                # write the results of a run in progress; the with-blocks do the rest.
                try:
                    ui.process.wait(20)
                except (subprocess.TimeoutExpired, KeyboardInterrupt):
                    pass
    except KeyboardInterrupt:
        pass
    except BackendStartError as exc:
        raise CommandError(str(exc)) from None
    return 0
