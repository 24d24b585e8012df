"""Line splitting: a runaway line is dropped and counted once, however long it goes on."""

from __future__ import annotations

from loadtests.protocol.lines import LineSplitter


def test_a_runaway_line_counts_once_and_reading_resumes_after_its_newline():
    splitter = LineSplitter(max_line=10)
    lines = []
    for read in [b"ok\n", b"x" * 7, b"x" * 7, b"x" * 30, b"x" * 30, b"x\nafter\n", b"y" * 5]:
        lines += splitter.feed(read)
    assert lines == [b"ok", b"after"] and splitter.dropped == 1
    assert splitter.take_rest() == b"yyyyy"


def test_a_runaway_line_inside_one_read_is_dropped_at_once():
    splitter = LineSplitter(max_line=10)
    assert splitter.feed(b"a\n" + b"z" * 25) == [b"a"] and splitter.dropped == 1
    assert splitter.feed(b"z" * 25 + b"\nb\n") == [b"b"] and splitter.dropped == 1


def test_two_runaway_lines_count_twice():
    splitter = LineSplitter(max_line=4)
    assert splitter.feed(b"123456\n1234567\nok\n") == [b"123456", b"1234567", b"ok"]  # complete: kept
    assert splitter.feed(b"abcdef") == [] and splitter.feed(b"g\nhijklm") == [] and splitter.dropped == 2
