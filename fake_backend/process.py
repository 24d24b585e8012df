"""The fake backend as a subprocess: started, announced, stopped.

The harness's commands (``stream-harness run``, ``ui``, ``sweep``), the
benchmarks and the tests all run the backend in a SUBPROCESS: Locust
monkey-patches with gevent, and uvicorn must never run inside such a process.

    with start_backend("--require-auth") as backend:
        httpx.get(backend.url + "/api/health")
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fake_backend.errors import FakeBackendError
from fake_backend.server import READY_PREFIX


class BackendStartError(FakeBackendError):
    """The server process exited or stayed silent instead of announcing its URL."""


@dataclass
class BackendProcess:
    """A running server subprocess; a context manager that stops it on exit."""

    url: str
    process: subprocess.Popen
    stderr_path: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM (graceful), then SIGKILL after ``timeout``; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        try:
            os.unlink(self.stderr_path)
        except FileNotFoundError:
            pass
        return self.process.returncode

    def stderr_text(self) -> str:
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def __enter__(self) -> BackendProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 20) -> BackendProcess:
    """Start any server that prints the ``fake_backend listening on URL`` line."""
    # the server writes to this file after we return: no context manager
    stderr = tempfile.NamedTemporaryFile(  # noqa: SIM115
        "wb", prefix="fake_backend-", suffix=".stderr", delete=False
    )
    process = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        text=True,
        bufsize=1,
    )
    stderr.close()
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # keep draining stdout so the server can never block on it
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="backend-stdout", daemon=True).start()
    backend = BackendProcess("", process, stderr.name)
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            backend.stop()
            raise BackendStartError(f"server did not announce itself within {timeout:g}s: {' '.join(argv)}") from None
        if line is None:
            err = backend.stderr_text().strip().splitlines()
            backend.stop()
            raise BackendStartError(f"server exited with {process.wait()}: {err[-1] if err else 'no output'}")
        if line.startswith(READY_PREFIX):
            backend.url = line[len(READY_PREFIX) :].strip()
            return backend


def start_backend(*cli_args: str, env: Mapping[str, str] | None = None, timeout: float = 20) -> BackendProcess:
    """``python -m fake_backend --host 127.0.0.1 --port 0 *cli_args`` (later flags win)."""
    argv = [sys.executable, "-m", "fake_backend", "--host", "127.0.0.1", "--port", "0", *cli_args]
    return start_server(argv, env=env, timeout=timeout)
