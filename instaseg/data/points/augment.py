"""Point-cloud augmentation: each function maps a :class:`PointScene` and a NumPy ``Generator`` to a new
scene (labels follow the points). :class:`PointAugment` chains them from config keywords
(``data.augment`` in a points config)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from instaseg.data.points.base import PointScene


def _with_xyz(scene: PointScene, xyz: np.ndarray, normal: np.ndarray | None = None) -> PointScene:
    return PointScene(
        xyz.astype(np.float32),
        scene.rgb,
        scene.semantic,
        scene.instance,
        scene.name,
        normal if normal is not None else scene.normal,
        dict(scene.extra),
    )


def rotate_z(scene: PointScene, angle: float) -> PointScene:
    """Rotate by ``angle`` radians about the up (z) axis through the scene's centre."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32)
    centre = scene.xyz.mean(0) * np.array([1, 1, 0], np.float32)
    normal = None if scene.normal is None else scene.normal @ rot.T
    return _with_xyz(scene, (scene.xyz - centre) @ rot.T + centre, normal)


def scale(scene: PointScene, factor: float) -> PointScene:
    """Scale about the centre of the floor (z stays >= its minimum)."""
    centre = scene.xyz.mean(0) * np.array([1, 1, 0], np.float32)
    return _with_xyz(scene, (scene.xyz - centre) * factor + centre)


def flip(scene: PointScene, axis: int) -> PointScene:
    """Mirror along x (``axis=0``) or y (``axis=1``) about the centre."""
    xyz = scene.xyz.copy()
    c = xyz[:, axis].mean()
    xyz[:, axis] = 2 * c - xyz[:, axis]
    normal = None
    if scene.normal is not None:
        normal = scene.normal.copy()
        normal[:, axis] *= -1
    return _with_xyz(scene, xyz, normal)


def jitter(scene: PointScene, sigma: float, rng: np.random.Generator, clip: float = 0.05) -> PointScene:
    """Add Gaussian noise of ``sigma`` metres (clipped to ``clip``) to every coordinate."""
    noise = np.clip(rng.normal(0, sigma, scene.xyz.shape), -clip, clip)
    return _with_xyz(scene, scene.xyz + noise)


def dropout(scene: PointScene, fraction: float, rng: np.random.Generator) -> PointScene:
    """Drop a random ``fraction`` of the points (at least one point is kept)."""
    keep = rng.random(len(scene)) >= fraction
    if not keep.any():
        keep[int(rng.integers(len(scene)))] = True
    return scene.subset(keep)


def elastic(
    scene: PointScene, rng: np.random.Generator, granularity: float = 0.5, magnitude: float = 0.04
) -> PointScene:
    """Smooth random displacement: noise on a coarse grid of ``granularity`` metres, trilinearly
    interpolated, of about ``magnitude`` metres."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    lo = scene.xyz.min(0)
    dims = np.ceil((scene.xyz.max(0) - lo) / granularity).astype(int) + 3
    rel = ((scene.xyz - lo) / granularity + 1).T
    disp = np.stack(
        [
            map_coordinates(gaussian_filter(rng.normal(size=dims), 1.0), rel, order=1, mode="nearest")
            for _ in range(3)
        ],
        1,
    )
    disp *= magnitude / max(float(np.abs(disp).max()), 1e-6)
    return _with_xyz(scene, scene.xyz + disp)


@dataclass
class PointAugment:
    """Random augmentation: rotation about z (``rotate`` radians, full turn by default), scaling in
    ``scale_range``, flips with probability ``flip_p`` per axis, jitter ``jitter_sigma`` m, point
    ``dropout`` fraction (drawn up to it), elastic with probability ``elastic_p``."""

    rotate: float = 2 * math.pi
    scale_range: tuple[float, float] = (0.9, 1.1)
    flip_p: float = 0.5
    jitter_sigma: float = 0.005
    dropout: float = 0.1
    elastic_p: float = 0.0

    def __call__(self, scene: PointScene, rng: np.random.Generator) -> PointScene:
        if self.rotate:
            scene = rotate_z(scene, float(rng.uniform(-self.rotate / 2, self.rotate / 2)))
        lo, hi = self.scale_range
        if lo != 1.0 or hi != 1.0:
            scene = scale(scene, float(rng.uniform(lo, hi)))
        for axis in (0, 1):
            if rng.random() < self.flip_p:
                scene = flip(scene, axis)
        if self.jitter_sigma > 0:
            scene = jitter(scene, self.jitter_sigma, rng)
        if self.dropout > 0:
            scene = dropout(scene, float(rng.uniform(0, self.dropout)), rng)
        if rng.random() < self.elastic_p:
            scene = elastic(scene, rng)
        return scene


def build_point_augment(train: bool, **options: object) -> PointAugment | None:
    """The training augmentation from config keywords (None for evaluation). Unknown keywords are a
    ConfigError naming them."""
    from dataclasses import fields

    from instaseg.errors import ConfigError

    if not train:
        return None
    known = {f.name for f in fields(PointAugment)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"config key 'data.augment': unknown point augmentation keys {unknown}; known: {sorted(known)}"
        )
    kw = dict(options)
    if "scale_range" in kw:
        kw["scale_range"] = tuple(kw["scale_range"])  # type: ignore[arg-type]
    return PointAugment(**kw)  # type: ignore[arg-type]
