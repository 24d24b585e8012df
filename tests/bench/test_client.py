"""`make bench-client` writes only its own section of docs/PERFORMANCE.md."""

from __future__ import annotations

from bench.client import SECTION, Sample, Shape, render_section, summarize
from bench.perfdoc import write_section

OTHERS = "# Performance\n\nintro\n\n## Backend (make bench-backend)\n\nbackend table\n\n"
AFTER = "## Analysis (make bench-analysis)\n\nanalysis table\n"


def test_only_our_section_is_replaced_and_rewriting_is_idempotent(tmp_path):
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text(OTHERS + SECTION + "\n\n_not measured yet_\n\n" + AFTER)
    text = SECTION + "\n\nnew table\n"
    write_section(SECTION, text, doc)
    once = doc.read_text()
    assert once == OTHERS + text + "\n" + AFTER
    write_section(SECTION, text, doc)
    assert doc.read_text() == once


def test_missing_section_is_appended(tmp_path):
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text(OTHERS)
    write_section(SECTION, SECTION + "\n\nt\n", doc)
    assert doc.read_text() == OTHERS.rstrip("\n") + "\n\n" + SECTION + "\n\nt\n"


def test_table_puts_ratios_side_by_side():
    shapes = [Shape("burst", 100, 0.0)]
    samples = [
        Sample("ndjson", "burst", 5.0, 100, 10),
        Sample("ndjson", "burst", 7.0, 100, 10),
        Sample("httpx", "burst", 18.0, 100, None),
    ]
    rows = summarize(samples, shapes)
    assert [(r["client"], r["us"], r["ratio"]) for r in rows] == [("httpx", 18.0, None), ("ndjson", 6.0, 3.0)]
    text = render_section(rows, shapes, 2, "note")
    assert text.startswith(SECTION) and "| 6.0 | 3.0× | 10.0 |" in text
