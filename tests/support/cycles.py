"""Which objects of given types a piece of code left for the cycle collector."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def left_in_cycles(run: Callable[[], T], *types: type) -> tuple[T, list[Any]]:
    """Run ``run`` with the cycle collector off; its result and the objects of ``types``
    that only the collector would have freed (reference counting did not)."""
    gc.collect()
    gc.disable()
    try:
        result = run()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found = [obj for obj in gc.garbage if isinstance(obj, types)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    return result, found
