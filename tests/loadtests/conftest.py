"""Load-process tests share one process: no test inherits another's answer to "is this the fake backend?"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loadtests.clients.backend_kind import forget_backends


@pytest.fixture(autouse=True)
def _fresh_backend_probes() -> Iterator[None]:
    forget_backends()  # loopback servers of earlier tests may have had this port
    yield
    forget_backends()
