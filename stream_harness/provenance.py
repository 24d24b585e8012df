"""What shaped a run's numbers besides its options: package versions and the harness's commit.

``run.json`` records both (``versions``, ``git``), so two runs that disagree
can be told apart by their environment before anyone suspects the code.  The
packages are the ones on the measuring path: Locust and gevent (the load
process's loop), uvicorn, python-socketio and python-engineio (the fake
backend), orjson (JSON on both sides), numpy, pandas and pyarrow (the
analysis and the result files).

The commit comes from git when the harness runs from a checkout, else from
``STREAM_HARNESS_COMMIT`` (the container image sets it at build time), else
it is unknown (None).
"""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Final, TypedDict

from stream_harness.paths import PACKAGES_ROOT

#: Distributions whose versions shape the measured numbers, as run.json lists them.
MEASURING_PACKAGES: Final = (
    "locust",
    "gevent",
    "uvicorn",
    "python-socketio",
    "python-engineio",
    "orjson",
    "numpy",
    "pandas",
    "pyarrow",
)
#: Set by the container image build (deploy/Dockerfile) where there is no .git.
COMMIT_ENV: Final = "STREAM_HARNESS_COMMIT"
_GIT_TIMEOUT_S: Final = 5.0


class GitState(TypedDict):
    commit: str | None
    dirty: bool | None  # uncommitted changes to tracked files; None when unknown


def package_versions(names: tuple[str, ...] = MEASURING_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(root: Path = PACKAGES_ROOT) -> GitState:
    """The commit the harness code comes from, and whether tracked files differ from it."""
    commit = _git(root, "rev-parse", "--verify", "HEAD")
    if commit:
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
        return {"commit": commit, "dirty": None if status is None else bool(status)}
    return {"commit": os.environ.get(COMMIT_ENV) or None, "dirty": None}
