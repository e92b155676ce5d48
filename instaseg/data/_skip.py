"""``on_error="raise"|"skip"`` for file-backed datasets: a bad image must not kill a run silently.

With ``"skip"``, a :class:`DataError` while loading image ``i`` logs a counted warning naming the file
and the problem, then loads the next index instead (so a training epoch goes on). Evaluation and
conversion should keep the default ``"raise"``: a skipped index yields another image's record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from instaseg.data.base import Record
from instaseg.errors import ConfigError, DataError

logger = logging.getLogger("instaseg.data")

ON_ERROR = ("raise", "skip")
MAX_CONSECUTIVE_FAILURES = 20


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    return on_error


class SkipCounter:
    """Counts skipped images of one dataset (per process: each DataLoader worker keeps its own)."""

    def __init__(self) -> None:
        self.count = 0
        self.files: list[str] = []

    def load(self, index: int, size: int, load: Callable[[int], Record], on_error: str) -> Record:
        """``load(index)``; with ``on_error="skip"`` try the following indices after a DataError."""
        if on_error == "raise":
            return load(index)
        last: DataError | None = None
        for attempt in range(min(size, MAX_CONSECUTIVE_FAILURES)):
            i = (index + attempt) % size
            try:
                return load(i)
            except DataError as exc:
                last = exc
                self.count += 1
                if len(self.files) < 100:
                    self.files.append(str(exc.path))
                logger.warning("skipped bad image #%d: %s", self.count, exc)
        raise DataError(
            None, f"{min(size, MAX_CONSECUTIVE_FAILURES)} images in a row failed to load; last: {last}"
        )
