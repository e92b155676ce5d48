"""A small PointGroup-style point-cloud instance model in pure PyTorch, and its export graph.

Input: one scene as float Tensor[N, 6] (x, y, z metres, z up; r, g, b in [0, 1]). The points are
averaged into a dense voxel grid (``voxel`` metres, no sparse library), a 3-level 3D-conv U-Net reads
the grid, and a point head (the point's voxel feature + its position inside the voxel, colour and
height) predicts per-point semantic logits [N, C] and an offset [N, 3] to its instance centre.
Inference shifts the thing points by their offsets, links shifted points closer than about
``cluster_cell`` (:func:`instaseg.ops.points.radius_components`), keeps clusters of at least
``min_points`` and scores each by its mean class probability (:class:`PointInstances`).

Training loss (PointGroup): cross-entropy on classes, L1 on offsets and a direction term
(1 - cosine between predicted and true offsets) on instance points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instaseg.models.registry import register_model
from instaseg.ops.points import radius_components
from instaseg.structures.points import PointInstances

POINT_FEATURES = 7  # position inside the voxel (3), rgb - 0.5 (3), height / 2 (1)
# occupancy (1), mean rgb - 0.5 (3), mean position inside the voxel (3), height / 2 (1), and the
# covariance of the positions inside the voxel (6: local surface shape, flat vs curved)
GRID_FEATURES = 14


def voxelize(points: Tensor, voxel: float, max_cells: int = 160) -> tuple[Tensor, Tensor, Tensor]:
    """Dense grid input for one scene ``points`` [N, 6].

    Returns ``(grid [1, GRID_FEATURES, X, Y, Z], cell [N] int64 flat index into X*Y*Z,
    point_features [N, POINT_FEATURES])``; X, Y, Z are multiples of 4. A scene wider than
    ``max_cells`` voxels along an axis uses coarser voxels (memory stays bounded).
    """
    xyz, rgb = points[:, :3].float(), points[:, 3:6].float()
    lo = xyz.min(0).values
    extent = float((xyz.max(0).values - lo).max()) if len(xyz) else 0.0
    voxel = max(voxel, extent / (max_cells - 4))
    rel = (xyz - lo) / voxel
    ijk = rel.floor().long()
    dims = [int(((int(ijk[:, d].max()) + 1 + 3) // 4) * 4) if len(xyz) else 4 for d in range(3)]
    flat = (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2]
    inside = rel - ijk.float() - 0.5
    height = xyz[:, 2:3] / 2.0 - lo[2] / 2.0
    pf = torch.cat([inside, rgb - 0.5, height], 1)
    total = dims[0] * dims[1] * dims[2]
    ii, jj = (0, 1, 2, 0, 0, 1), (0, 1, 2, 1, 2, 2)
    second = inside[:, ii] * inside[:, jj]
    acc = torch.zeros(total, GRID_FEATURES)
    acc.index_add_(0, flat, torch.cat([torch.ones(len(xyz), 1), rgb - 0.5, inside, height, second], 1))
    count = acc[:, :1].clamp(min=1)
    mean = acc[:, 1:] / count
    cov = (mean[:, 7:] - mean[:, 3:6][:, ii] * mean[:, 3:6][:, jj]) * 12.0  # ~unit scale for a filled voxel
    grid = torch.cat([(acc[:, :1] > 0).float(), mean[:, :7], cov], 1)
    grid = grid.T.reshape(1, GRID_FEATURES, *dims)
    return grid, flat, pf


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)
    )


class PointNetwork(nn.Module):
    """The tensor-only part: ``(grid, cell, point_features) -> (semantic logits [N, C], offsets [N, 3])``
    (what ONNX exports; voxelisation and clustering stay outside)."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.enc0 = nn.Sequential(_block(GRID_FEATURES, w), _block(w, w))
        self.enc1 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w))
        self.enc2 = nn.Sequential(_block(2 * w, 4 * w, 2), _block(4 * w, 4 * w), _block(4 * w, 4 * w))
        self.up2 = nn.ConvTranspose3d(4 * w, 2 * w, 2, 2)
        self.dec1 = _block(2 * w, 2 * w)
        self.up1 = nn.ConvTranspose3d(2 * w, w, 2, 2)
        self.dec0 = _block(w, w)
        self.head = nn.Sequential(
            nn.Linear(w + POINT_FEATURES, 64), nn.ReLU(inplace=True), nn.Linear(64, 64), nn.ReLU(inplace=True)
        )
        self.semantic = nn.Linear(64, num_classes)
        self.offset = nn.Linear(64, 3)

    def forward(self, grid: Tensor, cell: Tensor, point_features: Tensor) -> tuple[Tensor, Tensor]:
        x0 = self.enc0(grid)
        x1 = self.enc1(x0)
        x2 = self.enc2(x1)
        y1 = self.dec1(self.up2(x2) + x1)
        y0 = self.dec0(self.up1(y1) + x0)
        feats = y0.flatten(2)[0].T[cell]  # [N, w]
        h = self.head(torch.cat([feats, point_features], 1))
        return self.semantic(h), self.offset(h)


class PointGroupLite(nn.Module):
    """See the module docstring. ``stuff_classes`` are never instances (synthetic scenes: floor, wall)."""

    task = "points"

    def __init__(
        self,
        num_classes: int,
        *,
        voxel: float = 0.1,
        width: int = 16,
        stuff_classes: tuple[int, ...] = (0, 1),
        cluster_cell: float = 0.04,
        min_points: int = 20,
        score_thresh: float = 0.05,
    ) -> None:
        super().__init__()
        self.num_classes, self.voxel = num_classes, voxel
        self.stuff_classes = tuple(int(c) for c in stuff_classes)
        self.cluster_cell, self.min_points, self.score_thresh = cluster_cell, min_points, score_thresh
        self.net = PointNetwork(num_classes, width)

    def _run(self, points: Tensor) -> tuple[Tensor, Tensor]:
        device = next(self.parameters()).device
        grid, cell, pf = voxelize(points.detach().cpu(), self.voxel)
        return self.net(grid.to(device), cell.to(device), pf.to(device))

    def forward(self, points: list[Tensor], targets: list[dict[str, Any]] | None = None) -> Any:
        if not self.training or targets is None:
            return [self.predict(p) for p in points]
        losses = {"loss_sem": 0.0, "loss_offset": 0.0, "loss_dir": 0.0}
        for p, t in zip(points, targets, strict=True):
            logits, offsets = self._run(p)
            sem, inst = t["semantic"].to(logits.device), t["instance"].to(logits.device)
            losses["loss_sem"] = losses["loss_sem"] + F.cross_entropy(logits, sem, ignore_index=-1)
            fg = inst >= 0
            if fg.any():
                xyz = p[:, :3].to(logits.device)
                ids = torch.unique(inst[fg], return_inverse=True)[1]
                sums = torch.zeros(int(ids.max()) + 1, 3, device=xyz.device).index_add_(0, ids, xyz[fg])
                cnt = torch.bincount(ids).float()[:, None]
                true = (sums / cnt)[ids] - xyz[fg]
                pred = offsets[fg]
                losses["loss_offset"] = losses["loss_offset"] + (pred - true).abs().sum(1).mean()
                cos = F.cosine_similarity(pred, true, dim=1, eps=1e-6)
                losses["loss_dir"] = losses["loss_dir"] + (1 - cos).mean()
            else:
                losses["loss_offset"] = losses["loss_offset"] + offsets.sum() * 0.0
                losses["loss_dir"] = losses["loss_dir"] + offsets.sum() * 0.0
        return {k: v / len(points) for k, v in losses.items()}

    @torch.no_grad()
    def raw(self, points: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per-point class probabilities float32 (N, C) and offsets float32 (N, 3) for ``points`` [N, 6]."""
        logits, offsets = self._run(points)
        return logits.softmax(1).cpu().numpy(), offsets.cpu().numpy()

    @torch.no_grad()
    def predict(self, points: Tensor) -> PointInstances:
        """Instances of one scene ``points`` [N, 6] (eval mode)."""
        probs, offsets = self.raw(points)
        return cluster_instances(
            points[:, :3].cpu().numpy(),
            probs,
            offsets,
            stuff=self.stuff_classes,
            cell=self.cluster_cell,
            min_points=self.min_points,
            score_thresh=self.score_thresh,
        )

    def export_graph(self) -> nn.Module:
        return self.net


def cluster_instances(
    xyz: np.ndarray,
    probs: np.ndarray,
    offsets: np.ndarray,
    *,
    stuff: tuple[int, ...],
    cell: float,
    min_points: int,
    score_thresh: float = 0.0,
) -> PointInstances:
    """Group points into instances from per-point ``probs`` (N, C) and ``offsets`` (N, 3) (NumPy).

    Thing points (argmax class not in ``stuff``) are moved by their offsets and linked by
    :func:`radius_components` with ``cell``; a cluster of ``>= min_points`` points becomes an instance
    with its majority class and the mean probability of that class as score (kept if ``>=
    score_thresh``). Returns :class:`PointInstances` over all N points.
    """
    sem = probs.argmax(1)
    thing = ~np.isin(sem, np.asarray(stuff, np.int64))
    idx = np.flatnonzero(thing)
    ids = np.full(len(xyz), -1, np.int64)
    labels: list[int] = []
    scores: list[float] = []
    if len(idx):
        comp = radius_components(xyz[idx] + offsets[idx], cell)
        order = np.argsort(comp, kind="stable")
        bounds = np.flatnonzero(np.diff(comp[order])) + 1
        for members in np.split(idx[order], bounds):
            if len(members) < min_points:
                continue
            label = int(np.bincount(sem[members]).argmax())
            score = float(probs[members, label].mean())
            if score < score_thresh:
                continue
            ids[members] = len(labels)
            labels.append(label)
            scores.append(score)
    return PointInstances(ids, np.asarray(labels, np.int64), np.asarray(scores, np.float32))


@register_model(task="points")
def pointgroup_lite(
    *,
    num_classes: int = 7,
    voxel: float = 0.1,
    width: int = 16,
    stuff_classes: list[int] | tuple[int, ...] = (0, 1),
    cluster_cell: float = 0.04,
    min_points: int = 20,
    score_thresh: float = 0.05,
) -> nn.Module:
    """PointGroup-style voxel U-Net + offset clustering for point clouds (see the module docstring)."""
    return PointGroupLite(
        num_classes,
        voxel=voxel,
        width=width,
        stuff_classes=tuple(stuff_classes),
        cluster_cell=cluster_cell,
        min_points=min_points,
        score_thresh=score_thresh,
    )
