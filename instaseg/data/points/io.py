"""Reading and writing point clouds: PLY (binary and ASCII, via plyfile), NPZ, S3DIS rooms, results.

Every reader returns a :class:`~instaseg.data.points.base.PointScene` or raises a one-line
:class:`~instaseg.errors.DataError` naming the file: empty, truncated, malformed, no x/y/z, or more
points than ``max_points`` (checked from the header, before anything is allocated). Points with NaN or
infinite coordinates are dropped (``nonfinite="drop"``, counted in ``scene.extra["nonfinite"]``),
kept (``"keep"``, for ``instaseg data check``) or refused (``"raise"``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.data.points.base import PointScene
from instaseg.errors import DataError
from instaseg.structures.points import PointInstances

MAX_POINTS = 20_000_000  # default limit per file: about 0.5 GB of float32 xyz + rgb + labels
POINT_SUFFIXES = (".ply", ".npz")
_INSTANCE_NAMES = ("instance", "instance_id", "instances", "object_id", "objectid")
_LABEL_NAMES = ("label", "semantic", "class", "semantic_label", "class_id", "category")
_PLY_SIZES = {
    "char": 1,
    "uchar": 1,
    "int8": 1,
    "uint8": 1,
    "short": 2,
    "ushort": 2,
    "int16": 2,
    "uint16": 2,
    "int": 4,
    "uint": 4,
    "int32": 4,
    "uint32": 4,
    "float": 4,
    "float32": 4,
    "double": 8,
    "float64": 8,
}


def _finish(
    path: Path,
    xyz: np.ndarray,
    rgb: np.ndarray | None,
    sem: np.ndarray | None,
    inst: np.ndarray | None,
    normal: np.ndarray | None,
    nonfinite: str,
) -> PointScene:
    n = len(xyz)
    if n == 0:
        raise DataError(path, "no points")
    xyz = np.asarray(xyz, np.float32).reshape(n, 3)
    if rgb is None:
        rgb = np.full((n, 3), 0.5, np.float32)
    else:
        rgb = np.asarray(rgb, np.float32).reshape(n, 3)
        if rgb.size and np.nanmax(rgb) > 1.0:
            rgb = rgb / 255.0
    sem = np.full(n, -1, np.int64) if sem is None else np.asarray(sem, np.int64).reshape(n)
    inst = np.full(n, -1, np.int64) if inst is None else np.asarray(inst, np.int64).reshape(n)
    scene = PointScene(
        xyz, rgb, sem, inst, name=path.stem, normal=None if normal is None else np.asarray(normal, np.float32)
    )
    bad = ~np.isfinite(xyz).all(1)
    scene.extra["nonfinite"] = int(bad.sum())
    if bad.any() and nonfinite != "keep":
        if nonfinite == "raise":
            raise DataError(path, f"{int(bad.sum())} of {n} points have NaN or infinite coordinates")
        if bad.all():
            raise DataError(path, f"all {n} points have NaN or infinite coordinates")
        scene = scene.subset(~bad)
        scene.extra["nonfinite"] = int(bad.sum())
    return scene


def _ply_header(path: Path, max_points: int) -> None:
    """Check the header: magic, a vertex element with x, y, z, the point count, and the file size."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(path, "empty file")
    with open(path, "rb") as f:
        head = f.read(65536)
    if not head.startswith(b"ply"):
        raise DataError(path, "not a PLY file (no 'ply' magic line)")
    end = head.find(b"end_header")
    if end < 0:
        raise DataError(path, "truncated or malformed PLY header (no end_header)")
    lines = head[:end].decode("ascii", "replace").splitlines()
    fmt = next((ln.split()[1] for ln in lines if ln.startswith("format")), "")
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for ln in lines:
        parts = ln.split()
        if parts[:1] == ["element"] and len(parts) == 3:
            if not re.fullmatch(r"\d+", parts[2]):
                raise DataError(path, f"malformed PLY header line {ln!r}")
            elements.append((parts[1], int(parts[2]), []))
        elif parts[:1] == ["property"] and elements:
            elements[-1][2].append((parts[1], parts[-1]))
    vertex = next((e for e in elements if e[0] == "vertex"), None)
    if vertex is None:
        raise DataError(path, "PLY has no vertex element")
    names = {p for _, p in vertex[2]}
    if not {"x", "y", "z"} <= names:
        raise DataError(
            path, f"PLY vertices have no x, y, z (properties: {', '.join(sorted(names)) or 'none'})"
        )
    if vertex[1] > max_points:
        raise DataError(
            path,
            f"PLY declares {vertex[1]:,} points, more than the limit of {max_points:,} "
            "(downsample it first, or raise max_points)",
        )
    if fmt.startswith("binary") and all(t in _PLY_SIZES for t, _ in vertex[2]):
        row = sum(_PLY_SIZES[t] for t, _ in vertex[2])
        body = size - (head.find(b"\n", end) + 1)
        if body < row * vertex[1]:
            raise DataError(
                path,
                f"truncated PLY: {vertex[1]:,} points need {row * vertex[1]:,} bytes, the file "
                f"has {body:,} after the header",
            )


def _field(data: Any, names: tuple[str, ...]) -> np.ndarray | None:
    have = {n.lower(): n for n in data.dtype.names}
    for n in names:
        if n in have:
            return np.asarray(data[have[n]])
    return None


def read_ply(path: str | Path, *, max_points: int = MAX_POINTS, nonfinite: str = "drop") -> PointScene:
    """A PLY point cloud (binary or ASCII): x/y/z, optional red/green/blue, nx/ny/nz, per-vertex
    ``label`` (or semantic/class) and ``instance`` (or instance_id/object_id)."""
    from plyfile import PlyData, PlyParseError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    _ply_header(path, max_points)
    try:
        ply = PlyData.read(str(path))
        v = ply["vertex"].data
    except (PlyParseError, ValueError, KeyError, IndexError, EOFError, OSError, TypeError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(path, f"truncated or malformed PLY ({msg})") from None
    xyz = np.stack([v["x"], v["y"], v["z"]], 1)
    names = {n.lower() for n in v.dtype.names}
    rgb = np.stack([v["red"], v["green"], v["blue"]], 1) if {"red", "green", "blue"} <= names else None
    if rgb is not None and v["red"].dtype == np.uint8:
        rgb = rgb.astype(np.float32) / 255.0
    normal = np.stack([v["nx"], v["ny"], v["nz"]], 1) if {"nx", "ny", "nz"} <= names else None
    return _finish(path, xyz, rgb, _field(v, _LABEL_NAMES), _field(v, _INSTANCE_NAMES), normal, nonfinite)


def read_npz(path: str | Path, *, max_points: int = MAX_POINTS, nonfinite: str = "drop") -> PointScene:
    """An NPZ with ``xyz`` (N, 3) and optional ``rgb`` (N, 3; 0-1 or 0-255), ``normal`` (N, 3),
    ``semantic`` (N,) and ``instance`` (N,)."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "xyz" not in z.files:
                raise DataError(path, f"NPZ has no 'xyz' array (arrays: {', '.join(z.files) or 'none'})")
            xyz = z["xyz"]
            if xyz.ndim != 2 or xyz.shape[1] != 3:
                raise DataError(path, f"'xyz' must be (N, 3), got {xyz.shape}")
            if len(xyz) > max_points:
                raise DataError(path, f"{len(xyz):,} points, more than the limit of {max_points:,}")
            arrays = {k: z[k] for k in ("rgb", "normal", "semantic", "instance") if k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(
            path, f"not a readable NPZ ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    for k, a in arrays.items():
        if len(a) != len(xyz):
            raise DataError(path, f"'{k}' has {len(a)} rows but 'xyz' has {len(xyz)}")
    return _finish(
        path,
        xyz,
        arrays.get("rgb"),
        arrays.get("semantic"),
        arrays.get("instance"),
        arrays.get("normal"),
        nonfinite,
    )


S3DIS_CLASSES = [
    "ceiling",
    "floor",
    "wall",
    "beam",
    "column",
    "window",
    "door",
    "table",
    "chair",
    "sofa",
    "bookcase",
    "board",
    "clutter",
]


def read_s3dis_room(room: str | Path, *, nonfinite: str = "drop") -> PointScene:
    """An S3DIS room folder: ``Annotations/<class>_<k>.txt`` (``x y z r g b`` per line), one file per
    object; each file is one instance, its class from the file name (unknown names -> clutter)."""
    room = Path(room)
    files = sorted((room / "Annotations").glob("*.txt"))
    if not files:
        raise DataError(room, "no Annotations/<class>_<k>.txt files (not an S3DIS room)")
    xyz, rgb, sem, inst = [], [], [], []
    for k, f in enumerate(files):
        try:
            a = np.loadtxt(f, dtype=np.float64, ndmin=2)
        except ValueError as exc:
            raise DataError(f, f"malformed S3DIS annotation ({str(exc).splitlines()[0]})") from None
        if a.size == 0:
            continue
        if a.shape[1] < 3:
            raise DataError(f, f"expected 'x y z r g b' columns, got {a.shape[1]}")
        cls = f.stem.rsplit("_", 1)[0].lower()
        c = S3DIS_CLASSES.index(cls) if cls in S3DIS_CLASSES else S3DIS_CLASSES.index("clutter")
        xyz.append(a[:, :3])
        rgb.append(a[:, 3:6] / 255.0 if a.shape[1] >= 6 else np.full((len(a), 3), 0.5))
        sem.append(np.full(len(a), c))
        inst.append(np.full(len(a), k))
    if not xyz:
        raise DataError(room, "every annotation file is empty")
    scene = _finish(
        room,
        np.concatenate(xyz),
        np.concatenate(rgb),
        np.concatenate(sem),
        np.concatenate(inst),
        None,
        nonfinite,
    )
    scene.name = room.name
    return scene


def read_points(path: str | Path, **kwargs: Any) -> PointScene:
    """Dispatch on the suffix (``.ply``, ``.npz``) or an S3DIS room folder."""
    path = Path(path)
    if path.is_dir():
        return read_s3dis_room(path, **{k: v for k, v in kwargs.items() if k == "nonfinite"})
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return read_ply(path, **kwargs)
    if suffix == ".npz":
        return read_npz(path, **kwargs)
    raise DataError(path, f"unknown point-cloud format {suffix!r} (use .ply, .npz or an S3DIS room folder)")


def write_ply(
    path: str | Path,
    xyz: np.ndarray,
    rgb: np.ndarray | None = None,
    *,
    binary: bool = True,
    **fields: np.ndarray,
) -> Path:
    """Write points (N, 3), colours (N, 3) in [0, 1] and extra int per-vertex ``fields`` to a PLY."""
    from plyfile import PlyData, PlyElement

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if rgb is not None:
        dtype += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    dtype += [(k, "i4") for k in fields]
    data = np.empty(len(xyz), dtype=dtype)
    data["x"], data["y"], data["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if rgb is not None:
        c = np.clip(np.round(np.asarray(rgb) * 255), 0, 255).astype(np.uint8)
        data["red"], data["green"], data["blue"] = c[:, 0], c[:, 1], c[:, 2]
    for k, v in fields.items():
        data[k] = v
    PlyData([PlyElement.describe(data, "vertex")], text=not binary).write(str(path))
    return path


def write_scene(path: str | Path, scene: PointScene, *, binary: bool = True) -> Path:
    """A :class:`PointScene` as PLY (``.ply``, with ``label``/``instance`` fields) or NPZ (``.npz``)."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path, xyz=scene.xyz, rgb=scene.rgb, semantic=scene.semantic, instance=scene.instance
        )
        return path
    return write_ply(path, scene.xyz, scene.rgb, binary=binary, label=scene.semantic, instance=scene.instance)


def instance_colors(ids: np.ndarray, seed: int = 3) -> np.ndarray:
    """Float (N, 3) colours: a distinct colour per instance id, light grey for -1."""
    k = int(ids.max(initial=-1)) + 1
    palette = np.random.default_rng(seed).uniform(0.15, 0.95, (max(k, 1), 3))
    out = np.full((len(ids), 3), 0.82)
    out[ids >= 0] = palette[ids[ids >= 0]]
    return out


def write_results(
    out_dir: str | Path,
    name: str,
    xyz: np.ndarray,
    pred: PointInstances,
    class_names: list[str],
    *,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """``<name>.ply`` (instance colours, ``instance`` and ``label`` per vertex) and ``<name>.json``
    (``{"scene", "num_points", "classes", "instances": [{id, label, class, score, num_points,
    point_indices}]}``) in ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    ply = write_ply(
        out_dir / f"{name}.ply",
        xyz,
        instance_colors(pred.instance_ids),
        instance=pred.instance_ids,
        label=pred.point_labels(),
    )
    doc = {
        "scene": name,
        "num_points": int(len(xyz)),
        "classes": list(class_names),
        "instances": pred.to_list(class_names),
        **(extra or {}),
    }
    js = out_dir / f"{name}.json"
    js.write_text(json.dumps(doc))
    return {"ply": ply, "json": js}


def read_results(path: str | Path) -> PointInstances:
    """The :class:`PointInstances` of a results JSON written by :func:`write_results`."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        ids = np.full(int(doc["num_points"]), -1, np.int64)
        labels, scores = [], []
        for k, item in enumerate(doc["instances"]):
            ids[np.asarray(item["point_indices"], np.int64)] = k
            labels.append(int(item["label"]))
            scores.append(float(item["score"]))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise DataError(path, f"not a point results JSON ({type(exc).__name__}: {exc})") from None
    return PointInstances(ids, np.asarray(labels, np.int64), np.asarray(scores, np.float32))
