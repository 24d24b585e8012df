"""Child processes of a load process, started without running Python in the forked child.

``gevent.subprocess`` forks in Python, so every ``os.register_at_fork`` hook of
the process runs in the child before its ``exec``.  With Locust's ``--otel``,
one such hook (OpenTelemetry's periodic metric reader) starts a thread, which
under gevent switches to the hub: the child then runs the parent's event loop
on the epoll and wake-up descriptors it still shares with the parent, and can
take a wake-up meant for the parent.  Measured: in 4 of 80 four-second
``--otel`` runs (five at a time on 2 cores), the results of the thread-pool
``getaddrinfo`` calls made while the result writer started (every user's
first connect, the clock probe) never reached the parent, and every stream of
the run hung.  The standard library's ``Popen`` is no way out: gevent's patch
replaces its C fork with None.

:class:`ChildProcess` starts the child with ``os.posix_spawnp`` (fork and
exec in C: no hook runs) and watches it with ``gevent.os.fork_and_watch``, so
that waiting for it is cooperative.  The parent's pipe ends are gevent file
objects: reading and writing them waits on the event loop, never blocks it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from typing import IO, Final

import gevent
from gevent import os as gos
from gevent.fileobject import FileObjectPosix

from loadtests.errors import LoadtestError

#: Signals Python ignores that a child should get with their default action (as subprocess's restore_signals).
RESTORED_SIGNALS: Final = (signal.SIGPIPE, signal.SIGXFSZ)


class ChildTimeout(LoadtestError):
    """The child did not exit within the time given."""


class ChildProcess:
    """``argv`` as a child process; ``stdin`` / ``stdout`` are pipes to it when asked for
    (binary, cooperative), else it shares this process's.  Its stderr is this process's."""

    def __init__(self, argv: Sequence[str], *, stdin: bool = False, stdout: bool = False) -> None:
        self.argv = list(argv)
        self.returncode: int | None = None
        self.stdin: IO[bytes] | None = None
        self.stdout: IO[bytes] | None = None
        actions: list[tuple[int, int, int]] = []
        theirs: list[int] = []  # the child's ends, closed here once it has them
        ours: list[int] = []
        try:
            if stdin:
                read_end, write_end = os.pipe()
                theirs.append(read_end)
                ours.append(write_end)
                actions.append((os.POSIX_SPAWN_DUP2, read_end, 0))
            if stdout:
                read_end, write_end = os.pipe()
                theirs.append(write_end)
                ours.append(read_end)
                actions.append((os.POSIX_SPAWN_DUP2, write_end, 1))
            hub_loop = gevent.get_hub().loop
            hub_loop.install_sigchld()
            self.pid: int = gos.fork_and_watch(
                loop=hub_loop,
                ref=True,
                fork=lambda: os.posix_spawnp(
                    self.argv[0], self.argv, os.environ, file_actions=actions, setsigdef=RESTORED_SIGNALS
                ),
            )
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        if stdin:
            self.stdin = FileObjectPosix(ours.pop(0), "wb")
        if stdout:
            self.stdout = FileObjectPosix(ours.pop(0), "rb")

    def poll(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        if self.returncode is None:
            pid, status = gos.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit (cooperatively); raises ChildTimeout after ``timeout`` seconds."""
        if self.returncode is None:
            with gevent.Timeout(timeout, ChildTimeout(f"{self.argv[0]} did not exit within {timeout} s")):
                _pid, status = gos.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def close(self, timeout: float) -> int:
        """Close its stdin (its cue to finish), wait up to ``timeout`` s for the exit, then kill it.
        Returns the exit code."""
        if self.stdin is not None and not self.stdin.closed:
            try:
                self.stdin.close()
            except OSError:  # it is gone already: the wait says how it ended
                pass
        try:
            return self.wait(timeout)
        except ChildTimeout:
            self.kill()
            return self.wait()

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
