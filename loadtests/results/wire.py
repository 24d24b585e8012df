"""StreamRecords on the wire between a Locust worker and its master.

A record travels as a plain dict (msgpack, Locust's message encoding); its
per-event ``array`` columns go as ``[typecode, raw bytes]``, so shipping a
10,000-chunk stream costs ~250 kB and creates no per-event Python objects.
Fields are taken from the dataclass itself, so a field added to
:class:`StreamRecord` is shipped without touching this module.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable
from dataclasses import fields
from typing import Any, Final

from loadtests.results.record import StreamRecord

_FIELDS: Final = tuple(f.name for f in fields(StreamRecord))


def encode_records(records: Iterable[StreamRecord]) -> list[dict[str, Any]]:
    """Records as msgpack-friendly dicts; ``array`` columns become ``[typecode, bytes]``."""
    out = []
    for record in records:
        item: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(record, name)
            item[name] = [value.typecode, value.tobytes()] if isinstance(value, array) else value
        out.append(item)
    return out


def decode_records(items: Iterable[dict[str, Any]], byteorder: str = sys.byteorder) -> list[StreamRecord]:
    """Inverse of :func:`encode_records`; byte-swaps columns sent from the other byte order.

    Keys this version does not know are ignored (a newer worker), missing ones
    take the dataclass defaults (an older worker).
    """
    records = []
    for item in items:
        kwargs: dict[str, Any] = {}
        for name in _FIELDS:
            if name not in item:
                continue
            value = item[name]
            if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[1], bytes):
                column = array(value[0])
                column.frombytes(value[1])
                if byteorder != sys.byteorder:
                    column.byteswap()
                value = column
            kwargs[name] = value
        records.append(StreamRecord(**kwargs))
    return records
