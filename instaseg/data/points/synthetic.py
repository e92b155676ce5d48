"""Synthetic indoor scenes generated on the fly: the embedded default point dataset.

A room: floor and two walls (stuff), and 3-7 things (boxes, cylinders, spheres, chairs, tables),
many touching each other (side by side, a sphere or box on a box) and all standing on the floor.
Points are sampled on the visible surfaces and then degraded like a scan from one sensor position:
back faces are mostly dropped (occluded sides), density falls with distance and varies in patches,
Gaussian noise is added. Scene ``i`` of a split is generated from its own seed, so the same spec always
gives the same scenes and the splits never share one.
"""

from __future__ import annotations

import math

import numpy as np

from instaseg.data.points.base import PointDataset, PointScene

CLASS_NAMES = ["floor", "wall", "box", "cylinder", "sphere", "chair", "table"]
STUFF = (0, 1)
_SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}
_PALETTE = np.array(
    [
        [0.8, 0.2, 0.2],
        [0.2, 0.6, 0.2],
        [0.2, 0.3, 0.8],
        [0.85, 0.7, 0.2],
        [0.6, 0.3, 0.7],
        [0.2, 0.7, 0.7],
        [0.55, 0.4, 0.25],
        [0.9, 0.5, 0.1],
    ],
    np.float32,
)

# A part is (points (M, 3), normals (M, 3)); parts are sampled densely then thinned.
Part = tuple[np.ndarray, np.ndarray]


def _rect(
    rng: np.random.Generator, o: np.ndarray, u: np.ndarray, v: np.ndarray, n: np.ndarray, density: float
) -> Part:
    area = float(np.linalg.norm(u) * np.linalg.norm(v))
    m = max(int(rng.poisson(area * density)), 1)
    a, b = rng.random((m, 1)), rng.random((m, 1))
    return o + a * u + b * v, np.repeat(n[None], m, 0)


def _box(
    rng: np.random.Generator,
    c: np.ndarray,
    size: np.ndarray,
    yaw: float,
    density: float,
    bottom: bool = False,
) -> list[Part]:
    """Faces of a box with bottom-centre ``c`` (x, y, z), ``size`` (sx, sy, sz), rotated by ``yaw``."""
    sx, sy, sz = size
    cos, sin = math.cos(yaw), math.sin(yaw)
    rot = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
    parts = []
    ex, ey, ez = np.eye(3)
    faces = [  # (origin in local frame, u, v, normal)
        (np.array([-sx / 2, -sy / 2, sz]), ex * sx, ey * sy, ez),
        (np.array([-sx / 2, -sy / 2, 0]), ex * sx, ez * sz, -ey),
        (np.array([-sx / 2, sy / 2, 0]), ex * sx, ez * sz, ey),
        (np.array([-sx / 2, -sy / 2, 0]), ey * sy, ez * sz, -ex),
        (np.array([sx / 2, -sy / 2, 0]), ey * sy, ez * sz, ex),
    ]
    if bottom:
        faces.append((np.array([-sx / 2, -sy / 2, 0]), ex * sx, ey * sy, -ez))
    for o, u, v, n in faces:
        p, nn = _rect(rng, o, u, v, n, density)
        parts.append((p @ rot.T + c, nn @ rot.T))
    return parts


def _cylinder(rng: np.random.Generator, c: np.ndarray, r: float, h: float, density: float) -> list[Part]:
    m = max(int(rng.poisson(2 * math.pi * r * h * density)), 1)
    t, z = rng.random(m) * 2 * math.pi, rng.random(m) * h
    n = np.stack([np.cos(t), np.sin(t), np.zeros(m)], 1)
    side = (c + n * r + np.stack([np.zeros(m), np.zeros(m), z], 1), n)
    m = max(int(rng.poisson(math.pi * r * r * density)), 1)
    rr, t = r * np.sqrt(rng.random(m)), rng.random(m) * 2 * math.pi
    top = (c + np.stack([rr * np.cos(t), rr * np.sin(t), np.full(m, h)], 1), np.tile([0.0, 0.0, 1.0], (m, 1)))
    return [side, top]


def _sphere(rng: np.random.Generator, c: np.ndarray, r: float, density: float) -> list[Part]:
    m = max(int(rng.poisson(4 * math.pi * r * r * density)), 1)
    n = rng.normal(size=(m, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    return [(c + n * r, n)]


def _legs(
    rng: np.random.Generator, c: np.ndarray, sx: float, sy: float, h: float, yaw: float, density: float
) -> list[Part]:
    parts: list[Part] = []
    cos, sin = math.cos(yaw), math.sin(yaw)
    w = 0.045
    for dx in (-1, 1):
        for dy in (-1, 1):
            lx, ly = dx * (sx / 2 - w), dy * (sy / 2 - w)
            off = np.array([lx * cos - ly * sin, lx * sin + ly * cos, 0.0])
            parts += _box(rng, c + off, np.array([w, w, h]), yaw, density)
    return parts


def _make_object(
    rng: np.random.Generator, kind: int, c: np.ndarray, density: float
) -> tuple[list[Part], np.ndarray]:
    """Surface parts of an object of class ``kind`` standing at ``c`` and its (x, y, z) extent."""
    yaw = float(rng.uniform(0, math.pi))
    if kind == 2:  # box
        size = rng.uniform([0.3, 0.3, 0.25], [0.8, 0.8, 0.8])
        return _box(rng, c, size, yaw, density), size
    if kind == 3:  # cylinder
        r, h = rng.uniform(0.12, 0.3), rng.uniform(0.35, 1.0)
        return _cylinder(rng, c, r, h, density), np.array([2 * r, 2 * r, h])
    if kind == 4:  # sphere resting on c
        r = rng.uniform(0.15, 0.3)
        return _sphere(rng, c + np.array([0, 0, r]), r, density), np.array([2 * r, 2 * r, 2 * r])
    if kind == 5:  # chair: seat, four legs, backrest
        s, hs = rng.uniform(0.4, 0.5), rng.uniform(0.4, 0.48)
        parts = _legs(rng, c, s, s, hs, yaw, density)
        parts += _box(rng, c + np.array([0, 0, hs]), np.array([s, s, 0.05]), yaw, density, bottom=True)
        back = np.array([-(s / 2 - 0.025) * math.sin(yaw) * 0, 0, 0])
        off = np.array([-(s / 2 - 0.025) * math.cos(yaw), -(s / 2 - 0.025) * math.sin(yaw), hs + 0.05]) + back
        parts += _box(rng, c + off, np.array([0.05, s, rng.uniform(0.35, 0.5)]), yaw, density)
        return parts, np.array([s, s, hs + 0.5])
    # table: top and four legs
    sx, sy, h = rng.uniform(0.8, 1.4), rng.uniform(0.6, 0.9), rng.uniform(0.68, 0.76)
    parts = _legs(rng, c, sx, sy, h - 0.04, yaw, density)
    parts += _box(rng, c + np.array([0, 0, h - 0.04]), np.array([sx, sy, 0.04]), yaw, density, bottom=True)
    return parts, np.array([max(sx, sy), max(sx, sy), h])


def generate_scene(seed: int, num_points: int = 6000, name: str = "") -> PointScene:
    """One synthetic room from ``seed`` with about ``num_points`` points (exactly, unless fewer survive).

    Returns a :class:`PointScene` with classes :data:`CLASS_NAMES`; floor and walls have instance -1.
    """
    rng = np.random.default_rng(seed)
    w, d, hw = rng.uniform(3.5, 5.0), rng.uniform(3.5, 5.0), rng.uniform(2.0, 2.5)
    density = 4000.0 * max(1.0, num_points / 5000)  # dense enough to keep num_points after thinning
    sensor = np.array([w * rng.uniform(0.6, 0.9), d * rng.uniform(0.6, 0.9), rng.uniform(1.3, 1.8)])
    objects: list[tuple[list[Part], int]] = []
    footprints: list[tuple[np.ndarray, float]] = []  # (centre xy, radius) of standing objects
    for _ in range(int(rng.integers(3, 8))):
        kind = int(rng.choice([2, 3, 4, 5, 6], p=[0.3, 0.2, 0.15, 0.2, 0.15]))
        for _try in range(20):
            if footprints and rng.random() < 0.5:  # touch an existing object side by side
                (pc, pr) = footprints[int(rng.integers(len(footprints)))]
                ang = rng.uniform(0, 2 * math.pi)
                r_new = 0.35 if kind != 6 else 0.6
                xy = pc + (pr + r_new * 0.75) * np.array([math.cos(ang), math.sin(ang)])
            else:
                xy = rng.uniform([0.5, 0.5], [w - 0.5, d - 0.5])
            c = np.array([xy[0], xy[1], 0.0])
            parts, ext = _make_object(rng, kind, c, density)
            rad = 0.5 * float(np.hypot(ext[0], ext[1])) * 0.8
            if not (rad < xy[0] < w - rad and rad < xy[1] < d - rad):
                continue
            if all(np.linalg.norm(xy - fc) >= 0.7 * (rad + fr) for fc, fr in footprints):
                break
        else:
            continue
        footprints.append((xy, rad))
        objects.append((parts, kind))
        if kind == 2 and rng.random() < 0.35:  # something resting on top of the box
            top_kind = int(rng.choice([2, 4]))
            top_c = np.array([xy[0], xy[1], ext[2]])
            if top_kind == 2:
                size = np.minimum(ext * rng.uniform(0.4, 0.8), 0.45)
                size[2] = rng.uniform(0.15, 0.35)
                objects.append((_box(rng, top_c, size, float(rng.uniform(0, math.pi)), density), 2))
            else:
                r = rng.uniform(0.1, min(ext[0], ext[1]) / 2)
                objects.append((_sphere(rng, top_c + np.array([0, 0, r]), r, density), 4))
    ex, ey, ez = np.eye(3)
    stuff = [
        ([_rect(rng, np.zeros(3), ex * w, ey * d, ez, density * 0.3)], 0),
        ([_rect(rng, np.zeros(3), ex * w, ez * hw, ey, density * 0.3)], 1),
        ([_rect(rng, np.zeros(3), ey * d, ez * hw, ex, density * 0.3)], 1),
    ]
    xyz, normal, sem, inst, col = [], [], [], [], []
    palette_floor = np.array([[0.55, 0.5, 0.45]], np.float32)
    palette_wall = np.array([[0.85, 0.85, 0.8]], np.float32)
    for k, (parts, cls) in enumerate(stuff + objects):
        p = np.concatenate([q for q, _ in parts])
        n = np.concatenate([q for _, q in parts])
        xyz.append(p)
        normal.append(n)
        sem.append(np.full(len(p), cls))
        inst.append(np.full(len(p), -1 if cls in STUFF else k - len(stuff)))
        base = (
            palette_floor
            if cls == 0
            else palette_wall
            if cls == 1
            else _PALETTE[rng.integers(len(_PALETTE))][None]
        )
        col.append(np.repeat(base, len(p), 0))
    xyz_a, normal_a = np.concatenate(xyz), np.concatenate(normal)
    sem_a, inst_a, rgb = np.concatenate(sem), np.concatenate(inst), np.concatenate(col)
    # scan-like thinning: occluded back faces, distance fall-off, patchy density, below-floor parts
    to_sensor = sensor - xyz_a
    dist = np.linalg.norm(to_sensor, axis=1) + 1e-6
    facing = (normal_a * to_sensor).sum(1) / dist
    keep_p = np.where(facing > -0.05, 1.0, 0.08) * np.clip((2.0 / dist) ** 2, 0.2, 1.0)
    phase = rng.uniform(0, 2 * math.pi, 3)
    keep_p *= 0.65 + 0.35 * np.sin(xyz_a[:, 0] * 3.1 + phase[0]) * np.sin(xyz_a[:, 1] * 2.7 + phase[1])
    keep = (rng.random(len(xyz_a)) < keep_p) & (xyz_a[:, 2] > -1e-3)
    idx = np.flatnonzero(keep)
    if len(idx) > num_points:
        idx = np.sort(rng.choice(idx, num_points, replace=False))
    xyz_a = xyz_a[idx] + rng.normal(0, 0.006, (len(idx), 3))
    rgb = np.clip(rgb[idx] + rng.normal(0, 0.04, (len(idx), 3)), 0, 1)
    return PointScene(
        xyz_a.astype(np.float32),
        rgb.astype(np.float32),
        sem_a[idx].astype(np.int64),
        inst_a[idx].astype(np.int64),
        name=name or f"scene_{seed}",
        normal=normal_a[idx].astype(np.float32),
    )


class SyntheticPointScenes(PointDataset):
    """``num_scenes`` synthetic rooms of ``num_points`` points for ``split`` (see the module docstring)."""

    class_names = list(CLASS_NAMES)
    stuff_classes = STUFF

    def __init__(
        self,
        num_scenes: int = 200,
        num_points: int = 6000,
        *,
        split: str = "train",
        seed: int = 0,
        transform: object = None,
    ) -> None:
        self.num_scenes, self.num_points, self.split = num_scenes, num_points, split
        self.seed, self.transform = seed, transform

    def __len__(self) -> int:
        return self.num_scenes

    def scene(self, index: int) -> PointScene:
        if not 0 <= index < self.num_scenes:
            raise IndexError(index)
        s = self.seed * 7_000_009 + _SPLIT_OFFSET.get(self.split, 0) + index
        return generate_scene(s, self.num_points, name=f"{self.split}_{index:05d}")
