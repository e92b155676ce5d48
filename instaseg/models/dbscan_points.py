"""The classical point-cloud baseline: remove the dominant planes (RANSAC), cluster the rest with
Open3D's DBSCAN. No learned parameters; it finds objects but cannot name them, so every cluster gets
``label`` (score: cluster size relative to the largest, so big clusters rank first).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from instaseg.models.registry import register_model
from instaseg.structures.points import PointInstances


def remove_planes(
    xyz: np.ndarray, *, max_planes: int, distance: float, min_fraction: float, seed: int = 0
) -> np.ndarray:
    """Bool (N,) mask of the points left after removing up to ``max_planes`` RANSAC planes, each with
    at least ``min_fraction`` of the points (inliers within ``distance`` metres)."""
    import open3d as o3d

    o3d.utility.random.seed(seed)
    keep = np.ones(len(xyz), bool)
    for _ in range(max_planes):
        idx = np.flatnonzero(keep)
        if len(idx) < 3:
            break
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz[idx].astype(np.float64)))
        _, inliers = pcd.segment_plane(distance_threshold=distance, ransac_n=3, num_iterations=200)
        if len(inliers) < min_fraction * len(xyz):
            break
        keep[idx[np.asarray(inliers, np.int64)]] = False
    return keep


class PlaneDBSCAN(nn.Module):
    """RANSAC plane removal + ``cluster_dbscan(eps, min_points)``; see the module docstring."""

    task = "points"

    def __init__(
        self,
        num_classes: int,
        *,
        eps: float = 0.05,
        min_points: int = 10,
        max_planes: int = 3,
        plane_distance: float = 0.02,
        plane_min_fraction: float = 0.05,
        min_cluster: int = 20,
        label: int = 2,
    ) -> None:
        super().__init__()
        self.num_classes, self.eps, self.min_points = num_classes, eps, min_points
        self.max_planes, self.plane_distance, self.plane_min_fraction = (
            max_planes,
            plane_distance,
            plane_min_fraction,
        )
        self.min_cluster, self.label = min_cluster, label
        self.register_buffer("_anchor", torch.zeros(1))  # device anchor; nothing to train

    def forward(self, points: list[Tensor], targets: list[dict[str, Any]] | None = None) -> Any:
        if self.training and targets is not None:
            raise NotImplementedError("dbscan_points has nothing to train: use instaseg evaluate/predict")
        return [self.predict(p) for p in points]

    @torch.no_grad()
    def predict(self, points: Tensor) -> PointInstances:
        import open3d as o3d

        xyz = points[:, :3].cpu().numpy().astype(np.float64)
        keep = remove_planes(
            xyz,
            max_planes=self.max_planes,
            distance=self.plane_distance,
            min_fraction=self.plane_min_fraction,
        )
        ids = np.full(len(xyz), -1, np.int64)
        idx = np.flatnonzero(keep)
        if len(idx) == 0:
            return PointInstances(ids, np.zeros(0, np.int64), np.zeros(0, np.float32))
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz[idx]))
        comp = np.asarray(pcd.cluster_dbscan(eps=self.eps, min_points=self.min_points), np.int64)
        sizes = np.bincount(comp[comp >= 0]) if (comp >= 0).any() else np.zeros(0, np.int64)
        good = np.flatnonzero(sizes >= self.min_cluster)
        remap = np.full(len(sizes) + 1, -1, np.int64)
        remap[good] = np.arange(len(good))
        ids[idx] = remap[comp]  # comp == -1 (noise) reads remap[-1] == -1
        scores = sizes[good] / max(int(sizes.max(initial=1)), 1)
        return PointInstances(ids, np.full(len(good), self.label, np.int64), scores.astype(np.float32))


@register_model(task="points")
def dbscan_points(
    *,
    num_classes: int = 7,
    eps: float = 0.05,
    min_points: int = 10,
    max_planes: int = 3,
    plane_distance: float = 0.02,
    plane_min_fraction: float = 0.05,
    min_cluster: int = 20,
    label: int = 2,
) -> nn.Module:
    """RANSAC planes out, Open3D DBSCAN on the rest (``eps`` metres, ``min_points``)."""
    return PlaneDBSCAN(
        num_classes,
        eps=eps,
        min_points=min_points,
        max_planes=max_planes,
        plane_distance=plane_distance,
        plane_min_fraction=plane_min_fraction,
        min_cluster=min_cluster,
        label=label,
    )
