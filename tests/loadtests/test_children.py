"""ChildProcess: children of a gevent process that run no Python between fork and exec."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gevent
import pytest

from loadtests.children import ChildProcess, ChildTimeout

REVERSE_AND_EXIT_3 = "import sys; data = sys.stdin.buffer.read(); sys.stdout.buffer.write(data[::-1]); sys.exit(3)"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_pipes_carry_more_than_a_pipe_holds_both_ways_and_the_exit_code_comes_back():
    child = ChildProcess([sys.executable, "-c", REVERSE_AND_EXIT_3], stdin=True, stdout=True)
    assert child.stdin is not None and child.stdout is not None
    data = os.urandom(1 << 20)  # 16 pipe buffers: writing and reading must take turns on the loop
    reader = gevent.spawn(child.stdout.read)
    child.stdin.write(data)
    child.stdin.close()
    assert reader.get(timeout=60) == data[::-1]
    assert child.wait(timeout=60) == 3 and child.poll() == 3


def test_a_child_killed_or_too_slow_says_so():
    child = ChildProcess([sys.executable, "-c", "import time; time.sleep(60)"])
    assert child.poll() is None
    with pytest.raises(ChildTimeout, match="did not exit within 0.2 s"):
        child.wait(timeout=0.2)
    child.kill()
    assert child.wait(timeout=30) == -9


def test_close_lets_a_child_finish_on_end_of_input_and_kills_one_that_does_not():
    finishing = ChildProcess([sys.executable, "-c", REVERSE_AND_EXIT_3], stdin=True, stdout=True)
    assert finishing.close(timeout=60) == 3
    deaf = ChildProcess([sys.executable, "-c", "import time; time.sleep(60)"], stdin=True)
    assert deaf.close(timeout=0.2) == -9


def test_a_missing_program_raises_and_leaves_no_descriptor_open():
    before = open_fds()
    with pytest.raises(FileNotFoundError):
        ChildProcess(["/nonexistent/program"], stdin=True, stdout=True)
    assert open_fds() == before


FORK_HOOK_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()
    import os
    import subprocess
    import sys

    from loadtests.children import ChildProcess

    marker = sys.argv[2]
    os.register_at_fork(after_in_child=lambda: open(marker, "a").write("a hook ran in the child\\n"))
    if sys.argv[1] == "children":
        ChildProcess(["true"]).wait(timeout=30)
    else:
        subprocess.Popen(["true"]).wait(timeout=30)  # gevent's, after patch_all
    """
)


@pytest.mark.parametrize(("spawner", "hook_runs"), [("children", False), ("gevent.subprocess", True)])
def test_no_at_fork_hook_runs_in_the_child(spawner: str, hook_runs: bool, tmp_path: Path):
    # (a hook that starts a thread, as OpenTelemetry's metric reader does, runs the
    # parent's gevent loop in the forked child; a fresh interpreter, as hooks stay registered)
    marker = tmp_path / "marker"
    done = subprocess.run(
        [sys.executable, "-c", FORK_HOOK_SCRIPT, spawner, str(marker)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert marker.exists() is hook_runs
