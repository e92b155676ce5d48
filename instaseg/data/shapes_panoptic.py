"""``shapes_panoptic[:N[:SIZE]]``: the synthetic shapes as *things* on a background split into two or
three textured *stuff* regions, generated on the fly (the embedded panoptic default).

Each image is a function of ``(seed, split, index)`` only. The background is cut by one or two random
straight lines into regions of distinct stuff classes, each with its own texture family (``sky``: a
smooth bluish gradient, ``grass``: greenish blotchy noise, ``wall``: warm stripes), so texture alone
tells the classes apart. A 2-pixel band along each cut is VOID (unlabeled, as boundaries often are in
real panoptic data). Then 1-6 shapes (:func:`instaseg.data.shapes.render_shapes`) are painted on top:
they are the things and cover VOID and stuff alike.

Category ids: things are the shapes' ids (1 circle, 2 square, 3 triangle), stuff 4 sky, 5 grass,
6 wall. Records carry ``extra["sem_seg"]`` (int64 (H, W): 0 things, 1..3 stuff in that order,
255 VOID) and ``extra["panoptic"]`` (a :class:`~instaseg.structures.panoptic.PanopticResult`: thing
segments ids ``1..N`` in instance order, stuff segments ids ``100 + category_id``).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from instaseg.data.base import Record
from instaseg.data.shapes import SHAPE_CLASSES, SPLIT_STREAMS, ShapesDataset, render_shapes
from instaseg.structures.panoptic import SEM_IGNORE, PanopticResult, PanopticSegment

STUFF_CLASSES = ("sky", "grass", "wall")
THING_CATEGORY_IDS = [1, 2, 3]
STUFF_CATEGORY_IDS = [4, 5, 6]
STUFF_SEGMENT_OFFSET = 100  # stuff segment id = 100 + category id (things are 1..N)
PANOPTIC_STREAM = 17  # a random stream apart from the plain shapes' streams


def panoptic_categories() -> list[dict[str, Any]]:
    """COCO panoptic ``categories``: ``{"id", "name", "isthing", "supercategory"}`` for things and stuff."""
    things = [{"id": c, "name": n, "isthing": 1, "supercategory": "shape"}
              for c, n in zip(THING_CATEGORY_IDS, SHAPE_CLASSES, strict=True)]
    stuff = [{"id": c, "name": n, "isthing": 0, "supercategory": "background"}
             for c, n in zip(STUFF_CATEGORY_IDS, STUFF_CLASSES, strict=True)]
    return things + stuff


def _texture(rng: np.random.Generator, kind: int, size: int) -> np.ndarray:
    """float32 (size, size, 3) in about [0, 255] for stuff class ``kind`` (0 sky, 1 grass, 2 wall)."""
    if kind == 0:  # sky: bluish, smooth vertical gradient
        base = np.array([100, 150, 215], np.float32) + rng.uniform(-20, 20, 3).astype(np.float32)
        ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)[:, None, None]
        return np.broadcast_to(base + ramp * np.float32(rng.uniform(10, 30)), (size, size, 3)).copy()
    if kind == 1:  # grass: greenish blotches (a small random grid upsampled)
        base = np.array([70, 140, 60], np.float32) + rng.uniform(-20, 20, 3).astype(np.float32)
        cells = int(rng.integers(6, 14))
        grid = rng.uniform(-30, 30, size=(cells, cells, 1)).astype(np.float32)
        return base + cv2.resize(grid, (size, size), interpolation=cv2.INTER_LINEAR)[..., None]
    base = np.array([175, 120, 95], np.float32) + rng.uniform(-20, 20, 3).astype(np.float32)  # wall
    period = rng.uniform(5, 10)
    angle = rng.uniform(0, np.pi)
    coords = np.arange(size, dtype=np.float32)
    phase = (np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]) * (2 * np.pi / period)
    return base + (np.sign(np.sin(phase)) * 25.0)[..., None].astype(np.float32)


def _cut(rng: np.random.Generator, size: int) -> np.ndarray:
    """Signed distance (size, size) float32 to a random line through the image's central area."""
    px, py = rng.uniform(0.3, 0.7, 2) * size
    angle = rng.uniform(0, np.pi)
    coords = np.arange(size, dtype=np.float32)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return (coords[None, :] - px) * cos + (coords[:, None] - py) * sin


def render_stuff(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A background of 2-3 stuff regions: ``image`` float32 (size, size, 3) in [0, 255] and
    ``sem_seg`` int64 (size, size) with 1..3 per region (``STUFF_CLASSES`` order) and 255 on the
    2-pixel VOID band along each cut."""
    regions = int(rng.integers(2, 4))
    classes = rng.permutation(len(STUFF_CLASSES))[:regions]
    first = _cut(rng, size)
    region = (first > 0).astype(np.int64)
    void = np.abs(first) < 1.0
    if regions == 3:  # the second cut splits one side of the first
        second = _cut(rng, size)
        side = int(rng.integers(2))
        split = (region == side) & (second > 0)
        region[split] = 2
        void |= (region != 1 - side) & (np.abs(second) < 1.0)
    image = np.zeros((size, size, 3), np.float32)
    sem = np.full((size, size), SEM_IGNORE, np.int64)
    for r, cls in enumerate(classes):
        where = region == r
        image[where] = _texture(rng, int(cls), size)[where]
        sem[where] = int(cls) + 1
    sem[void] = SEM_IGNORE
    return image, sem


def build_panoptic(
    sem_seg: np.ndarray, masks: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, PanopticResult]:
    """Combine a stuff ``sem_seg`` (int64 (H, W), 1..S or 255) and non-overlapping thing ``masks`` bool
    (N, H, W) with ``labels`` (N,) in 1..3 into the final ``sem_seg`` (0 on things) and the GT
    :class:`PanopticResult`. Stuff regions left without pixels are not listed."""
    sem = sem_seg.copy()
    ids = np.zeros(sem.shape, np.int32)
    segments = []
    for s, cat in enumerate(STUFF_CATEGORY_IDS, start=1):
        where = sem == s
        if where.any():
            ids[where] = STUFF_SEGMENT_OFFSET + cat
            segments.append(PanopticSegment(STUFF_SEGMENT_OFFSET + cat, cat, False))
    for k, (mask, label) in enumerate(zip(masks, labels, strict=True)):
        ids[mask] = k + 1
        sem[mask] = 0
        segments.append(PanopticSegment(k + 1, THING_CATEGORY_IDS[int(label) - 1], True))
    present = set(np.unique(ids).tolist())
    segments = [s for s in segments if s.id in present]
    return sem, PanopticResult(ids, segments)


class ShapesPanopticDataset(ShapesDataset):
    """Synthetic panoptic data: the shapes (things) on 2-3 textured stuff regions.

    Same arguments as :class:`~instaseg.data.shapes.ShapesDataset`. Besides ``class_names`` and
    ``category_ids`` (the things, with background) it exposes ``thing_category_ids``,
    ``stuff_category_ids`` (``sem_seg`` index ``i`` is ``stuff_category_ids[i - 1]``),
    ``stuff_names``, ``panoptic_categories`` (COCO panoptic category dicts) and ``load_panoptic``, as
    :class:`~instaseg.data.coco_panoptic.PanopticDatasetMixin` datasets.
    """

    name = "shapes_panoptic"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.thing_category_ids = list(THING_CATEGORY_IDS)
        self.stuff_category_ids = list(STUFF_CATEGORY_IDS)
        self.stuff_names = list(STUFF_CLASSES)
        self.panoptic_categories = panoptic_categories()

    def load_panoptic(self, index: int) -> PanopticResult:
        """The GT panoptic segmentation of image ``index`` (renders the image too: it is cheap)."""
        return self.load_record(index).extra["panoptic"]

    def image_info(self, index: int) -> dict[str, Any]:
        info = super().image_info(index)
        info["file_name"] = info["file_name"].replace("shapes_", "shapes_panoptic_", 1)
        return info

    def load_record(self, index: int) -> Record:
        index = self._check_index(index)
        rng = np.random.default_rng([self.seed, SPLIT_STREAMS[self.split], PANOPTIC_STREAM, index])
        background, stuff = render_stuff(rng, self.image_size)
        image, masks, labels = render_shapes(
            rng, self.image_size, max_objects=self.max_objects, min_visible=self.min_visible,
            background=background,
        )
        sem, panoptic = build_panoptic(stuff, masks, labels)
        return Record(
            image=image,
            masks=masks,
            labels=labels,
            iscrowd=np.zeros(len(labels), dtype=np.int64),
            image_id=index,
            file_name=self.image_info(index)["file_name"],
            extra={"sem_seg": sem, "panoptic": panoptic},
        )
