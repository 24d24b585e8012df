"""What a load process loads: its memory is per worker, so the analysis's heavy libraries stay out."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO

#: scipy.stats alone is ~60 MB of RSS; the result writer process loads it, never a load process.
HEAVY = ("scipy", "matplotlib", "duckdb", "polars")


def test_the_locustfile_loads_none_of_the_heavy_analysis_libraries():
    probe = (
        f"import sys, loadtests.locustfile; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout
