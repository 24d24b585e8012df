"""Socket.io emit times, kept per task for ``GET /api/_harness/emit-times/{listener}``.

Socket.io chunks are bare strings, so emit times cannot ride inside them
without changing what a protocol-faithful client sees.  Instead every message
on a task's listener gets its wall-clock emit time appended here (index =
message index on the listener, the final ``{"end": true}`` included), and the
load user fetches them after the task.

Bounded: at most ``max_tasks`` tasks and about ``max_timestamps`` stored floats
(8 bytes each); the least recently opened or read tasks are evicted first.
A task that is still running keeps appending to its record even if evicted;
the memory goes when the task ends.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(slots=True)
class EmitRecord:
    listener: str
    chunks: int  # chunks the task promised (if not cut short)
    seed: int
    ts: array = field(default_factory=lambda: array("d"))
    done: bool = False

    def to_json(self) -> dict:
        return {
            "listener": self.listener,
            "chunks": self.chunks,
            "done": self.done,
            "seed": self.seed,
            "ts": self.ts.tolist(),
        }


class EmitLog:
    """LRU of EmitRecords bounded by task count and total timestamps."""

    def __init__(self, max_tasks: int = 5000, max_timestamps: int = 5_000_000) -> None:
        self.max_tasks = max_tasks
        self.max_timestamps = max_timestamps
        self._records: OrderedDict[str, EmitRecord] = OrderedDict()
        self._stored = 0  # timestamps held by finished records

    def open(self, listener: str, chunks: int, seed: int) -> EmitRecord:
        record = EmitRecord(listener, chunks, seed)
        self._records[listener] = record
        self._evict()
        return record

    def finish(self, record: EmitRecord) -> None:
        record.done = True
        if self._records.get(record.listener) is record:
            self._stored += len(record.ts)
            self._evict()

    def get(self, listener: str) -> EmitRecord | None:
        record = self._records.get(listener)
        if record is not None:
            self._records.move_to_end(listener)
        return record

    def _evict(self) -> None:
        records = self._records
        while records and (len(records) > self.max_tasks or self._stored > self.max_timestamps):
            _, old = records.popitem(last=False)
            if old.done:
                self._stored -= len(old.ts)

    def __len__(self) -> int:
        return len(self._records)

    @property
    def stored_timestamps(self) -> int:
        return self._stored
