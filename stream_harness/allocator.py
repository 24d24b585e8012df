"""The C allocator the harness's Locust processes run on: mimalloc when it is installed.

A Locust process of the harness allocates and frees every stream's event
columns (arrays that grow by reallocation) and, as a worker, a message of
raw column bytes every second.  On glibc's malloc a worker's RSS settles
1-2.4 MB higher over its first minutes with nothing held: Python's
allocations stay flat, no C allocation site grows with the run (heaptrack),
and the growth is glibc's main heap.  On mimalloc it settles about half as
high.  ``docs/PERFORMANCE.md`` ("Allocator") has the side-by-side
runs.

The harness's commands that start Locust (``stream-harness run``, ``ui``,
``sweep``, the benchmarks) pass :func:`locust_env`: mimalloc preloaded
(``LD_PRELOAD``) when the shared library is installed (Debian's
``libmimalloc2.0``; ``make install`` and the container image install it).
``STREAM_HARNESS_ALLOCATOR=system`` keeps the C library's malloc.  A Locust
process calls :func:`keep_preload_to_myself` when it starts, so that what it
spawns (the result writer, a browser) runs on the C library's malloc as
before; Locust's ``--processes`` forks, so its workers keep mimalloc.
"""

from __future__ import annotations

import ctypes.util
import os
from collections.abc import Mapping, MutableMapping
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Final

#: Environment variable that chooses the allocator (values: :class:`Allocator`).
ALLOCATOR_ENV: Final = "STREAM_HARNESS_ALLOCATOR"
#: Set beside ``LD_PRELOAD`` to the entry :func:`locust_env` added to it.
PRELOADED_ENV: Final = "STREAM_HARNESS_PRELOADED"


class Allocator(StrEnum):
    MIMALLOC = "mimalloc"
    SYSTEM = "system"  # the C library's malloc


@cache
def mimalloc_library() -> str | None:
    """The mimalloc shared library's name as the dynamic loader finds it (None: not installed)."""
    return ctypes.util.find_library("mimalloc")


def locust_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with mimalloc preloaded, when installed and not declined."""
    env = dict(os.environ if base is None else base)
    if env.get(ALLOCATOR_ENV, Allocator.MIMALLOC) == Allocator.SYSTEM:
        return env
    library = mimalloc_library()
    preload = env.get("LD_PRELOAD", "").split()
    if library is None or any("mimalloc" in entry for entry in preload):
        return env
    env["LD_PRELOAD"] = " ".join([library, *preload])
    env[PRELOADED_ENV] = library
    return env


def keep_preload_to_myself(environ: MutableMapping[str, str] = os.environ) -> None:
    """Take the entry :func:`locust_env` added out of ``LD_PRELOAD``: this process keeps it, its children do not."""
    added = environ.pop(PRELOADED_ENV, None)
    if not added:
        return
    rest = [entry for entry in environ.get("LD_PRELOAD", "").split() if entry != added]
    if rest:
        environ["LD_PRELOAD"] = " ".join(rest)
    else:
        environ.pop("LD_PRELOAD", None)


def running_allocator(maps: Path = Path("/proc/self/maps")) -> Allocator:
    """The allocator this process runs on, from the libraries mapped into it."""
    try:
        mapped = maps.read_text()
    except OSError:
        return Allocator.SYSTEM
    return Allocator.MIMALLOC if "libmimalloc" in mapped else Allocator.SYSTEM
