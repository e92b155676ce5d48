"""Exceptions that the CLI turns into one-line messages and exit codes.

Every error raised for bad user input should be an :class:`InstasegError` whose message names the
file (or option) and the problem, so ``instaseg`` can print it on one line without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class InstasegError(Exception):
    """Base class for errors caused by user input (files, options, configs)."""

    exit_code = 2


class DataError(InstasegError, ValueError):
    """A dataset, image or annotation file is missing, unreadable or malformed."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ConfigError(InstasegError, ValueError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class CheckpointError(InstasegError):
    """A checkpoint or exported model cannot be loaded."""
