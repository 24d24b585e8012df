"""Incremental NDJSON line splitting over arbitrary read boundaries.

Why bytes: a read can end in the middle of a multi-byte UTF-8 character.
Splitting on the ``b"\\n"`` byte (which never occurs inside a multi-byte UTF-8
sequence) and decoding each complete line on its own makes such a split
harmless -- decoding each read first would not be.
"""

from __future__ import annotations

DEFAULT_MAX_LINE = 16 * 1024 * 1024


class LineSplitter:
    """Feed reads, get back the complete lines (without ``\\n``) each one finished.

    A partial line waits for the next read.  A "line" longer than ``max_line``
    without a newline is dropped and counted once in ``dropped``, however long
    it goes on: the rest of it is discarded up to its newline (a body that is
    not NDJSON must not grow memory without bound).
    """

    __slots__ = ("_pending", "_pending_len", "_discarding", "max_line", "dropped")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._discarding = False  # inside a dropped line: skip to its newline
        self.max_line = max_line
        self.dropped = 0

    def feed(self, data: bytes) -> list[bytes]:
        if b"\n" not in data:
            if data and not self._discarding:
                self._pending.append(data)
                self._pending_len += len(data)
                if self._pending_len > self.max_line:
                    self._pending.clear()
                    self._pending_len = 0
                    self.dropped += 1
                    self._discarding = True
            return []
        if self._discarding:
            data = data[data.index(b"\n") + 1 :]
            self._discarding = False
            if not data:
                return []
            return self.feed(data)
        if self._pending:
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_len = 0
        lines = data.split(b"\n")
        tail = lines.pop()
        if len(tail) > self.max_line:
            self.dropped += 1
            self._discarding = True
        elif tail:
            self._pending.append(tail)
            self._pending_len = len(tail)
        return lines

    def take_rest(self) -> bytes:
        """The unterminated last line at body end (a browser's parser still reads it)."""
        rest = b"".join(self._pending)
        self._pending.clear()
        self._pending_len = 0
        self._discarding = False
        return rest
