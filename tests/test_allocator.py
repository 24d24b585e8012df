"""The allocator the harness's commands start Locust on (stream_harness.allocator)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stream_harness import allocator
from stream_harness.allocator import (
    ALLOCATOR_ENV,
    PRELOADED_ENV,
    Allocator,
    keep_preload_to_myself,
    locust_env,
    mimalloc_library,
    running_allocator,
)
from tests.support import REPO

LIBRARY = "libmimalloc.so.2"


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(allocator, "mimalloc_library", lambda: LIBRARY)
    return LIBRARY


def test_this_machine_has_mimalloc():
    assert mimalloc_library() == LIBRARY  # make install puts Debian's libmimalloc2.0 here


def test_locust_env_preloads_mimalloc_and_marks_the_entry(installed: str):
    env = locust_env({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "LD_PRELOAD": installed, PRELOADED_ENV: installed}


def test_locust_env_keeps_a_preload_that_was_there(installed: str):
    env = locust_env({"LD_PRELOAD": "libfaketime.so.1"})
    assert env["LD_PRELOAD"] == f"{installed} libfaketime.so.1"


def test_locust_env_adds_nothing_when_declined_absent_or_already_there(installed: str, monkeypatch: pytest.MonkeyPatch):
    declined = {ALLOCATOR_ENV: "system"}
    assert locust_env(declined) == declined
    there = {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2.0"}
    assert locust_env(there) == there  # a user's own preload of it is left alone, and not taken out later
    monkeypatch.setattr(allocator, "mimalloc_library", lambda: None)
    assert locust_env({"PATH": "/bin"}) == {"PATH": "/bin"}


def test_keep_preload_to_myself_takes_out_only_the_entry_locust_env_added(installed: str):
    env = locust_env({"LD_PRELOAD": "libfaketime.so.1"})
    keep_preload_to_myself(env)
    assert env == {"LD_PRELOAD": "libfaketime.so.1"}
    alone = locust_env({})
    keep_preload_to_myself(alone)
    assert alone == {}
    users_own = {"LD_PRELOAD": installed}  # no mark: not ours to take out
    keep_preload_to_myself(users_own)
    assert users_own == {"LD_PRELOAD": installed}


def test_running_allocator_reads_the_mapped_libraries(tmp_path: Path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libmimalloc.so.2.0\n")
    assert running_allocator(maps) is Allocator.MIMALLOC
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert running_allocator(maps) is Allocator.SYSTEM
    assert running_allocator(tmp_path / "absent") is Allocator.SYSTEM


CHILD = """
import json, subprocess, sys
from stream_harness.allocator import keep_preload_to_myself, running_allocator
keep_preload_to_myself()
grandchild = subprocess.run(
    [sys.executable, "-c", "from stream_harness.allocator import running_allocator; print(running_allocator())"],
    capture_output=True, text=True, check=True,
)
print(json.dumps({"child": str(running_allocator()), "grandchild": grandchild.stdout.strip()}))
"""


def test_a_process_started_with_locust_env_runs_on_mimalloc_and_its_children_do_not():
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=locust_env(), cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"child": "mimalloc", "grandchild": "system"}
