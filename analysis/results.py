"""Results directories on disk: write them atomically, read them back with clear errors.

A results directory is ``run.json`` + ``streams.parquet`` + ``events.parquet``
(raw, see ``stream_harness.contract.schema``) and ``summary.json`` (computed).  Each file is
written to a temporary name in the same directory and moved into place with
``os.replace``, so a reader (or an interrupted writer) never sees half a file.

Every problem a reader can hit (missing directory or file, corrupt parquet or
JSON, missing columns, stream keys that do not match) raises ``ResultsError``
with a one-line message; the CLI prints it and exits 2.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.errors import AnalysisError
from analysis.frames import coerce_events, coerce_streams

RUN_FILE = "run.json"
STREAMS_FILE = "streams.parquet"
EVENTS_FILE = "events.parquet"
SUMMARY_FILE = "summary.json"
RAW_FILES = (RUN_FILE, STREAMS_FILE, EVENTS_FILE)


class ResultsError(AnalysisError):
    """A results directory that cannot be used; ``str()`` is one line for the user."""


@dataclass(frozen=True)
class Results:
    """The raw data of one run."""

    directory: Path
    run: dict[str, Any]
    streams: pd.DataFrame
    events: pd.DataFrame


def write_results(
    directory: str | Path, run: Mapping[str, Any], streams: pd.DataFrame, events: pd.DataFrame
) -> dict[str, Any]:
    """Write the raw files and ``summary.json`` (computed here); returns the summary.

    The streams file gets the derived columns filled in (gap and staleness
    percentiles, short streams), so it matches the contract on its own.
    """
    from analysis.metrics import analyse

    streams = coerce_streams(streams)
    events = coerce_events(events)
    analysis = analyse(run, streams, events)
    write_atomic_set(
        [
            *_raw_writers(Path(directory), run, analysis.streams, events),
            (Path(directory) / SUMMARY_FILE, _json_writer(analysis.summary)),
        ]
    )
    return analysis.summary


def write_raw_results(
    directory: str | Path, run: Mapping[str, Any], streams: pd.DataFrame, events: pd.DataFrame
) -> None:
    """Only the raw files (no summary): for callers that analyse later, e.g. the bench."""
    write_atomic_set(_raw_writers(Path(directory), run, streams, events))


def _raw_writers(
    directory: Path, run: Mapping[str, Any], streams: pd.DataFrame, events: pd.DataFrame
) -> list[tuple[Path, Callable[[Path], Any]]]:
    return [
        (directory / EVENTS_FILE, _parquet_writer(coerce_events(events))),
        (directory / STREAMS_FILE, _parquet_writer(coerce_streams(streams))),
        (directory / RUN_FILE, _json_writer(dict(run))),
    ]


def load_results(directory: str | Path) -> Results:
    """Read a results directory, or raise ``ResultsError`` saying what is wrong."""
    directory = Path(directory)
    if not directory.exists():
        raise ResultsError(f"{directory}: no such results directory")
    if not directory.is_dir():
        raise ResultsError(f"{directory}: not a directory")
    missing = [name for name in RAW_FILES if not (directory / name).is_file()]
    if missing:
        raise ResultsError(f"{directory}: incomplete results, missing {', '.join(missing)}")
    run = _read_run(directory / RUN_FILE)
    streams = _read_frame(directory / STREAMS_FILE, coerce_streams)
    events = _read_frame(directory / EVENTS_FILE, coerce_events)
    _check_keys(directory, streams, events)
    return Results(directory=directory, run=run, streams=streams, events=events)


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON with NaN/inf written as null, replaced atomically."""
    write_atomic(path, _json_writer(data))


def _json_writer(data: Any) -> Callable[[Path], Any]:
    text = json.dumps(_json_safe(data), indent=2, sort_keys=False) + "\n"
    return lambda tmp: tmp.write_text(text, encoding="utf-8")


def _parquet_writer(frame: pd.DataFrame) -> Callable[[Path], Any]:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return lambda tmp: pq.write_table(table, tmp, compression="zstd")


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_parquet_atomic(path: Path, frame: pd.DataFrame) -> None:
    write_atomic(path, _parquet_writer(frame))


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then move it into place."""
    write_atomic_set([(path, write)])


def write_atomic_set(files: list[tuple[Path, Callable[[Path], Any]]]) -> None:
    """Write every file to a temporary name first, then move them all into place.

    Why a set: a run's files belong together.  Renamed one by one as each was
    written, an interrupt half-way left the new run.json beside the old
    parquet files (measured: a results directory that loaded fine and mixed
    two runs).  Staged, an interrupt leaves the old set untouched, and the
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


def _read_run(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ResultsError(f"{path}: not valid JSON ({_first_line(error)})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _read_frame(path: Path, coerce: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    """Read column by column, handing Arrow's memory back after each one.

    A 10-million-event file would otherwise hold the Arrow table and the
    pandas copy at once (and Arrow's allocator keeps freed pages).
    """
    pool = pa.default_memory_pool()
    try:
        parquet = pq.ParquetFile(path)
        columns: dict[str, pd.Series] = {}
        for name in parquet.schema_arrow.names:
            table = parquet.read(columns=[name])
            columns[name] = table.column(0).to_pandas()
            del table
            pool.release_unused()
    except (OSError, pa.ArrowException, ValueError) as error:
        raise ResultsError(f"{path}: unreadable parquet ({_first_line(error)})") from None
    try:
        return coerce(pd.DataFrame(columns, copy=False))
    except KeyError as error:
        raise ResultsError(f"{path}: missing column {error.args[0]!r}") from None
    except (ValueError, TypeError, pa.ArrowException) as error:
        raise ResultsError(f"{path}: columns of the wrong type ({_first_line(error)})") from None


def _check_keys(directory: Path, streams: pd.DataFrame, events: pd.DataFrame) -> None:
    keys = streams["stream_key"].to_numpy()
    if not np.array_equal(keys, np.arange(len(streams))):
        raise ResultsError(f"{directory / STREAMS_FILE}: stream_key is not the row index")
    event_keys = events["stream_key"].to_numpy()
    if event_keys.size and (event_keys.min() < 0 or event_keys.max() >= len(streams)):
        raise ResultsError(
            f"{directory / EVENTS_FILE}: events refer to streams that {STREAMS_FILE} does not have (partial write?)"
        )


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
