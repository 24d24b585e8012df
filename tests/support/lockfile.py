"""Reading the lock files (``requirements/*.txt``, written by ``make lock``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import REPO

TEST_LOCK: Final = REPO / "requirements" / "test.txt"
RUNTIME_LOCK: Final = REPO / "requirements" / "runtime.txt"


@dataclass(frozen=True)
class Pin:
    requirement: Requirement
    hashes: tuple[str, ...]

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    @property
    def version(self) -> str:
        (spec,) = self.requirement.specifier
        return spec.version

    def applies(self) -> bool:
        """Whether this pin is for the running interpreter and platform (its marker holds)."""
        marker = self.requirement.marker
        return marker is None or marker.evaluate()


def read_lock(path: Path) -> list[Pin]:
    """Every ``name==version ; marker`` entry with its ``--hash`` options."""
    text = path.read_text().replace("\\\n", " ")
    pins = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        hashes = tuple(w.removeprefix("--hash=") for w in words if w.startswith("--hash="))
        spec = " ".join(w for w in words if not w.startswith("--hash="))
        pins.append(Pin(Requirement(spec), hashes))
    return pins


def pinned_versions(path: Path) -> dict[str, str]:
    """Canonical name -> version of the pins that apply here."""
    return {pin.name: pin.version for pin in read_lock(path) if pin.applies()}
