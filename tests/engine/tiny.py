"""A tiny per-pixel model with the detection contract, registered as ``engine_test_tiny``, so engine
tests run in seconds. It uses dropout (the global torch RNG) so resume tests also check RNG restore."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instaseg.models.registry import list_models, register_model
from instaseg.ops.masks import masks_in_boxes
from instaseg.structures import masks_to_boxes

NAME = "engine_test_tiny"


class TinySeg(nn.Module):
    """Per-pixel classifier; each predicted class in an image becomes one instance."""

    def __init__(self, num_classes: int, nan_after: int = 0, sleep_s: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Dropout2d(0.2),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(8, num_classes, 1)
        self.nan_after = nan_after  # training forward calls before the loss turns NaN (0: never)
        self.calls = 0
        self.sleep_s = sleep_s  # slows training steps down (to kill a run mid-way)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        logits = [self.head(self.body(im[None]))[0] for im in images]
        if self.training:
            assert targets is not None
            self.calls += 1
            if self.sleep_s:
                time.sleep(self.sleep_s)
            losses = []
            for lg, t in zip(logits, targets, strict=True):
                sem = torch.zeros(lg.shape[1:], dtype=torch.long, device=lg.device)
                for m, label in zip(t["masks"], t["labels"], strict=True):
                    sem[m] = label
                losses.append(F.cross_entropy(lg[None], sem[None]))
            loss = torch.stack(losses).mean()
            if self.nan_after and self.calls > self.nan_after:
                loss = loss * float("nan")
            return {"loss_mask": loss, "loss_reg": 1e-3 * sum(p.pow(2).sum() for p in self.head.parameters())}
        out = []
        for lg in logits:
            prob = lg.softmax(0)
            pred = prob.argmax(0)
            labels = [c for c in range(1, self.num_classes) if (pred == c).any()]
            masks = (
                torch.stack([pred == c for c in labels])
                if labels
                else torch.zeros((0, *pred.shape), dtype=torch.bool)
            )
            scores = torch.tensor([float(prob[c][pred == c].mean()) for c in labels])
            out.append(
                {
                    "boxes": masks_to_boxes(masks).float(),
                    "labels": torch.tensor(labels, dtype=torch.int64),
                    "scores": scores,
                    "masks": masks[:, None].float(),
                }
            )
        return out


    @torch.no_grad()
    def forward_lowres(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """The contract's cheap inference path: the same detections, masks cut to 28 x 28 per box."""
        out = []
        for det in self.forward(images):
            masks = det.pop("masks")[:, 0]
            det["mask_lowres"] = masks_in_boxes(masks, det["boxes"], stride=1.0, size=28)
            out.append(det)
        return out


def ensure_registered() -> str:
    """Register the tiny builder once; returns its name."""
    if NAME not in list_models():

        @register_model(NAME)
        def engine_test_tiny(
            *, num_classes: int = 2, nan_after: int = 0, sleep_s: float = 0.0, **_: object
        ) -> nn.Module:
            """Test-only per-pixel model for the engine tests (not a real detector)."""
            return TinySeg(num_classes, nan_after, sleep_s)

    return NAME
