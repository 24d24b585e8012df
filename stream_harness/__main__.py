"""``python -m stream_harness`` = the ``stream-harness`` command."""

from __future__ import annotations

from stream_harness.cli import main

raise SystemExit(main())
