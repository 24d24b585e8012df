"""The result-set writer: a child process of the load process (or master) that owns the disk.

Why a process of its own: folding a batch of streams (per-stream percentiles,
1% log histograms) and encoding it as parquet costs about a microsecond per
event.  Done in the load process, that work would block its gevent loop for
tens of milliseconds at a time at full load, delaying the very timestamps it
measures.  So the load process only hands finished records over a pipe
(raw ``array`` bytes, no per-event objects: ``loadtests.results.wire``), and
this process folds and writes them; the load process's memory does not grow
with the events, nor does this one's (one batch at a time).  It imports all
its code when it starts: the end of an hour-long run does not depend on the
files on disk by then.

Protocol on stdin: frames of a 4-byte big-endian length and a msgpack map:

- ``{"op": "records", "records": [...], "byteorder": "little"}``: a batch of
  finished streams in the wire format;
- ``{"op": "finish", "run": {...}}``: write ``streams.parquet``, ``run.json``
  (``run`` plus ``git``, the harness's commit as this process found it when
  it started: the load process starts no git of its own, see
  ``loadtests.children``) and ``summary.json``, install the set, answer one frame
  ``{"summary": {...}, "streams": n, "failed": n}`` (or ``{"error": "..."}``)
  on stdout, exit.  A summary that cannot be built still installs the raw
  data (run.json, streams.parquet, events/) and answers the error;

End of input without ``finish`` (the load process died) keeps the staging
directory with every batch written so far.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

import msgpack

from analysis.accumulate import RunAccumulator
from analysis.frames import frames_from_records
from analysis.results import ResultSetWriter, json_safe
from analysis.summary import build_summary
from loadtests.errors import LoadtestError
from loadtests.results.heap import release_free_heap
from loadtests.results.wire import decode_records
from stream_harness.provenance import GitState, git_state

HEADER: Final = struct.Struct(">I")
#: A batch is folded and written once it holds this many events, or once its
#: oldest stream has waited this long (so a crash loses at most that much).
FOLD_EVENTS: Final = 250_000
FOLD_AFTER_S: Final = 5.0


def read_frames(stream: IO[bytes]) -> Iterator[dict[str, Any]]:
    while True:
        header = stream.read(HEADER.size)
        if len(header) < HEADER.size:
            return
        (size,) = HEADER.unpack(header)
        body = stream.read(size)
        if len(body) < size:
            return
        yield msgpack.unpackb(body, raw=False)


def write_frame(stream: IO[bytes], message: dict[str, Any]) -> None:
    body = msgpack.packb(message, use_bin_type=True)
    stream.write(HEADER.pack(len(body)) + body)
    stream.flush()


class Writer:
    """Folds batches of records into a staged result set (``analysis.results.ResultSetWriter``)."""

    def __init__(self, directory: Path, run_id: str, warmup_until: float, git: GitState | None = None) -> None:
        self.git = git
        self.accumulator = RunAccumulator(warmup_until=warmup_until)
        self.files = ResultSetWriter(directory, run_id)
        self.next_key = 0
        self.pending: list[Any] = []
        self.pending_events = 0
        self.pending_since = 0.0

    def add(self, items: list[dict[str, Any]], byteorder: str) -> None:
        records = decode_records(items, byteorder)
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.extend(records)
        self.pending_events += sum(record.n_events for record in records)
        if self.pending_events >= FOLD_EVENTS or time.monotonic() - self.pending_since >= FOLD_AFTER_S:
            self.fold()

    def fold(self) -> None:
        if not self.pending:
            return
        streams, events = frames_from_records(self.pending, first_key=self.next_key)
        self.next_key += len(self.pending)
        self.pending, self.pending_events = [], 0
        filled = self.accumulator.add_batch(streams, events)
        self.files.append(filled, events)

    def finish(self, run: dict[str, Any]) -> dict[str, Any]:
        if self.git is not None:
            run = {**run, "git": self.git}
        self.fold()
        streams = self.files.streams()
        try:
            summary = dict(build_summary(run, streams, self.accumulator.aggregates))
        except Exception as error:  # what was measured is kept: the raw data, without a summary
            self.files.commit(run, None, streams)
            raise SummaryError(
                f"{one_line(error)} (the raw data is written; `stream-harness report DIR` builds the summary again)"
            ) from error
        self.files.commit(run, summary, streams)
        failed = int((streams["status"] == "failed").sum()) if len(streams) else 0
        return {"summary": json_safe(summary), "streams": len(streams), "failed": failed}


class SummaryError(LoadtestError):
    """The run's summary could not be built; the raw data is installed without it."""


def one_line(error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.results.writer")
    parser.add_argument("directory", type=Path)
    parser.add_argument("run_id")
    parser.add_argument("--warmup-until", type=float, default=float("-inf"))
    args = parser.parse_args(argv)
    # The summary's statistical tests (analysis.parity, analysis.compare) import
    # scipy.stats on first use, so that the load processes, which import this
    # module for its framing, stay small.  The writer process takes it now:
    # finishing a run then loads no code from disk and does not jump by the
    # ~60 MB scipy.stats costs (measured: 111 -> 169 MB).
    importlib.import_module("scipy.stats")
    # The load process decides when to stop; a Ctrl-C sent to the whole
    # process group must not kill the writer before it has written the set.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    writer = Writer(args.directory, args.run_id, args.warmup_until, git_state())
    failure: str | None = None  # the first error: later batches are read and dropped, finish reports it
    for message in read_frames(stdin):
        op = message.get("op")
        if op == "records":
            if failure is None:
                try:
                    writer.add(message["records"], message.get("byteorder", sys.byteorder))
                    release_free_heap()
                except Exception as error:
                    failure = one_line(error)
        elif op == "finish":
            if failure is None:
                try:
                    reply = writer.finish(message["run"])
                except Exception as error:  # one line back to the load process, which reports it
                    failure = one_line(error)
            if failure is not None:
                reply = {"error": failure}
            write_frame(stdout, reply)
            return 0 if failure is None else 2
    # the load process went away without finishing: keep what was measured as complete parts
    if failure is None:
        try:
            writer.fold()
            writer.files.close_parts()
        except Exception as error:
            print(f"stream harness result writer: {one_line(error)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
