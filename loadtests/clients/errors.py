"""The protocol clients' one exception base."""

from __future__ import annotations

from loadtests.errors import LoadtestError


class ClientError(LoadtestError):
    """A client could not do what it was asked (connect, handshake, a side request)."""
