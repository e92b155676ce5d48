"""Active learning: rank unlabelled images by how much labelling them should teach the model.

Per image: ``uncertainty`` (mean over its detections of the score's and the mask's closeness to 0.5),
``disagreement`` (1 - mean mask IoU between the predictions on the image and, flipped back, on its
mirror image) and an embedding (the backbone's pooled features, or a thumbnail for models without
one). :func:`select` picks a batch greedily: informativeness, plus a typicality bonus (how close an
image is to its nearest pool neighbours, so the batch is not a set of outliers: uncertainty alone picks
the odd images first, which teaches a young model little), plus a richness bonus (the expected object
count: uncertain images tend to hold fewer objects, so where labelling is paid per image they give
fewer labels), plus a diversity bonus: the embedding distance to the nearest image already labelled or
picked (k-center greedy), so the batch neither repeats what is labelled nor holds N near-copies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instaseg.errors import DataError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class ImageScore:
    """One pool image's scores (all in [0, 1] except ``diversity``, the k-center distance at pick)."""

    file: str
    uncertainty: float
    disagreement: float
    informativeness: float
    detections: int
    diversity: float = 0.0
    rank: int = 0
    expected_objects: float = 0.0  # the sum of the detection scores


def list_pool(pool: str | Path, what: str = "pool") -> tuple[list[Path], list[str]]:
    """Image files of a pool folder (sorted) and the names it skipped (not images by extension);
    ``what`` names the folder in the error when it is not one."""
    root = Path(pool)
    if not root.is_dir():
        raise DataError(root, f"{what} must be a folder of images")
    files, skipped = [], []
    for p in sorted(root.iterdir()):
        if p.is_file():
            (files if p.suffix.lower() in IMAGE_EXTS else skipped).append(p if p.suffix.lower() in IMAGE_EXTS
                                                                           else p.name)
    return files, [str(s) for s in skipped]


def _mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of bool masks ``a`` (N, H, W) and ``b`` (M, H, W) -> (N, M)."""
    fa, fb = a.reshape(len(a), -1).astype(np.float32), b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None] - inter
    return inter / np.maximum(union, 1.0)


def flip_disagreement(masks: np.ndarray, flipped_masks: np.ndarray) -> float:
    """1 - mean best-match mask IoU between ``masks`` (N, H, W) and ``flipped_masks`` (M, H, W) (the
    predictions on the mirrored image, mirrored back), over both sets; 0 when both are empty."""
    if len(masks) == 0 and len(flipped_masks) == 0:
        return 0.0
    if len(masks) == 0 or len(flipped_masks) == 0:
        return 1.0
    iou = _mask_iou(masks, flipped_masks)
    return float(1.0 - np.concatenate([iou.max(1), iou.max(0)]).mean())


def uncertainty(scores: np.ndarray, mask_probs: list[np.ndarray]) -> float:
    """Mean over detections of ``(1 - |2s - 1| + mean(1 - |2p - 1|)) / 2``: scores ``(K,)``, each
    detection's mask probabilities any shape. An image with no detection scores 0.5 (unknown)."""
    if len(scores) == 0:
        return 0.5
    us = 1.0 - np.abs(2 * scores - 1)
    um = np.array([float((1.0 - np.abs(2 * p - 1)).mean()) if p.size else 0.0 for p in mask_probs])
    return float(((us + um) / 2).mean())


def _pooled(feats: Any) -> np.ndarray:
    """Unit-norm concatenation of the spatial means of backbone output maps (the first image's)."""
    maps = list(feats.values()) if isinstance(feats, dict) else [feats]
    vec = torch.cat([m.float().mean(dim=(-2, -1))[0] for m in maps]).numpy()
    return vec / max(float(np.linalg.norm(vec)), 1e-8)


def embed(model: Any, image: torch.Tensor) -> np.ndarray:
    """A unit-norm image embedding: the model's pooled backbone features when it has ``backbone``
    and ``transform`` (Mask R-CNN family), else a 16 x 16 thumbnail. ``image`` [3, H, W] in [0, 1]."""
    if hasattr(model, "backbone") and hasattr(model, "transform"):
        with torch.inference_mode():
            batch, _ = model.transform([image])
            return _pooled(model.backbone(batch.tensors))
    vec = torch.nn.functional.adaptive_avg_pool2d(image[None], 16).flatten().numpy()
    return vec / max(float(np.linalg.norm(vec)), 1e-8)


def score_image(predictor: Any, path: Path) -> tuple[ImageScore, np.ndarray]:
    """Score one image file: ``(ImageScore, embedding)``. The embedding of a model with a backbone
    is taken from the prediction's own backbone pass (a forward hook), not from a third pass."""
    from instaseg.data.io import read_image
    from instaseg.predict.predictor import image_to_tensor

    image = read_image(path)
    model = predictor.model
    captured: list[np.ndarray] = []
    hook = (model.backbone.register_forward_hook(lambda _m, _i, out: captured.append(_pooled(out)))
            if hasattr(model, "backbone") and hasattr(model, "transform") else None)
    try:
        inst = predictor.predict(image)
    finally:
        if hook is not None:
            hook.remove()
    flipped = predictor.predict(np.ascontiguousarray(image[:, ::-1]))
    masks = np.asarray(inst.to_dense_masks(), dtype=bool)
    back = np.asarray(flipped.to_dense_masks(), dtype=bool)[:, :, ::-1]
    lowres = getattr(inst, "mask_lowres", None)
    probs = [m.numpy() for m in lowres] if lowres is not None else [m.astype(np.float32) for m in masks]
    u = uncertainty(inst.scores.numpy(), probs)
    d = flip_disagreement(masks, back)
    score = ImageScore(str(path), round(u, 4), round(d, 4), round((u + d) / 2, 4), len(masks),
                       expected_objects=round(float(inst.scores.sum()), 4))
    return score, captured[0] if captured else embed(model, image_to_tensor(image))


def typicality(embeddings: np.ndarray, k: int = 10) -> np.ndarray:
    """How typical each row of ``embeddings`` (N, D), unit-norm, is of the set: its mean cosine
    similarity to its ``k`` nearest other rows, min-max scaled to [0, 1] (1 the most typical). All
    ones when N < 3 or every row is as typical as the others. Returns (N,)."""
    n = len(embeddings)
    if n < 3:
        return np.ones(n)
    sim = embeddings @ embeddings.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, n - 1)
    mean_top = np.sort(sim, axis=1)[:, -k:].mean(axis=1)
    span = float(mean_top.max() - mean_top.min())
    return (mean_top - mean_top.min()) / span if span > 1e-12 else np.ones(n)


def embed_files(predictor: Any, files: list[Path]) -> np.ndarray:
    """Embeddings (len(files), D) of image files with ``predictor``'s model (see :func:`embed`)."""
    from instaseg.data.io import read_image
    from instaseg.predict.predictor import image_to_tensor

    return np.stack([embed(predictor.model, image_to_tensor(read_image(f))) for f in files])


def select(scores: list[ImageScore], embeddings: np.ndarray, budget: int, *,
           diversity_weight: float = 0.5, typicality_weight: float = 0.5, richness_weight: float = 1.0,
           labelled: np.ndarray | None = None) -> list[ImageScore]:
    """Greedy batch: each pick maximises ``informativeness + typicality_weight * typicality +
    richness_weight * expected_objects / its pool maximum + diversity_weight * d / d_max``, ``d`` the
    embedding distance (rows of ``embeddings`` (N, D)) to the nearest image of ``labelled`` (M, D) or
    picked so far (no bonus before the first pick when nothing is labelled). Richness favours images
    with more objects: more labels an image where the cost is counted in images (on by default: on
    Penn-Fudan, 3 seeds, it lifted the selection from below random to above it, BENCHMARKS.md;
    0 where labelling is paid per object). Returns the picks in order, with ``rank`` and ``diversity``."""
    n = len(scores)
    base = np.array([s.informativeness for s in scores]) + typicality_weight * typicality(embeddings)
    objects = np.array([s.expected_objects for s in scores], dtype=float)
    if richness_weight and objects.max(initial=0.0) > 0:
        base = base + richness_weight * objects / objects.max()
    nearest = np.full(n, np.inf)
    for row in labelled if labelled is not None else []:
        nearest = np.minimum(nearest, np.linalg.norm(embeddings - row, axis=1))
    picked: list[int] = []
    for rank in range(min(budget, n)):
        if np.isfinite(nearest).any():
            d = nearest.copy()
            d_max = max(float(d[np.isfinite(d)].max()), 1e-8)
            value = base + diversity_weight * d / d_max
        else:
            value = base.copy()
            d = np.zeros(n)
        value[picked] = -np.inf
        best = int(np.argmax(value))
        scores[best].rank, scores[best].diversity = rank + 1, round(float(d[best]), 4)
        picked.append(best)
        nearest = np.minimum(nearest, np.linalg.norm(embeddings - embeddings[best], axis=1))
    return [scores[i] for i in picked]


def to_json(picks: list[ImageScore], *, skipped: list[str], pool: str, budget: int) -> dict[str, Any]:
    """The file ``instaseg active select`` writes."""
    return {"pool": pool, "budget": budget, "selected": [asdict(p) for p in picks],
            "skipped_non_images": skipped}
