"""Where the harness's own files are, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: The directory holding the harness's packages (a checkout or site-packages).
PACKAGES_ROOT: Final = Path(__file__).resolve().parents[1]
#: The Locust entry point of the harness's users.
LOCUSTFILE: Final = PACKAGES_ROOT / "loadtests" / "locustfile.py"
#: The capacity search's load shape, loaded beside LOCUSTFILE (``stream-harness sweep``, the web UI's class picker).
CAPACITY_LOCUSTFILE: Final = PACKAGES_ROOT / "loadtests" / "capacity_locustfile.py"
#: Default home of result sets, relative to the working directory.
RESULTS_ROOT: Final = Path("results")
