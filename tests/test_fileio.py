"""Atomic writes: the target is replaced only by a complete file, and a failure leaves it untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from instaseg.fileio import atomic_open, atomic_path


def test_atomic_open_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]
    with atomic_open(target, "w") as f:
        f.write("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_atomic_path_hands_out_a_temp_file_beside_the_target(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target and not target.exists()
        tmp.write_bytes(b"graph")
    assert target.read_bytes() == b"graph" and not tmp.exists()
