"""The point-cloud sample schema and the base class of point datasets.

A raw scene is a :class:`PointScene` (NumPy). A dataset item, after the transform, is
``(points, target)``: ``points`` float32 Tensor[N, 6] (x, y, z in metres with z up, then r, g, b in
[0, 1]); ``target`` a dict with ``semantic`` int64 Tensor[N] (class index, -1 = unlabelled),
``instance`` int64 Tensor[N] (instance id, -1 = none, e.g. floor and walls) and ``scene_id`` int.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from instaseg.structures.points import PointInstances


@dataclass
class PointScene:
    """One scene: ``xyz`` float32 (N, 3); ``rgb`` float32 (N, 3) in [0, 1] (grey when unknown);
    ``semantic``/``instance`` int64 (N,) (-1 = unlabelled / no instance); ``normal`` optional (N, 3)."""

    xyz: np.ndarray
    rgb: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    name: str = ""
    normal: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.xyz)

    def subset(self, index: np.ndarray) -> PointScene:
        """The points ``index`` (bool mask or int indices) of this scene."""
        return PointScene(
            self.xyz[index],
            self.rgb[index],
            self.semantic[index],
            self.instance[index],
            self.name,
            None if self.normal is None else self.normal[index],
            dict(self.extra),
        )

    def ground_truth(self, stuff: tuple[int, ...] = ()) -> PointInstances:
        """The scene's instances (classes in ``stuff`` dropped) as :class:`PointInstances`."""
        return PointInstances.from_ids(self.instance, self.semantic, ignore=stuff)


def scene_to_sample(scene: PointScene, scene_id: int) -> tuple[Tensor, dict[str, Any]]:
    """The model's input ``(points [N, 6], target)`` for ``scene`` (see the module docstring)."""
    points = np.concatenate([scene.xyz, scene.rgb], axis=1).astype(np.float32)
    target = {
        "semantic": torch.from_numpy(scene.semantic.astype(np.int64)),
        "instance": torch.from_numpy(scene.instance.astype(np.int64)),
        "scene_id": int(scene_id),
    }
    return torch.from_numpy(points), target


class PointDataset(Dataset):
    """Base of point datasets: subclasses implement ``__len__`` and :meth:`scene`.

    ``class_names`` lists the classes (no background entry: index 0 is a real class), ``stuff_classes``
    the indices that are not instances (floor, wall...). ``transform(scene, rng) -> scene`` augments.
    """

    task = "points"
    class_names: list[str]
    stuff_classes: tuple[int, ...] = ()
    transform: Any = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def category_ids(self) -> list[int]:
        return list(range(len(self.class_names)))

    @property
    def thing_classes(self) -> list[int]:
        return [c for c in range(self.num_classes) if c not in self.stuff_classes]

    def scene(self, index: int) -> PointScene:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        scene = self.scene(index)
        if self.transform is not None:
            rng = np.random.default_rng(int(np.random.randint(0, 2**31 - 1)))
            scene = self.transform(scene, rng)
        return scene_to_sample(scene, index)
