"""The load side's one exception base (its sub-packages derive theirs from it)."""

from __future__ import annotations


class LoadtestError(Exception):
    """A problem of the load users or their run; ``str()`` is one line for the user."""
