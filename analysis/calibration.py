"""Calibration: do the protocol clients see what a browser sees?

A run with both kinds of client on a transport (``--browser-users``) has a
``by_client`` object per transport: the same numbers for the harness's
protocol clients and for real Chromium pages.  This module compares them and
says, in one line, whether the protocol clients can stand in for the
browser on this path, or why not:

- TTFC p50 and p99, chunk gap p50 and p99: the browser's value minus the
  protocol clients' (``delta``) must be within ``*_ms`` milliseconds plus
  ``*_pct`` percent of the protocol clients' value.  A stream has one TTFC,
  so the TTFC p99 of fewer than ``ttfc_p99_min_streams`` streams per kind of
  client is about their slowest stream: it is shown, not judged
  (``judged: false``, and a note says why); the gap p99 has a sample per chunk.  A browser adds a
  steady cost of its own to every request (a fetch goes from the page to
  Chromium's network service and back before JavaScript sees a byte: 5-15 ms
  on the shared 2-core VM the defaults were set on); a path that treats browsers differently
  (an edge that buffers HTTP/1.1 but not HTTP/2, flow-control windows that
  starve multiplexed streams, compression) adds tens to hundreds of
  milliseconds, or bursts;
- the buffering verdicts must be the same (``same_verdict``), and neither
  may be ``inconclusive`` (then there is nothing to compare);
- each kind needs ``min_streams`` completed streams.

Events per read are shown but not judged: a browser's reader and a socket's
``recv`` cut the bytes differently by design.

Thresholds come from ``[tool.stream_harness.calibration]`` in the
``pyproject.toml`` of the current directory when present (defaults:
:class:`CalibrationThresholds`); the object in ``summary.json`` carries the
ones it applied.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Final

from analysis.errors import AnalysisError
from stream_harness.contract.kinds import Client, Verdict
from stream_harness.contract.summary import Calibration, CalibrationDelta, TransportSummary

TABLE: Final = "[tool.stream_harness.calibration]"
AGREE_LINE: Final = "protocol clients agree with the browser"
#: (summary key, percentile key, threshold prefix, words)
COMPARED: Final = (
    ("ttfc_ms", "p50", "ttfc_p50", "TTFC p50"),
    ("ttfc_ms", "p99", "ttfc_p99", "TTFC p99"),
    ("gap_ms", "p50", "gap_p50", "gap p50"),
    ("gap_ms", "p99", "gap_p99", "gap p99"),
)


#: Thresholds that count streams.
INTEGER_KEYS: Final = ("min_streams", "ttfc_p99_min_streams")


class CalibrationThresholdsError(AnalysisError):
    """The calibration table in pyproject.toml is unusable (one-line message)."""


@dataclass(frozen=True)
class CalibrationThresholds:
    """How far the browser's numbers may be from the protocol clients' (see the module docstring)."""

    ttfc_p50_ms: float = 20.0
    ttfc_p50_pct: float = 10.0
    ttfc_p99_ms: float = 50.0
    ttfc_p99_pct: float = 25.0
    gap_p50_ms: float = 5.0
    gap_p50_pct: float = 25.0
    gap_p99_ms: float = 40.0
    gap_p99_pct: float = 50.0
    same_verdict: bool = True
    min_streams: int = 3
    ttfc_p99_min_streams: int = 100

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> CalibrationThresholds:
        known = {item.name for item in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise CalibrationThresholdsError(f"{TABLE}: unknown key {key!r} (known: {', '.join(sorted(known))})")
            if key == "same_verdict":
                if not isinstance(value, bool):
                    raise CalibrationThresholdsError(f"{TABLE}: same_verdict must be true or false, got {value!r}")
                values[key] = value
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise CalibrationThresholdsError(f"{TABLE}: {key} must be a number >= 0, got {value!r}")
            values[key] = int(value) if key in INTEGER_KEYS else float(value)
        return cls(**values)

    def allowed_ms(self, prefix: str, protocol_value: float) -> float:
        """The largest |browser - protocol| accepted for ``prefix`` (e.g. ``ttfc_p50``)."""
        return float(getattr(self, f"{prefix}_ms")) + float(getattr(self, f"{prefix}_pct")) / 100.0 * abs(
            protocol_value
        )


def load_calibration_thresholds(pyproject: str | Path | None = None) -> CalibrationThresholds:
    """Thresholds from ``pyproject`` (default: ./pyproject.toml), or the defaults."""
    path = Path(pyproject) if pyproject is not None else Path.cwd() / "pyproject.toml"
    if not path.is_file():
        return CalibrationThresholds()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise CalibrationThresholdsError(f"{path}: unreadable TOML ({error})") from None
    table = data.get("tool", {}).get("stream_harness", {}).get("calibration", {})
    if not isinstance(table, dict):
        raise CalibrationThresholdsError(f"{path}: {TABLE} must be a table")
    return CalibrationThresholds.from_mapping(table)


def calibrate(
    by_client: Mapping[str, TransportSummary], thresholds: CalibrationThresholds | None = None
) -> Calibration | None:
    """The calibration object of one transport, or None unless both kinds of client ran on it."""
    protocol = by_client.get(Client.PROTOCOL)
    browser = by_client.get(Client.BROWSER)
    if protocol is None or browser is None:
        return None
    limits = thresholds or CalibrationThresholds()
    reasons: list[str] = []
    streams = {Client.PROTOCOL: _completed(protocol), Client.BROWSER: _completed(browser)}
    for client, count in streams.items():
        if count < limits.min_streams:
            reasons.append(f"too few completed {client} streams to compare ({count} < {limits.min_streams})")
    notes: list[str] = []
    fewest = min(streams.items(), key=lambda item: item[1])
    deltas: dict[str, CalibrationDelta] = {}
    for key, column, prefix, words in COMPARED:
        ours, theirs = _value(protocol, key, column), _value(browser, key, column)
        delta = theirs - ours if ours is not None and theirs is not None else None
        allowed = limits.allowed_ms(prefix, ours) if ours is not None else None
        judged = prefix != "ttfc_p99" or fewest[1] >= limits.ttfc_p99_min_streams
        deltas[prefix] = {"protocol": ours, "browser": theirs, "delta": delta, "allowed": allowed, "judged": judged}
        if not judged:
            notes.append(
                f"{words} not judged: {fewest[1]} completed {fewest[0]} streams "
                f"(it needs {limits.ttfc_p99_min_streams}; of fewer it is about the slowest one)"
            )
        elif delta is None or allowed is None:
            reasons.append(f"{words}: no value for the {'protocol clients' if ours is None else 'browser'}")
        elif abs(delta) > allowed:
            reasons.append(
                f"{words}: browser {theirs:.1f} ms vs protocol {ours:.1f} ms ({delta:+.1f} ms; within ±{allowed:.1f})"
            )
    verdicts = {Client.PROTOCOL: protocol["buffering"]["verdict"], Client.BROWSER: browser["buffering"]["verdict"]}
    if limits.same_verdict:
        inconclusive = [client for client, verdict in verdicts.items() if verdict == Verdict.INCONCLUSIVE]
        if inconclusive:
            verdict_words = "verdicts are" if len(inconclusive) > 1 else "verdict is"
            reasons.append(f"the {' and '.join(inconclusive)} {verdict_words} inconclusive: nothing to compare")
        elif verdicts[Client.PROTOCOL] != verdicts[Client.BROWSER]:
            reasons.append(
                f"verdicts differ: browser {verdicts[Client.BROWSER]}, protocol clients {verdicts[Client.PROTOCOL]}"
            )
    return {
        "agree": not reasons,
        "line": calibration_line(not reasons, reasons),
        "reasons": reasons,
        "notes": notes,
        "streams": {str(k): v for k, v in streams.items()},
        "ttfc_ms": {"p50": deltas["ttfc_p50"], "p99": deltas["ttfc_p99"]},
        "gap_ms": {"p50": deltas["gap_p50"], "p99": deltas["gap_p99"]},
        "events_per_read": {
            str(Client.PROTOCOL): protocol["events_per_read"]["mean"],
            str(Client.BROWSER): browser["events_per_read"]["mean"],
        },
        "verdicts": {str(k): str(v) for k, v in verdicts.items()},
        "thresholds": asdict(limits),
    }


def calibration_line(agree: bool, reasons: list[str]) -> str:
    """The one line the report, the PR comment and the Streams tab show."""
    if agree:
        return AGREE_LINE
    return "protocol clients do NOT agree with the browser: " + "; ".join(reasons)


def _completed(item: TransportSummary) -> int:
    return int(item["streams"]["completed"])


def _value(item: TransportSummary, key: str, column: str) -> float | None:
    found = item.get(key)
    value = found.get(column) if isinstance(found, Mapping) else None
    return float(value) if isinstance(value, (int, float)) else None
