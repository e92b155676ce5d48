"""The temporal model: the slim Mask R-CNN plus an association embedding head (MaskTrack R-CNN style).

The embedding head maps each detection's RoI features (the box branch's 7x7 RoIAlign of the FPN) to a
unit vector; instances of the same track in two frames of a clip are pulled together and other instances
pushed apart by a contrastive (InfoNCE) loss, :meth:`VideoMaskRCNN.association_loss`. At inference
:meth:`forward_lowres` adds ``embeddings`` [K, D] to the usual detections; the tracker
(:mod:`instaseg.predict.temporal_tracker`) combines them with Kalman motion, two-stage matching and mask
smoothing. Registered as ``maskrcnn_r18_slim_video`` (task ``"video"``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instaseg.models.mask_rcnn import PREDICTORS, R18_SLIM, InstanceMaskRCNN, build_mask_rcnn
from instaseg.models.protocol import Detections
from instaseg.models.registry import register_model


class EmbedHead(nn.Module):
    """RoI features [K, C, 7, 7] -> L2-normalised embeddings [K, dim]."""

    def __init__(self, in_channels: int, dim: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.fc1 = nn.Linear(in_channels * 49 + in_channels, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.conv(x))
        pooled = y.mean(dim=(2, 3))  # a global term: colour/texture regardless of where in the box
        y = F.relu(self.fc1(torch.cat([y.flatten(1), pooled], 1)))
        return F.normalize(self.fc2(y), dim=1)


class VideoMaskRCNN(InstanceMaskRCNN):
    """:class:`InstanceMaskRCNN` with ``embed_head``; see the module docstring."""

    embed_head: EmbedHead
    temperature: float = 0.1

    def _embed(
        self, features: dict[str, Tensor], boxes: list[Tensor], sizes: list[tuple[int, int]]
    ) -> Tensor:
        """Embeddings of ``boxes`` (per image, XYXY in resized-image pixels) -> [sum K, dim]."""
        if sum(len(b) for b in boxes) == 0:
            return features["0"].new_zeros((0, self.embed_head.fc2.out_features))
        pooled = self.roi_heads.box_roi_pool(features, boxes, sizes)
        return self.embed_head(pooled)

    def _detect(self, images: list[Tensor]) -> tuple[list[Detections], list[tuple[int, int]]]:
        image_list, _ = self.transform(images)
        features = self.backbone(image_list.tensors)
        proposals, _ = self.rpn(image_list, features)
        sizes = [tuple(s) for s in image_list.image_sizes]
        detections, _ = self.roi_heads(features, proposals, image_list.image_sizes)
        emb = self._embed(features, [d["boxes"] for d in detections], sizes)
        for det, e in zip(detections, emb.split([len(d["boxes"]) for d in detections]), strict=True):
            det["embeddings"] = e
        return detections, sizes

    def forward_lowres(self, images: list[Tensor]) -> list[Detections]:
        """:meth:`InstanceMaskRCNN.forward_lowres` plus ``embeddings`` [K, dim] (unit vectors)."""
        detections, sizes = self._detect(images)
        out = []
        from torchvision.models.detection.transform import resize_boxes

        for det, resized, image in zip(detections, sizes, images, strict=True):
            original = [int(image.shape[-2]), int(image.shape[-1])]
            out.append({"boxes": resize_boxes(det["boxes"], list(resized), original), "labels": det["labels"],
                        "scores": det["scores"], "mask_lowres": det["masks"][:, 0],
                        "embeddings": det["embeddings"]})
        return out

    def clip_embeddings(self, images: list[Tensor], targets: list[dict[str, Any]]) -> list[Tensor]:
        """Embeddings of the ground-truth boxes of each image (list of [N_i, dim])."""
        image_list, resized = self.transform(images, [{"boxes": t["boxes"], "labels": t["labels"],
                                                       "masks": t["masks"]} for t in targets])
        features = self.backbone(image_list.tensors)
        sizes = [tuple(s) for s in image_list.image_sizes]
        emb = self._embed(features, [t["boxes"] for t in resized], sizes)
        return list(emb.split([len(t["boxes"]) for t in resized]))

    def association_loss(self, clips: list[list[tuple[Tensor, dict[str, Any]]]]) -> Tensor:
        """InfoNCE over frame pairs: each clip is ``[(image_a, target_a), (image_b, target_b)]`` with
        ``track_ids`` in the targets. For an instance of frame a, the positive is the same track in frame b
        of its clip; the negatives are every other instance of every frame b in the batch (both
        directions)."""
        images = [c[k][0] for c in clips for k in (0, 1)]
        targets = [c[k][1] for c in clips for k in (0, 1)]
        emb = self.clip_embeddings(images, targets)
        ea, eb = emb[0::2], emb[1::2]
        key_a = [(i, int(t)) for i, c in enumerate(clips) for t in c[0][1]["track_ids"].tolist()]
        key_b = [(i, int(t)) for i, c in enumerate(clips) for t in c[1][1]["track_ids"].tolist()]
        a, b = torch.cat(ea), torch.cat(eb)
        if len(a) == 0 or len(b) == 0:
            return a.sum() * 0 + b.sum() * 0
        logits = a @ b.T / self.temperature
        pos = torch.tensor([[ka == kb for kb in key_b] for ka in key_a], dtype=torch.bool)
        losses = []
        for lg, p in ((logits, pos), (logits.T, pos.T)):
            rows = p.any(1)
            if rows.any():
                losses.append(F.cross_entropy(lg[rows], p[rows].float().argmax(1)))
        return torch.stack(losses).mean() if losses else logits.sum() * 0


@register_model(task="video")
def maskrcnn_r18_slim_video(*, num_classes: int = 4, min_size: int = 128, max_size: int = 128,
                            embed_dim: int = 64, **kwargs: Any) -> VideoMaskRCNN:
    """``maskrcnn_r18_slim`` with an association embedding head of ``embed_dim`` (see the module
    docstring). ``weights`` may be a checkpoint of the image model (the detector part is loaded; the
    embedding head starts fresh) or of this model."""
    weights = kwargs.pop("weights", None)
    model = build_mask_rcnn(R18_SLIM, num_classes=num_classes, min_size=min_size, max_size=max_size, **kwargs)
    model.__class__ = VideoMaskRCNN  # same state, plus the embedding head below
    model.embed_head = EmbedHead(model.backbone.out_channels, embed_dim)
    if weights is not None:
        from instaseg.models.weights import load_matching, load_state_dict_file

        load_matching(model, load_state_dict_file(weights), source=str(weights),
                      ignore_missing=("embed_head.",), skip_mismatched=PREDICTORS)
    return model
