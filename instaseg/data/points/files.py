"""Point datasets read from files: a PLY/NPZ file, a folder or glob of them, or S3DIS rooms.

Class names come from a ``classes.txt`` beside the files (one name a line; ``name stuff`` marks a class
that has no instances, e.g. ``floor stuff``), S3DIS's 13 classes for S3DIS rooms, else ``class_<i>``
for every label found in the first files.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from instaseg.data.points.base import PointDataset, PointScene
from instaseg.data.points.io import POINT_SUFFIXES, S3DIS_CLASSES, read_points
from instaseg.errors import DataError


def list_point_files(source: str | Path) -> list[Path]:
    """The point clouds named by ``source``: a file, a folder (its .ply/.npz files, or its S3DIS rooms:
    folders holding ``Annotations/``, searched two levels deep), or a glob."""
    text = str(source)
    if any(ch in text for ch in "*?["):
        paths = sorted(Path(p) for p in glob.glob(text, recursive=True))
        paths = [p for p in paths if p.suffix.lower() in POINT_SUFFIXES or (p / "Annotations").is_dir()]
        if not paths:
            raise DataError(text, "the pattern matches no .ply/.npz files or S3DIS rooms")
        return paths
    p = Path(text)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DataError(p, "no such file or folder")
    if (p / "Annotations").is_dir():
        return [p]
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in POINT_SUFFIXES and f.is_file())
    rooms = sorted(r.parent for r in p.glob("*/Annotations")) + sorted(
        r.parent for r in p.glob("*/*/Annotations")
    )
    if not files and not rooms:
        raise DataError(p, "no .ply/.npz files or S3DIS rooms (<room>/Annotations/) in this folder")
    return files + rooms


def read_class_file(path: Path) -> tuple[list[str], tuple[int, ...]]:
    """``classes.txt``: names one a line, ``stuff`` after a name marks it as stuff."""
    names, stuff = [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 1 and parts[1].lower() == "stuff":
            stuff.append(len(names))
        names.append(parts[0])
    if not names:
        raise DataError(path, "no class names")
    return names, tuple(stuff)


class PointFileDataset(PointDataset):
    """Scenes read from files (see :func:`list_point_files`), read lazily one at a time."""

    def __init__(
        self,
        paths: list[Path],
        *,
        class_names: list[str] | None = None,
        stuff_classes: tuple[int, ...] = (),
        transform: Any = None,
        nonfinite: str = "drop",
        max_points: int | None = None,
    ) -> None:
        self.paths, self.transform, self.nonfinite = list(paths), transform, nonfinite
        self.max_points = max_points
        if class_names is None:
            class_names, stuff_classes = self._guess_classes()
        self.class_names, self.stuff_classes = list(class_names), tuple(stuff_classes)

    def _guess_classes(self) -> tuple[list[str], tuple[int, ...]]:
        if not self.paths:
            return [], ()
        first = self.paths[0]
        for folder in (first if first.is_dir() else first.parent, first.parent):
            if (folder / "classes.txt").is_file():
                return read_class_file(folder / "classes.txt")
        if first.is_dir():
            return list(S3DIS_CLASSES), ()
        top = 0
        for p in self.paths[:8]:
            try:
                top = max(top, int(self._read(p).semantic.max(initial=-1)) + 1)
            except DataError:  # reported when the scene is read (data check counts it)
                continue
        return [f"class_{i}" for i in range(max(top, 1))], ()

    def _read(self, path: Path) -> PointScene:
        kw: dict[str, Any] = {"nonfinite": self.nonfinite}
        if self.max_points is not None and not path.is_dir():
            kw["max_points"] = self.max_points
        return read_points(path, **kw)

    def __len__(self) -> int:
        return len(self.paths)

    def scene(self, index: int) -> PointScene:
        return self._read(self.paths[index])
