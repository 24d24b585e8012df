"""The lock files: every package pinned with hashes, covering pyproject.toml, installed as pinned.

``make install`` installs ``requirements/test.txt`` with ``pip --require-hashes``;
the container image installs ``requirements/runtime.txt``.  A fresh clone's
install is checked end to end in ``tests/cli/test_run.py``.
"""

from __future__ import annotations

import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from stream_harness.provenance import MEASURING_PACKAGES
from tests.support import REPO
from tests.support.lockfile import RUNTIME_LOCK, TEST_LOCK, pinned_versions, read_lock

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("lock", [TEST_LOCK, RUNTIME_LOCK], ids=lambda p: p.name)
def test_every_pin_is_exact_and_hashed(lock) -> None:
    pins = read_lock(lock)
    assert pins, f"{lock} is empty"
    for pin in pins:
        (spec,) = pin.requirement.specifier
        assert spec.operator == "==", pin.requirement
        assert pin.hashes and all(h.startswith("sha256:") for h in pin.hashes), pin.requirement


def _satisfied(requirements: list[str], lock) -> list[str]:
    """The requirements (for this interpreter) that the lock's pins do not satisfy."""
    pins = pinned_versions(lock)
    missing = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": "test"}):
            continue
        version = pins.get(canonicalize_name(req.name))
        if version is None or version not in req.specifier:
            missing.append(f"{text} (locked: {version})")
    return missing


def test_test_lock_covers_dependencies_and_test_extras() -> None:
    wanted = PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]
    assert not _satisfied(wanted, TEST_LOCK), "pyproject.toml changed without `make lock`"


def test_runtime_lock_covers_dependencies_without_test_tools() -> None:
    assert not _satisfied(PROJECT["dependencies"], RUNTIME_LOCK), "pyproject.toml changed without `make lock`"
    runtime = pinned_versions(RUNTIME_LOCK)
    for tool in ("mypy", "ruff", "uv"):  # (playwright is the runtime's: the browser users drive Chromium with it)
        assert tool not in runtime, tool


def test_runtime_lock_pins_the_same_versions_as_the_test_lock() -> None:
    runtime, full = pinned_versions(RUNTIME_LOCK), pinned_versions(TEST_LOCK)
    differ = {name: (v, full.get(name)) for name, v in runtime.items() if full.get(name) != v}
    assert not differ, differ


def test_this_environment_has_the_locked_versions() -> None:
    """What `make install` put here is exactly the lock (the measuring packages first)."""
    locked = pinned_versions(TEST_LOCK)
    for name in MEASURING_PACKAGES:
        assert metadata.version(name) == locked[canonicalize_name(name)], name
    wrong = {}
    for name, version in locked.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (installed, version)
    assert not wrong, f"installed vs locked (run `make install`): {wrong}"
