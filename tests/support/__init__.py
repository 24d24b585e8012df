"""Test and benchmark support: servers that misbehave on purpose, synthetic runs, raw readers.

Nothing here is part of the product; the tests and the self-benchmarks import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: The repository checkout the tests run in.
REPO: Final = Path(__file__).resolve().parents[2]
