"""release_free_heap: freed memory pinned below the heap's top goes back to the OS."""

from __future__ import annotations

import psutil

from loadtests.results import heap


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def test_this_machine_has_glibc_malloc_trim():
    assert heap._MALLOC_TRIM is not None  # Debian's glibc; elsewhere the call is a no-op


def test_freed_blocks_below_a_live_one_are_returned():
    # 100 kB blocks come from the heap (below glibc's 128 kB mmap threshold);
    # the last one stays alive, so the heap's top cannot shrink by itself.
    blocks = [bytearray(100_000) for _ in range(1500)]
    pinned = blocks[-1]
    del blocks[:-1]
    held = rss_mb()
    heap.release_free_heap()
    released = held - rss_mb()
    assert released > 100, f"only {released:.1f} MB of about 143 MB freed went back"
    assert len(pinned) == 100_000
