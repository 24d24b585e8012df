"""Exit codes and the one error type of the ``stream-harness`` command."""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
EXIT_REGRESSION: Final = 1
EXIT_UNUSABLE: Final = 2


class CommandError(Exception):
    """A command cannot do its job; ``str()`` is one line for the user."""

    def __init__(self, message: str, exit_code: int = EXIT_UNUSABLE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
