"""The fake backend's one exception base."""

from __future__ import annotations


class FakeBackendError(Exception):
    """Something the fake backend refuses or cannot do; ``str()`` is one line."""
