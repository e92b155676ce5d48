"""Shared fixtures. Real data lives at $INSTASEG_DATA (CI: ../shared/data); tests that need it skip
with a clear reason when it is unset or missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def data_root() -> Path | None:
    root = os.environ.get("INSTASEG_DATA")
    if not root:
        return None
    # absolute, so tests that run a subprocess in another working directory still find it
    path = Path(root).resolve()
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real datasets; skips the test when INSTASEG_DATA is unset or missing."""
    root = data_root()
    if root is None:
        pytest.skip("INSTASEG_DATA is unset or not a folder: real-data tests need ../shared/data")
    return root
