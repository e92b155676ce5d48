"""Self-training inside one run: halfway through, the model relabels its own training masks.

Box-only training on pseudo-masks (GrabCut) learns their errors. A model trained on them for a
while averages those errors over the whole dataset; its masks for the *known* boxes of the training
images, merged with the pseudo-masks (:func:`~instaseg.data.pseudo_masks.merge_model_mask`), are
better labels for the rest of the run. The relabel runs in the training process and its CPU time is
part of the run's (``RelabelHook.seconds``), so a comparison at equal budget stays honest.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from instaseg.engine.trainer import HookBase
from instaseg.errors import ConfigError


def relabel_dataset(model: Any, dataset: Any, *, weight: float = 0.75) -> dict[int, list[np.ndarray]]:
    """Replace the masks of a COCO-style ``dataset`` in place by the model-revised ones.

    ``dataset`` needs ``anns`` (per image, its annotation dicts with ``bbox`` XYWH pixels and
    ``segmentation``), ``load_record`` and ``image_info`` (as :class:`~instaseg.data.coco.CocoDataset`);
    or a split of one (``base`` and ``indices``: only those images are relabelled); ``model`` an
    :class:`~instaseg.models.mask_rcnn.InstanceMaskRCNN`. Crowd annotations are kept.
    Returns ``{image id: [mask bool (H, W)] for its non-crowd annotations, in order}``.
    """
    from instaseg.data.pseudo_masks import merge_model_mask
    from instaseg.models.box_supervision import rcnn_masks_at_boxes
    from instaseg.structures import encode_masks

    indices: Any = range(len(dataset))
    if hasattr(dataset, "base") and hasattr(dataset, "indices"):
        dataset, indices = dataset.base, dataset.indices
    if not hasattr(dataset, "anns") or not hasattr(model, "roi_heads"):
        raise ConfigError("self-training relabels COCO-file datasets with a Mask R-CNN model only")
    out: dict[int, list[np.ndarray]] = {}
    for i in indices:
        rec = dataset.load_record(i)
        anns = dataset.anns[i]
        picked = [k for k, a in enumerate(anns) if not a.get("iscrowd", 0)]
        out[int(rec.image_id)] = []
        if not picked:
            continue
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                               a["bbox"][1] + a["bbox"][3]] for a in (anns[k] for k in picked)],
                             dtype=torch.float32)
        labels = torch.as_tensor(rec.labels[picked], dtype=torch.int64)
        image = torch.from_numpy(np.ascontiguousarray(rec.image)).permute(2, 0, 1).float() / 255.0
        probs = rcnn_masks_at_boxes(model, image, boxes, labels).numpy()
        masks = [merge_model_mask(rec.masks[k], p, b, weight=weight)
                 for k, p, b in zip(picked, probs, boxes.numpy(), strict=True)]
        for k, mask, rle in zip(picked, masks, encode_masks(np.stack(masks)), strict=True):
            counts = rle["counts"]
            text = counts.decode("ascii") if isinstance(counts, bytes) else counts
            anns[k]["segmentation"] = {"size": list(mask.shape), "counts": text}
            anns[k]["area"] = float(mask.sum())
        out[int(rec.image_id)] = masks
    return out


class RelabelHook(HookBase):
    """After optimizer step ``at_iter``, relabel the training set's masks with the model
    (:func:`relabel_dataset`); the loader must read the dataset lazily (``data.num_workers=0``), so
    the following batches see the new masks. ``masks`` and ``seconds`` (process CPU time of the
    relabel) are kept for reports."""

    def __init__(self, at_iter: int, *, weight: float = 0.75, log: Any = print) -> None:
        self.at_iter = at_iter
        self.weight = weight
        self.log = log
        self.masks: dict[int, list[np.ndarray]] = {}
        self.seconds = 0.0

    def after_step(self) -> None:
        if self.trainer.iter != self.at_iter:
            return
        loader = self.trainer.make_loader(self.trainer.epoch, 0)
        if getattr(loader, "num_workers", 0):
            raise ConfigError("self-training needs data.num_workers=0 (workers hold copies of the masks)")
        dataset = getattr(loader.dataset, "dataset", loader.dataset)  # inside SafeDataset
        start = time.process_time()
        self.masks = relabel_dataset(self.trainer.module, dataset, weight=self.weight)
        self.seconds = time.process_time() - start
        self.log(f"relabelled {sum(len(m) for m in self.masks.values())} masks at iteration {self.at_iter} "
                 f"({self.seconds:.1f} CPU-s)")
