"""Training data plumbing: a resumable seeded sampler, per-sample seeded augmentation, bad-sample
skipping, and batch resizing for multi-scale training.

Determinism: epoch ``e`` visits a permutation drawn from ``(seed, e)``; every sample is augmented
under RNGs seeded from ``(seed, e, index)``, so the batches do not depend on the number of loader
workers, and a run resumed at batch ``b`` of epoch ``e`` sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from instaseg.errors import DataError


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for augmenting sample ``index`` in ``epoch``."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, sample_seed)`` for one epoch of one rank, optionally starting mid-epoch.

    Like DistributedSampler: the permutation (seeded by ``(seed, epoch)``) is padded to a multiple of
    ``world_size`` by repeating its head, and rank ``r`` takes every ``world_size``-th element.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        batch_size: int,
        seed: int,
        epoch: int = 0,
        start_batch: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_samples < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        self.start_batch = start_batch
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size

    def indices(self) -> list[int]:
        """This rank's sample indices for the epoch, in order."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = math.ceil(self.num_samples / self.world_size) * self.world_size
        order += (order * math.ceil(total / len(order)))[: total - len(order)]
        return order[self.rank :: self.world_size]

    def num_batches(self) -> int:
        """Batches per epoch on this rank (the last may be smaller)."""
        return math.ceil(math.ceil(self.num_samples / self.world_size) / self.batch_size)

    def __len__(self) -> int:
        return max(self.num_batches() - self.start_batch, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        idx = self.indices()
        for b in range(self.start_batch, self.num_batches()):
            chunk = idx[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(i, sample_seed(self.seed, self.epoch, i)) for i in chunk]


def _set_transform_seed(transform: Any, seed: int) -> None:
    # albumentations 2.x keeps its own generators, untouched by the global seeds. InstanceTransform
    # reseeds itself once per worker on first use; let it do that now so our seed wins.
    if hasattr(transform, "_maybe_reseed"):
        transform._maybe_reseed()
    for obj in (transform, getattr(transform, "compose", None)):
        if obj is not None and hasattr(obj, "set_random_seed"):
            obj.set_random_seed(seed)
            return


@dataclass
class Skipped:
    """A sample that could not be loaded: its index and the error message (naming the file)."""

    index: int
    message: str


class SafeDataset(Dataset):
    """Wraps a dataset indexed by ``(index, seed)``: seeds python/numpy/torch (and the transform's
    own RNG) from ``seed`` around each load, and turns a :class:`DataError` into :class:`Skipped`
    when ``on_error == "skip"`` so one bad file does not kill a run."""

    def __init__(self, dataset: Dataset, *, on_error: str = "skip") -> None:
        self.dataset = dataset
        self.on_error = on_error

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            random.seed(seed)
            np.random.seed(seed)
            torch.random.default_generator.manual_seed(seed)  # CPU only: leave CUDA's RNG alone
            _set_transform_seed(getattr(self.dataset, "transform", None), seed)
            return self.dataset[index]
        except DataError as exc:
            if self.on_error == "raise":
                raise
            return Skipped(index, str(exc))
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            torch.set_rng_state(torch_state)


@dataclass
class Batch:
    """A collated batch: images, targets, and the samples skipped as bad."""

    images: list[Tensor]
    targets: list[dict[str, Any]]
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def collate_skipping(items: Sequence[Any]) -> Batch:
    """Collate ``(image, target)`` items, setting :class:`Skipped` ones aside."""
    good = [x for x in items if not isinstance(x, Skipped)]
    bad = [x for x in items if isinstance(x, Skipped)]
    return Batch([im for im, _ in good], [t for _, t in good], bad)


def _worker_init(worker_id: int) -> None:
    # Each worker's global RNGs follow the loader's seeded base seed (samples reseed anyway).
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(
    dataset: SafeDataset,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    start_batch: int = 0,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """The loader for one epoch starting at ``start_batch``. Its own seeded generator keeps the
    global torch RNG untouched (a DataLoader draws its worker base seed from it otherwise)."""
    sampler = ResumableBatchSampler(
        len(dataset),
        batch_size=batch_size,
        seed=seed,
        epoch=epoch,
        start_batch=start_batch,
        rank=rank,
        world_size=world_size,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_skipping,
        worker_init_fn=_worker_init if num_workers else None,
        generator=torch.Generator().manual_seed(seed * 7919 + epoch),
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def draw_scale(scales: Sequence[int], seed: int, iteration: int) -> int | None:
    """The training scale for optimizer step ``iteration`` (None when multi-scale is off)."""
    if not scales:
        return None
    g = torch.Generator().manual_seed(seed * 1_000_003 + iteration)
    return int(scales[int(torch.randint(len(scales), (1,), generator=g))])


def resize_batch(
    images: list[Tensor], targets: list[dict[str, Any]], size: int
) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Resize each image so its shorter side is ``size``; masks and ``sem_seg`` (nearest), boxes and
    areas follow."""
    out_images, out_targets = [], []
    for image, target in zip(images, targets, strict=True):
        h, w = image.shape[-2:]
        factor = size / min(h, w)
        nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
        if (nh, nw) == (h, w):
            out_images.append(image)
            out_targets.append(target)
            continue
        out_images.append(F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0])
        t = dict(target)
        masks = target["masks"]
        if masks.numel():
            t["masks"] = F.interpolate(masks[None].float(), size=(nh, nw), mode="nearest")[0] > 0.5
        else:
            t["masks"] = masks.new_zeros((masks.shape[0], nh, nw))
        sx, sy = nw / w, nh / h
        t["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy], device=target["boxes"].device)
        if "area" in target:
            t["area"] = t["masks"].flatten(1).sum(1).float() if masks.numel() else target["area"]
        if "sem_seg" in target:  # panoptic targets: nearest keeps the class ids (and VOID)
            sem = target["sem_seg"][None, None].float()
            t["sem_seg"] = F.interpolate(sem, size=(nh, nw), mode="nearest")[0, 0].long()
        out_targets.append(t)
    return out_images, out_targets
