"""``stream-harness backend``: the fake backend alone (its flags are the fake backend's own)."""

from __future__ import annotations

from fake_backend.cli import EXAMPLES, SUMMARY, configure, execute

__all__ = ["EXAMPLES", "SUMMARY", "configure", "execute"]
