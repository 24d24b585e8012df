"""bench.sweep's PERFORMANCE.md section: the targets are judged on what was measured."""

from __future__ import annotations

from bench.sweep import agreement, section


def run(seconds: float, ndjson: int, socketio: int, lower_bound: bool = False) -> dict:
    def result(n: int) -> dict:
        return {"max_streams_meeting_slo": n, "lower_bound": lower_bound, "steps": [{}] * 7, "summary": f"{n} streams"}

    search = {"start": 4, "max_streams": 256, "step_s": 8, "max_step_s": 20, "tolerance": 0.1}
    capacity = {"search": search, "transports": {"ndjson": result(ndjson), "socketio": result(socketio)}}
    return {"seconds": seconds, "load": (0.5, 1.5), "capacity": capacity}


def test_agreement_is_the_gap_as_a_share_of_the_larger():
    assert agreement(100, 88) == 0.12 and agreement(88, 100) == 0.12 and agreement(0, 0) == 0.0


def test_the_section_judges_time_and_agreement_per_transport():
    text = section([run(400, 120, 60, lower_bound=True), run(650, 112, 40)], [])
    assert text.startswith("## Capacity sweep (make bench-sweep)\n")
    assert "| 1 | 6.7 min | 0.5 / 1.5 | ndjson | at least 120 | 7 | 120 streams |" in text
    assert "the slower sweep took 10.8 min (target <= 10 min): **misses**" in text
    assert "- ndjson: 120 and 112 streams, 7% apart (target <= 15%): **meets**." in text
    assert "- socketio: 60 and 40 streams, 33% apart (target <= 15%): **misses**." in text
