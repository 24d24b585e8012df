"""The analysis package's one exception base."""

from __future__ import annotations


class AnalysisError(Exception):
    """Input the analysis cannot use; ``str()`` is one line for the user."""
