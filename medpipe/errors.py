"""Errors several task families raise, in a module that imports nothing: a submission's format
error is raised by SIIM's RLE validator and the multi-label validator, and caught by the CLI."""

from __future__ import annotations

__all__ = ["SubmissionError"]


class SubmissionError(ValueError):
    """A submission file breaks its task's format; the message names the file and the problem."""
