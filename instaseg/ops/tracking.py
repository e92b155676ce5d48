"""Pure tracking operations: a constant-velocity Kalman filter on boxes, box IoU, cosine similarity and
optimal one-to-one assignment. NumPy only; no state lives here (the trackers keep it).

Box state (SORT/ByteTrack's parametrisation): ``x = (cx, cy, a, h, vcx, vcy, va, vh)`` with centre
``(cx, cy)``, aspect ratio ``a = w / h`` and height ``h`` in pixels; boxes in and out are XYXY pixels.
"""

from __future__ import annotations

import numpy as np

_STD_POS = 1.0 / 20  # process/measurement noise relative to the box height, as in DeepSORT/ByteTrack
_STD_VEL = 1.0 / 160


def xyxy_to_xyah(boxes: np.ndarray) -> np.ndarray:
    """XYXY (N, 4) -> (cx, cy, w / h, h) (N, 4)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = b[:, 2] - b[:, 0], np.maximum(b[:, 3] - b[:, 1], 1e-6)
    return np.column_stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, w / h, h])


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """(cx, cy, w / h, h) (N, 4) -> XYXY (N, 4)."""
    s = np.asarray(xyah, dtype=np.float64).reshape(-1, 4)
    w, h = s[:, 2] * s[:, 3], s[:, 3]
    return np.column_stack([s[:, 0] - w / 2, s[:, 1] - h / 2, s[:, 0] + w / 2, s[:, 1] + h / 2])


def kalman_init(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New track states from XYXY boxes (N, 4): ``mean`` (N, 8) with zero velocity, ``cov`` (N, 8, 8)."""
    z = xyxy_to_xyah(boxes)
    mean = np.concatenate([z, np.zeros_like(z)], axis=1)
    h = z[:, 3]
    std = np.stack([2 * _STD_POS * h, 2 * _STD_POS * h, np.full_like(h, 1e-2), 2 * _STD_POS * h,
                    10 * _STD_VEL * h, 10 * _STD_VEL * h, np.full_like(h, 1e-5), 10 * _STD_VEL * h], axis=1)
    cov = np.zeros((len(z), 8, 8))
    idx = np.arange(8)
    cov[:, idx, idx] = std**2
    return mean, cov


_F = np.eye(8)
_F[:4, 4:] = np.eye(4)
_H = np.eye(4, 8)


def kalman_predict(mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One constant-velocity step for N states: ``mean`` (N, 8), ``cov`` (N, 8, 8) -> the predicted pair."""
    if len(mean) == 0:
        return mean, cov
    h = mean[:, 3]
    std = np.stack([_STD_POS * h, _STD_POS * h, np.full_like(h, 1e-2), _STD_POS * h,
                    _STD_VEL * h, _STD_VEL * h, np.full_like(h, 1e-5), _STD_VEL * h], axis=1)
    q = np.zeros_like(cov)
    idx = np.arange(8)
    q[:, idx, idx] = std**2
    mean = mean @ _F.T
    cov = _F @ cov @ _F.T + q
    return mean, cov


def kalman_update(mean: np.ndarray, cov: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct N states with measured XYXY ``boxes`` (N, 4) (row i measures state i)."""
    if len(mean) == 0:
        return mean, cov
    z = xyxy_to_xyah(boxes)
    h = mean[:, 3]
    std = np.stack([_STD_POS * h, _STD_POS * h, np.full_like(h, 1e-1), _STD_POS * h], axis=1)
    r = np.zeros((len(mean), 4, 4))
    idx = np.arange(4)
    r[:, idx, idx] = std**2
    s = _H @ cov @ _H.T + r  # (N, 4, 4)
    k = cov @ _H.T @ np.linalg.inv(s)  # (N, 8, 4)
    mean = mean + np.einsum("nij,nj->ni", k, z - mean @ _H.T)
    cov = cov - k @ s @ np.transpose(k, (0, 2, 1))
    return mean, cov


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of XYXY boxes ``a`` (N, 4) and ``b`` (M, 4) -> (N, M) float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of row vectors ``a`` (N, D) and ``b`` (M, D) -> (N, M) in [-1, 1]."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def assign(score: np.ndarray, threshold: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Optimal one-to-one assignment maximising the summed ``score`` (N, M) (Hungarian method), keeping
    pairs with ``score >= threshold``. Returns ``(pairs, unmatched rows, unmatched cols)``."""
    from scipy.optimize import linear_sum_assignment

    n, m = score.shape
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    rows, cols = linear_sum_assignment(-np.where(score >= threshold, score, -1e6))
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if score[r, c] >= threshold]
    mr, mc = {p[0] for p in pairs}, {p[1] for p in pairs}
    return pairs, [i for i in range(n) if i not in mr], [j for j in range(m) if j not in mc]


def suppress_duplicates(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Class-agnostic greedy NMS: indices (into ``boxes`` (N, 4) XYXY) of the detections kept, by
    decreasing score; a detection overlapping a kept, higher-scoring one with box IoU > ``iou_threshold``
    is dropped (the same object found twice, e.g. under two classes)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    iou = box_iou(boxes, boxes)
    keep: list[int] = []
    for i in order:
        if all(iou[i, k] <= iou_threshold for k in keep):
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)
