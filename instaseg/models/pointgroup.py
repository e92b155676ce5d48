"""A small PointGroup-style point-cloud instance model in pure PyTorch, and its export graph.

Input: one scene as float Tensor[N, 6] (x, y, z metres, z up; r, g, b in [0, 1]). The points are
averaged into occupied voxels of ``voxel`` metres, a sparse voxel U-Net
(:mod:`instaseg.models.sparse_unet`: convolutions on occupied voxels only, no sparse library) reads them,
and a point head (the point's voxel feature + its position inside the voxel, colour and height)
predicts per-point semantic logits [N, C] and an offset [N, 3] to its instance centre. Inference
shifts the thing points by their offsets, smooths their class probabilities over points voting for
the same centre, links shifted points closer than ``cluster_radius`` per predicted class, keeps
clusters of at least ``min_points`` and scores each by its mean class probability
(:func:`cluster_instances`, :class:`PointInstances`).

Training loss (PointGroup): cross-entropy on classes (``class_weights``), L1 on offsets and a direction
term (1 - cosine between predicted and true offsets) on instance points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instaseg.errors import ConfigError
from instaseg.models.registry import register_model
from instaseg.models.sparse_unet import (
    POINT_FEATURES,
    SHAPE_FEATURES,
    VOXEL_FEATURES,
    SparseUNet,
    sparse_inputs,
)
from instaseg.ops.points import radius_graph_components, voxel_downsample
from instaseg.structures.points import PointInstances


class PointNetwork(nn.Module):
    """The tensor-only part: ``(features, cell, point_features, *tables) -> (semantic logits [N, C],
    offsets [N, 3])`` on the inputs of :func:`sparse_inputs` (what ONNX exports; building the voxel
    tables and clustering stay outside)."""

    def __init__(self, num_classes: int, width: int = 16, levels: int = 5, shape: int = 2) -> None:
        super().__init__()
        self.unet = SparseUNet(VOXEL_FEATURES + SHAPE_FEATURES * shape, width, levels)
        self.head = nn.Sequential(
            nn.Linear(width + POINT_FEATURES, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, 64),
            nn.ReLU(inplace=True),
        )
        self.semantic = nn.Linear(64, num_classes)
        self.offset = nn.Linear(64, 3)

    def forward(
        self, features: Tensor, cell: Tensor, point_features: Tensor, *tables: Tensor
    ) -> tuple[Tensor, Tensor]:
        voxels = self.unet(features, tables)
        h = self.head(torch.cat([voxels.index_select(0, cell), point_features], 1))
        return self.semantic(h), self.offset(h)


class PointGroupLite(nn.Module):
    """See the module docstring. ``stuff_classes`` are never instances (synthetic scenes: floor, wall)."""

    task = "points"

    def __init__(
        self,
        num_classes: int,
        *,
        voxel: float = 0.05,
        width: int = 16,
        levels: int = 5,
        shape_features: int = 2,
        class_weights: tuple[float, ...] | None = None,
        stuff_classes: tuple[int, ...] = (0, 1),
        cluster_radius: float = 0.08,
        per_class: bool = True,
        smooth_iters: int = 2,
        min_points: int = 20,
        score_thresh: float = 0.05,
    ) -> None:
        super().__init__()
        self.num_classes, self.voxel, self.levels = num_classes, voxel, levels
        self.stuff_classes = tuple(int(c) for c in stuff_classes)
        self.cluster_radius, self.per_class, self.smooth_iters = cluster_radius, per_class, smooth_iters
        self.min_points, self.score_thresh = min_points, score_thresh
        self.shape_features = int(shape_features)
        if class_weights is not None and len(class_weights) != num_classes:
            raise ConfigError(
                f"class_weights has {len(class_weights)} entries, the model {num_classes} classes"
            )
        weights = torch.ones(num_classes) if class_weights is None else torch.tensor(class_weights).float()
        self.register_buffer("class_weights", weights, persistent=False)
        self.net = PointNetwork(num_classes, width, levels, self.shape_features)

    def _run(self, points: Tensor) -> tuple[Tensor, Tensor]:
        device = next(self.parameters()).device
        return self.net(*(t.to(device) for t in self.inputs(points)))

    def inputs(self, points: Tensor) -> tuple[Tensor, ...]:
        """The network's inputs for ``points`` [N, 6] (:func:`sparse_inputs`)."""
        return sparse_inputs(points.detach().cpu(), self.voxel, self.levels, shape=self.shape_features)

    def forward(self, points: list[Tensor], targets: list[dict[str, Any]] | None = None) -> Any:
        if not self.training or targets is None:
            return [self.predict(p) for p in points]
        losses = {"loss_sem": 0.0, "loss_offset": 0.0, "loss_dir": 0.0}
        for p, t in zip(points, targets, strict=True):
            logits, offsets = self._run(p)
            sem, inst = t["semantic"].to(logits.device), t["instance"].to(logits.device)
            losses["loss_sem"] = losses["loss_sem"] + F.cross_entropy(
                logits, sem, weight=self.class_weights.to(logits.device), ignore_index=-1
            )
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
            radius=self.cluster_radius,
            per_class=self.per_class,
            smooth_iters=self.smooth_iters,
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
    radius: float,
    min_points: int,
    score_thresh: float = 0.0,
    per_class: bool = True,
    smooth_iters: int = 0,
    max_points: int = 6000,
) -> PointInstances:
    """Group points into instances from per-point ``probs`` (N, C) and ``offsets`` (N, 3) (NumPy).

    Thing points (argmax class not in ``stuff``) are moved by their offsets; with ``smooth_iters``, each
    one's class probabilities are averaged ``smooth_iters`` times with those of the shifted points within
    ``radius`` (points voting for the same centre agree on a class). Shifted points are linked when
    closer than ``radius`` (:func:`radius_graph_components`), separately for each predicted class when
    ``per_class`` (as PointGroup: touching objects of different classes stay apart); a component of
    ``>= min_points`` points becomes an instance with its majority class and the mean probability of
    that class as score (kept if ``>= score_thresh``). Returns :class:`PointInstances` over all N points.

    Shifted points crowd together, so the neighbour graphs grow with the square of the density: with
    more than ``max_points`` thing points, one point per voxel (sized to keep at most ``max_points``)
    stands for its voxel and the other points follow it (counts stay those of all points).
    """
    stuff_ids = np.asarray(stuff, np.int64)
    idx = np.flatnonzero(~np.isin(probs.argmax(1), stuff_ids))
    ids = np.full(len(xyz), -1, np.int64)
    labels: list[int] = []
    scores: list[float] = []
    if len(idx) == 0:
        return PointInstances(ids, np.zeros(0, np.int64), np.zeros(0, np.float32))
    follow, weight = np.arange(len(idx)), np.ones(len(idx), np.int64)
    size = radius / 4
    while len(follow) > max_points:  # dense scene: representatives
        keep, inverse = voxel_downsample(xyz[idx], size)
        if len(keep) <= max_points:
            idx, follow, weight = idx[keep], inverse, np.bincount(inverse, minlength=len(keep))
            break
        size *= 1.5
    shifted = xyz[idx] + offsets[idx]
    p = probs[idx]
    if smooth_iters > 0:
        p = vote_smooth(shifted, p, radius, smooth_iters)
    sem = p.argmax(1)
    thing = np.flatnonzero(~np.isin(sem, stuff_ids))  # smoothing may turn a thing point into stuff
    rep_ids = np.full(len(idx), -1, np.int64)
    groups = [thing[sem[thing] == c] for c in np.unique(sem[thing])] if per_class else [thing]
    for group in groups:
        if weight[group].sum() < min_points:
            continue
        comp = radius_graph_components(shifted[group], radius)
        order = np.argsort(comp, kind="stable")
        bounds = np.flatnonzero(np.diff(comp[order])) + 1
        for members in np.split(group[order], bounds):
            if weight[members].sum() < min_points:
                continue
            label = int(np.bincount(sem[members], weights=weight[members]).argmax())
            score = float(np.average(p[members, label], weights=weight[members]))
            if score < score_thresh:
                continue
            rep_ids[members] = len(labels)
            labels.append(label)
            scores.append(score)
    all_idx = np.flatnonzero(~np.isin(probs.argmax(1), stuff_ids))
    ids[all_idx] = rep_ids[follow]
    return PointInstances(ids, np.asarray(labels, np.int64), np.asarray(scores, np.float32))


def vote_smooth(shifted: np.ndarray, probs: np.ndarray, radius: float, iters: int) -> np.ndarray:
    """``probs`` (M, C) averaged ``iters`` times over each point and its neighbours closer than ``radius``
    in ``shifted`` (M, 3)."""
    from scipy.sparse import coo_matrix, identity
    from scipy.spatial import cKDTree

    pairs = cKDTree(shifted).query_pairs(radius, output_type="ndarray")
    rows, cols = np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]]
    n = len(shifted)
    graph = coo_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n)).tocsr()
    graph = graph + identity(n, np.float32, format="csr")
    degree = np.asarray(graph.sum(1), np.float32)
    for _ in range(iters):
        probs = np.asarray(graph @ probs) / degree
    return probs.astype(np.float32)


@register_model(task="points")
def pointgroup_lite(
    *,
    num_classes: int = 7,
    voxel: float = 0.05,
    width: int = 16,
    levels: int = 5,
    shape_features: int = 2,
    class_weights: list[float] | tuple[float, ...] | None = None,
    stuff_classes: list[int] | tuple[int, ...] = (0, 1),
    cluster_radius: float = 0.08,
    per_class: bool = True,
    smooth_iters: int = 2,
    min_points: int = 20,
    score_thresh: float = 0.05,
) -> nn.Module:
    """PointGroup-style voxel U-Net + offset clustering for point clouds (see the module docstring)."""
    return PointGroupLite(
        num_classes,
        voxel=voxel,
        width=width,
        levels=levels,
        shape_features=shape_features,
        class_weights=None if class_weights is None else tuple(class_weights),
        stuff_classes=tuple(stuff_classes),
        cluster_radius=cluster_radius,
        per_class=per_class,
        smooth_iters=smooth_iters,
        min_points=min_points,
        score_thresh=score_thresh,
    )
