"""docs/PERFORMANCE.md is shared by every benchmark: each owns one ``## `` section.

One writer for all of them, so a benchmark can only ever replace its own
section (heading to the next ``## ``) and rewriting is idempotent.
"""

from __future__ import annotations

from pathlib import Path

PERFORMANCE_DOC = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"


def write_section(heading: str, text: str, doc: Path = PERFORMANCE_DOC) -> None:
    """Replace the section titled ``heading`` with ``text`` (which starts with that
    heading); append it when the document has no such section yet."""
    current = doc.read_text(encoding="utf-8") if doc.exists() else "# Performance\n"
    lines = current.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    body = text.rstrip("\n") + "\n"
    if start is None:
        new = current.rstrip("\n") + "\n\n" + body
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "".join(lines[:start]) + body + ("\n" if end < len(lines) else "") + "".join(lines[end:])
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(new, encoding="utf-8")
