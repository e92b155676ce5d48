"""Training the association head of the video model on frame pairs (stage 2 of ``configs/video.yaml``).

Stage 1 trains the detector on the frames of the video dataset with the ordinary image engine
(``instaseg train``); stage 2 (:func:`train_association`) loads it into the temporal model, freezes the
detector and trains only the embedding head contrastively on clips of two frames drawn ``max_gap`` frames
apart at most, with one augmentation per clip (:class:`instaseg.data.video.ClipDataset`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instaseg.data.video import ClipDataset


def train_association(model: Any, dataset: Any, *, iters: int = 300, batch_size: int = 8, lr: float = 1e-3,
                      max_gap: int = 3, seed: int = 0, log: Callable[[str], None] | None = None,
                      log_period: int = 50) -> list[float]:
    """Train ``model.embed_head`` (everything else frozen, BatchNorm in eval mode) for ``iters`` steps of
    ``batch_size`` clips from the video dataset ``dataset``. Returns the loss of every step."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.embed_head.parameters():
        p.requires_grad_(True)
    model.eval()
    model.embed_head.train()
    clips = [ClipDataset(dataset, length=2, stride=g, seed=seed + g) for g in range(1, max_gap + 1)]
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.embed_head.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, iters))
    losses: list[float] = []
    start = time.perf_counter()
    for it in range(iters):
        batch = []
        for _ in range(batch_size):
            ds = clips[int(rng.integers(len(clips)))]
            batch.append(ds[int(rng.integers(len(ds)))])
        loss = model.association_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log is not None and (it + 1) % log_period == 0:
            log(f"association it {it + 1}/{iters} loss {np.mean(losses[-log_period:]):.4f} "
                f"({time.perf_counter() - start:.0f} s)")
    model.eval()
    return losses


def save_video_checkpoint(model: Any, path: str | Path, *, class_names: list[str], category_ids: list[int],
                          model_kwargs: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Save ``model`` as an instaseg checkpoint (``model_spec`` = the registered video model) that
    :func:`instaseg.models.checkpoint.load_model` and the predictor read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(),
                "model_spec": {"name": "maskrcnn_r18_slim_video", "kwargs": dict(model_kwargs)},
                "class_names": list(class_names), "category_ids": list(category_ids), **(extra or {})}, path)
    return path
