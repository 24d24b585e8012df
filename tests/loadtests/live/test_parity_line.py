"""The Streams tab's first line: the last finished run's parity, "after the run" while one runs."""

from __future__ import annotations

from loadtests.live.stats import parity_banner


def summary_with(verdict: str | None) -> dict:
    if verdict is None:
        return {"transports": {"ndjson": {}}}
    return {"parity": {"verdict": verdict, "reasons": ["NDJSON buffering verdict buffered, Socket.io clean"]}}


def test_before_any_run_the_line_waits_for_the_end_of_the_run():
    line = parity_banner(None, running=False)
    assert line["verdict"] is None and not line["finished"]
    assert line["line"].startswith("Parity (NDJSON vs Socket.io): after the run")


def test_while_a_run_runs_the_line_waits_and_names_the_last_runs_verdict():
    line = parity_banner(summary_with("ndjson_worse"), running=True)
    assert line["verdict"] is None and not line["finished"]
    assert line["line"].endswith("(last run: ndjson_worse)")


def test_after_a_run_the_line_is_its_parity_with_the_first_reason():
    line = parity_banner(summary_with("ndjson_worse"), running=False)
    assert line == {
        "verdict": "ndjson_worse",
        "finished": True,
        "line": "Last run's parity (NDJSON vs Socket.io): ndjson_worse: NDJSON buffering verdict buffered, "
        "Socket.io clean",
    }


def test_a_finished_run_of_one_transport_says_parity_was_not_judged():
    line = parity_banner(summary_with(None), running=False)
    assert line["verdict"] is None and line["finished"]
    assert "not judged" in line["line"]
