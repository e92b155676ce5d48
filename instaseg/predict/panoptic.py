"""Panoptic validation through the one predictor path: PQ/SQ/RQ (All, Things, Stuff) of a panoptic
model on a panoptic dataset, as the trainer's validator (``make_validator`` picks it for models of
task ``panoptic``).

The ground truth is each record's ``extra["panoptic"]`` (a
:class:`~instaseg.structures.panoptic.PanopticResult` with original category ids); predictions are
:meth:`Predictor.predict_panoptic_torch` on the untransformed images, scored by
:class:`~instaseg.evaluation.panoptic.PanopticEvaluator` (``pq_compute``'s rules).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from instaseg.data.base import record_to_sample
from instaseg.data.build import build_dataset
from instaseg.errors import DataError
from instaseg.evaluation.panoptic import PanopticEvaluator
from instaseg.predict.predictor import Predictor
from instaseg.structures.panoptic import PanopticResult


class PanopticValidator:
    """PQ of a panoptic model on the dataset ``spec`` (``split``) through a :class:`Predictor`.

    Each call returns ``(metrics, samples)``: ``{"panoptic": {"All", "Things", "Stuff", "per_class"}}``
    and the first ``num_samples`` ``(image, PanopticResult)`` pairs."""

    def __init__(
        self, spec: str, split: str | None, *, batch_size: int = 8, max_images: int | None = None,
        num_samples: int = 0,
    ) -> None:
        self.dataset = build_dataset(spec, split=split)
        self.categories = list(getattr(self.dataset, "panoptic_categories", []) or [])
        if not self.categories:
            raise DataError(spec, "panoptic validation needs a panoptic dataset (stuff and thing categories)")
        n = len(self.dataset) if max_images is None else min(len(self.dataset), int(max_images))
        self.indices = list(range(n))
        self.batch_size, self.num_samples = max(1, batch_size), num_samples

    def _batches(self) -> Any:
        for start in range(0, len(self.indices), self.batch_size):
            records = [self.dataset.load_record(i) for i in self.indices[start : start + self.batch_size]]
            for rec in records:
                if not isinstance(rec.extra.get("panoptic"), PanopticResult):
                    raise DataError(rec.file_name, "no panoptic ground truth in this record")
            yield [record_to_sample(r)[0] for r in records], [r.extra["panoptic"] for r in records]

    def __call__(
        self, model: nn.Module, device: torch.device, *, amp: bool = False, progress: bool = False
    ) -> tuple[dict[str, Any], list[tuple[Tensor, PanopticResult]]]:
        was_training = model.training
        model.eval()
        meta = {"panoptic": {"stuff_category_ids": list(self.dataset.stuff_category_ids),
                             "categories": self.categories}}
        predictor = Predictor(model, self.dataset.class_names, device=device,
                              category_ids=self.dataset.category_ids, meta=meta, autocast=amp)
        evaluator = PanopticEvaluator(self.categories)  # one batch of maps in memory at a time
        samples: list[tuple[Tensor, PanopticResult]] = []
        try:
            for images, gts in self._batches():
                preds = predictor.predict_panoptic_torch(images)
                for gt, pred in zip(gts, preds, strict=True):
                    evaluator.add(gt, pred)
                samples.extend(list(zip(images, preds, strict=True))[: self.num_samples - len(samples)])
        finally:
            model.train(was_training)
        return {"panoptic": evaluator.result()}, samples
