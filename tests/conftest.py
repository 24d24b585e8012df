"""Fixtures every test folder shares: one fake backend per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fake_backend.process import BackendProcess, start_backend


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProcess]:
    """The fake backend as a subprocess on a free loopback port, for one test module."""
    with start_backend() as process:
        yield process
