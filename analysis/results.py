"""Result sets on disk: written as they are measured, committed atomically, read back in batches.

A result set (``docs/RESULTS.md``) is a directory:

- ``run.json``         run metadata (``stream_harness.contract.summary.RunSummary`` plus more)
- ``streams.parquet``  one row per stream (``stream_harness.contract.schema.STREAM_COLUMNS``)
- ``events/``          the events (``EVENT_COLUMNS``) as parquet part files; every row
                       group holds whole streams, grouped by stream in arrival order
- ``summary.json``     computed by the analysis

Result sets written before events were sharded have one ``events.parquet``
instead of ``events/``; every reader here takes both.

Writing (:class:`ResultSetWriter`): a run appends batches of finished streams
to part files in a staging directory inside the target (``.partial-<run id>``)
while it runs, so memory never grows with the events; ``commit`` adds
``streams.parquet``, ``run.json`` and ``summary.json`` and moves the set into
place, replacing an older set of the same directory as a whole.

Every problem a reader can hit (missing directory or file, corrupt parquet or
JSON, missing columns, events of streams the table lacks) raises
:class:`ResultsError` with a one-line message; the CLI prints it and exits 2.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.errors import AnalysisError
from analysis.frames import coerce_events, coerce_streams
from stream_harness.contract.schema import EVENT_DTYPES

RUN_FILE: Final = "run.json"
STREAMS_FILE: Final = "streams.parquet"
EVENTS_DIR: Final = "events"
LEGACY_EVENTS_FILE: Final = "events.parquet"
SUMMARY_FILE: Final = "summary.json"
#: A part file is closed and a new one started after this many events (parts are
#: what the analysis shares out over worker processes: small enough to balance).
PART_MAX_EVENTS: Final = 2_000_000
#: Events per batch a reader yields (whole streams: a batch may be a little larger).
READ_BATCH_EVENTS: Final = 1_000_000
STAGING_PREFIX: Final = ".partial-"
_EVENT_SCHEMA: Final = pa.schema([(name, pa.from_numpy_dtype(np.dtype(dtype))) for name, dtype in EVENT_DTYPES.items()])
#: Parquet settings of the events: zstd, and byte-stream-split floats (times compress far better).
_EVENT_WRITE_OPTIONS: Final[dict[str, Any]] = {
    "compression": "zstd",
    "use_dictionary": ["kind"],
    "use_byte_stream_split": ["t_ms", "emit_ms"],
}


class ResultsError(AnalysisError):
    """A results directory that cannot be used; ``str()`` is one line for the user."""


@dataclass(frozen=True)
class Results:
    """The raw data of one run, in memory (small runs, tests)."""

    directory: Path
    run: dict[str, Any]
    streams: pd.DataFrame
    events: pd.DataFrame


# --------------------------------------------------------------------------- writing


class ResultSetWriter:
    """A result set under construction, staged inside its target directory.

    ``append`` writes a batch of streams and their events (events as one row
    group of the current part file); ``commit`` completes and installs the set;
    ``abort`` removes the staging.
    """

    def __init__(self, directory: str | Path, run_id: str, *, part_prefix: str = "part") -> None:
        self.directory = Path(directory)
        self.staging = self.directory / f"{STAGING_PREFIX}{run_id}"
        self._part_prefix = part_prefix
        self._events_dir = self.staging / EVENTS_DIR
        self._events_dir.mkdir(parents=True, exist_ok=True)
        self._part: pq.ParquetWriter | None = None
        self._part_events = 0
        self._parts = 0
        self._streams: pq.ParquetWriter | None = None

    def append(self, streams: pd.DataFrame, events: pd.DataFrame) -> None:
        """Write stream rows and events (events grouped by stream, whole streams only)."""
        if len(events):
            if self._part is None or self._part_events >= PART_MAX_EVENTS:
                self._next_part()
            assert self._part is not None
            self._part.write_table(events_table(events), row_group_size=max(len(events), 1))
            self._part_events += len(events)
        if len(streams):
            table = pa.Table.from_pandas(coerce_streams(streams), preserve_index=False)
            if self._streams is None:
                self._streams = pq.ParquetWriter(self.staging / STREAMS_FILE, table.schema, compression="zstd")
            self._streams.write_table(table.cast(self._streams.schema))

    def _next_part(self) -> None:
        if self._part is not None:
            self._part.close()
        path = self._events_dir / f"{self._part_prefix}-{self._parts:05d}.parquet"
        self._parts += 1
        self._part = pq.ParquetWriter(path, _EVENT_SCHEMA, **_EVENT_WRITE_OPTIONS)
        self._part_events = 0

    def close_parts(self) -> None:
        for writer in (self._part, self._streams):
            if writer is not None:
                writer.close()
        self._part = self._streams = None

    def streams(self) -> pd.DataFrame:
        """Every stream row appended so far, by stream key (closes the part files)."""
        self.close_parts()
        path = self.staging / STREAMS_FILE
        if not path.exists():
            return coerce_streams(pd.DataFrame({"transport": [], "endpoint": [], "stream_id": []}))
        streams = _read_frame(path, coerce_streams)
        return streams.sort_values("stream_key", kind="stable", ignore_index=True)

    def commit(self, run: Mapping[str, Any], summary: Mapping[str, Any] | None, streams: pd.DataFrame) -> Path:
        """Complete the set with ``streams`` (the final table), run.json and summary.json; install it.

        ``summary`` None installs the raw data alone (a summary that could not
        be built; ``stream-harness report`` builds it again), and removes a
        summary.json an earlier set left in the directory.
        """
        self.close_parts()
        _parquet_writer(coerce_streams(streams))(self.staging / STREAMS_FILE)
        _json_writer(dict(run))(self.staging / RUN_FILE)
        names = [EVENTS_DIR, STREAMS_FILE, RUN_FILE]
        if summary is not None:
            _json_writer(dict(summary))(self.staging / SUMMARY_FILE)
            names.append(SUMMARY_FILE)
        else:
            (self.directory / SUMMARY_FILE).unlink(missing_ok=True)
        install_set(self.staging, self.directory, names)
        shutil.rmtree(self.staging, ignore_errors=True)
        return self.directory

    def abort(self) -> None:
        self.close_parts()
        shutil.rmtree(self.staging, ignore_errors=True)


def events_table(events: pd.DataFrame) -> pa.Table:
    coerced = coerce_events(events)
    return pa.Table.from_arrays([pa.array(coerced[name].to_numpy()) for name in EVENT_DTYPES], schema=_EVENT_SCHEMA)


def install_set(staging: Path, directory: Path, names: Sequence[str]) -> None:
    """Move ``names`` from ``staging`` into ``directory``, replacing what is there.

    Everything is written before the first rename; the renames (microseconds)
    are the only window in which a reader could see old and new files side by
    side.  A legacy ``events.parquet`` beside a new ``events/`` is removed.
    """
    aside = directory / f".replaced-{staging.name}"
    aside.mkdir(exist_ok=True)
    try:
        for name in names:
            target = directory / name
            if target.is_dir() and not target.is_symlink():
                os.replace(target, aside / name)
            os.replace(staging / name, target)
        legacy = directory / LEGACY_EVENTS_FILE
        if EVENTS_DIR in names and legacy.exists():
            legacy.unlink()
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def write_results(
    directory: str | Path, run: Mapping[str, Any], streams: pd.DataFrame, events: pd.DataFrame
) -> dict[str, Any]:
    """Write a whole result set from in-memory frames (tests, tools); returns the summary."""
    from analysis.accumulate import RunAccumulator
    from analysis.summary import build_summary

    writer = ResultSetWriter(directory, str(run.get("id") or "run"))
    try:
        accumulator = RunAccumulator(warmup_until=warmup_until(run))
        streams = coerce_streams(streams)
        events = _sorted_events(coerce_events(events))
        filled = accumulator.add_batch(streams, events)
        writer.append(filled, events)
        summary = dict(build_summary(run, filled, accumulator.aggregates))
        writer.commit(run, summary, filled)
    except BaseException:
        writer.abort()
        raise
    return summary


def warmup_until(run: Mapping[str, Any]) -> float:
    """Epoch s before which streams are warm-up (``options.warmup_s`` after the run start)."""
    from datetime import datetime

    warmup = (run.get("options") or {}).get("warmup_s")
    started = run.get("started_at")
    if not isinstance(warmup, (int, float)) or warmup <= 0 or not started:
        return -math.inf
    try:
        return datetime.fromisoformat(str(started)).timestamp() + float(warmup)
    except ValueError:
        return -math.inf


def _sorted_events(events: pd.DataFrame) -> pd.DataFrame:
    keys = events["stream_key"].to_numpy()
    if keys.size < 2 or bool(np.all(keys[1:] >= keys[:-1])):
        return events
    return events.sort_values("stream_key", kind="stable", ignore_index=True)


# --------------------------------------------------------------------------- reading


def check_directory(directory: str | Path) -> Path:
    """``directory`` if it holds a result set, else ResultsError saying what is missing."""
    directory = Path(directory)
    if not directory.exists():
        raise ResultsError(f"{directory}: no such results directory")
    if not directory.is_dir():
        raise ResultsError(f"{directory}: not a directory")
    missing = [name for name in (RUN_FILE, STREAMS_FILE) if not (directory / name).is_file()]
    if not _has_events(directory):
        missing.append(f"{EVENTS_DIR}/ (or {LEGACY_EVENTS_FILE})")
    if missing:
        raise ResultsError(f"{directory}: incomplete results, missing {', '.join(missing)}")
    return directory


def is_result_set(directory: Path) -> bool:
    """Whether ``directory`` holds the raw files of a result set."""
    return (directory / RUN_FILE).is_file() and (directory / STREAMS_FILE).is_file() and _has_events(directory)


def _has_events(directory: Path) -> bool:
    """An events directory (empty when no stream received anything) or the legacy file."""
    return (directory / EVENTS_DIR).is_dir() or (directory / LEGACY_EVENTS_FILE).is_file()


def copy_raw(source: Path, target: Path) -> None:
    """Copy a result set's raw files (run.json, streams.parquet, the events) into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in (RUN_FILE, STREAMS_FILE):
        shutil.copy2(source / name, target / name)
    if (source / EVENTS_DIR).is_dir():
        shutil.copytree(source / EVENTS_DIR, target / EVENTS_DIR, dirs_exist_ok=True)
    elif (source / LEGACY_EVENTS_FILE).is_file():
        shutil.copy2(source / LEGACY_EVENTS_FILE, target / LEGACY_EVENTS_FILE)


def event_parts(directory: Path) -> list[Path]:
    """The set's event files in order (``events/*.parquet``, or the legacy single file)."""
    shards = directory / EVENTS_DIR
    if shards.is_dir():
        return sorted(shards.glob("*.parquet"))
    legacy = directory / LEGACY_EVENTS_FILE
    return [legacy] if legacy.is_file() else []


def read_run(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / RUN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ResultsError(f"{path}: not valid JSON ({_first_line(error)})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def read_streams(directory: str | Path) -> pd.DataFrame:
    path = Path(directory) / STREAMS_FILE
    streams = _read_frame(path, coerce_streams)
    keys = streams["stream_key"].to_numpy()
    if not np.array_equal(keys, np.arange(len(streams))):
        raise ResultsError(f"{path}: stream_key is not the row index")
    return streams


def iter_event_batches(
    directory: str | Path,
    batch_events: int = READ_BATCH_EVENTS,
    keys: Sequence[int] | None = None,
    parts: Sequence[Path] | None = None,
) -> Iterator[pd.DataFrame]:
    """The set's events in batches of whole streams (optionally only streams ``keys``, or ``parts``).

    Within a file the events of one stream are contiguous; a stream cut by a
    read batch is carried over to the next batch.
    """
    wanted = None if keys is None else np.unique(np.asarray(keys, dtype=np.int64))
    for path in parts if parts is not None else event_parts(Path(directory)):
        carry: pd.DataFrame | None = None
        try:
            parquet = pq.ParquetFile(path)
            missing = [name for name in EVENT_DTYPES if name not in parquet.schema_arrow.names]
            if missing:
                raise ResultsError(f"{path}: missing column {missing[0]!r}")
            groups = _row_groups_with(parquet, wanted)
            batches = parquet.iter_batches(batch_size=batch_events, row_groups=groups, columns=list(EVENT_DTYPES))
            for batch in batches:
                frame = _events_frame(batch)
                if wanted is not None:
                    frame = frame[np.isin(frame["stream_key"].to_numpy(), wanted)]
                if carry is not None and len(carry):
                    frame = pd.concat([carry, frame], ignore_index=True)
                if not len(frame):
                    carry = None
                    continue
                stream_keys = frame["stream_key"].to_numpy()
                if stream_keys.size > 1 and np.any(stream_keys[1:] < stream_keys[:-1]):
                    raise ResultsError(f"{path}: events are not grouped by stream")
                last = int(np.searchsorted(stream_keys, stream_keys[-1]))
                carry = frame.iloc[last:].reset_index(drop=True)
                if last:
                    yield frame.iloc[:last].reset_index(drop=True)
        except (OSError, pa.ArrowException, ValueError) as error:
            raise ResultsError(f"{path}: unreadable parquet ({_first_line(error)})") from None
        if carry is not None and len(carry):
            yield carry


def _row_groups_with(parquet: pq.ParquetFile, keys: np.ndarray | None) -> list[int]:
    """Row groups that may hold any of ``keys`` (all of them without keys), by their stream_key statistics."""
    every = list(range(parquet.num_row_groups))
    if keys is None:
        return every
    column = parquet.schema_arrow.get_field_index("stream_key")
    chosen = []
    for group in every:
        stats = parquet.metadata.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max or bool(np.any((keys >= stats.min) & (keys <= stats.max))):
            chosen.append(group)
    return chosen


def load_results(directory: str | Path) -> Results:
    """The whole result set in memory (for small runs: tests, tools)."""
    directory = check_directory(directory)
    run = read_run(directory)
    streams = read_streams(directory)
    parts = list(iter_event_batches(directory))
    events = (
        pd.concat(parts, ignore_index=True)
        if parts
        else coerce_events(pd.DataFrame({name: np.empty(0, dtype=dtype) for name, dtype in EVENT_DTYPES.items()}))
    )
    event_keys = events["stream_key"].to_numpy()
    if event_keys.size and (event_keys.min() < 0 or event_keys.max() >= len(streams)):
        raise ResultsError(f"{directory}: events refer to streams that {STREAMS_FILE} does not have (partial write?)")
    return Results(directory=directory, run=run, streams=streams, events=_sorted_events(events))


def _events_frame(batch: pa.RecordBatch) -> pd.DataFrame:
    return coerce_events(pd.DataFrame({name: batch.column(name).to_numpy() for name in EVENT_DTYPES}, copy=False))


def _read_frame(path: Path, coerce: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
        frame = table.to_pandas()
    except (OSError, pa.ArrowException, ValueError) as error:
        raise ResultsError(f"{path}: unreadable parquet ({_first_line(error)})") from None
    try:
        return coerce(frame)
    except KeyError as error:
        raise ResultsError(f"{path}: missing column {error.args[0]!r}") from None
    except (ValueError, TypeError, pa.ArrowException) as error:
        raise ResultsError(f"{path}: columns of the wrong type ({_first_line(error)})") from None


# --------------------------------------------------------------------------- atomic files


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON with NaN/inf written as null, replaced atomically."""
    write_atomic(path, _json_writer(data))


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then move it into place."""
    write_atomic_set([(path, write)])


def write_atomic_set(files: list[tuple[Path, Callable[[Path], Any]]]) -> None:
    """Write every file to a temporary name first, then move them all into place.

    A set, because a run's files belong together: renamed one by one as each
    was written, an interrupt half-way would leave a new run.json beside old
    parquet files.  Staged, an interrupt leaves the old set untouched, and the
    renames (microseconds, in the order given) are the only window.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, write in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(handle)
            staged.append((Path(name), path))
            write(Path(name))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise


def _json_writer(data: Any) -> Callable[[Path], Any]:
    text = json.dumps(json_safe(data), indent=2, sort_keys=False) + "\n"
    return lambda tmp: tmp.write_text(text, encoding="utf-8")


def _parquet_writer(frame: pd.DataFrame) -> Callable[[Path], Any]:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return lambda tmp: pq.write_table(table, tmp, compression="zstd")


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as None and numpy scalars as Python numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
