"""The stream-latency harness: the ``stream-harness`` command and the contract its parts share.

- ``stream_harness.contract``: names and layouts that the fake backend, the
  load users and the analysis agree on (endpoint paths, enums, the stream
  record's columns, the typed ``summary.json``).
- ``stream_harness.cli``: the ``stream-harness`` command, one subcommand per
  entry point.
"""

from __future__ import annotations

__version__ = "0.2.0"
