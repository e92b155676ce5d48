"""Shared bits of the engine tests: a tiny, fast training config."""

from __future__ import annotations

from tests.engine.tiny import ensure_registered

TINY = [
    "data.train=shapes:24:32",
    "data.val=shapes:30:32",
    "data.image_size=32",
    "data.augment={}",
    "train.batch_size=4",
    "train.epochs=2",
    "train.lr=0.05",
    "train.warmup_iters=2",
    "train.checkpoint_period=2",
    "train.num_threads=1",
    "eval.batch_size=4",
    "eval.num_overlays=2",
    "output.tensorboard=false",
    "output.mlflow=false",
    "output.progress=false",
]


def tiny_overrides(*extra: str) -> list[str]:
    """Overrides for a seconds-long run of the tiny registered model (plus ``extra``)."""
    return [f"model.name={ensure_registered()}", *TINY, *extra]
