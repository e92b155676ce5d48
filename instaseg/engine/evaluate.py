"""Pictures of validation predictions for the run directory, TensorBoard and MLflow.

The validation itself is injected into :func:`~instaseg.engine.launch.run_training` (``make_validator``):
a callable ``validator(model, device, amp=...) -> (metrics, samples)`` whose ``samples`` are
``(image Tensor[3, H, W] in [0, 1], Instances)`` pairs; ``instaseg train`` uses
:class:`instaseg.predict.validation.PredictorValidator`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from torch import Tensor

from instaseg.structures.instances import Instances
from instaseg.structures.panoptic import PanopticResult
from instaseg.viz.draw import draw_instances
from instaseg.viz.panoptic import overlay_panoptic

EvalSamples = list[tuple[Tensor, Instances | PanopticResult]]


def overlay(
    image: Tensor,
    inst: Instances | PanopticResult,
    class_names: list[str] | None = None,
    mask_thresh: float = 0.5,
    min_score: float = 0.5,
) -> np.ndarray:
    """Draw the instances of ``inst`` scoring at least ``min_score`` (or a panoptic result) on
    ``image`` [3, H, W] in [0, 1]: uint8 (H, W, 3) RGB."""
    rgb = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if isinstance(inst, PanopticResult):
        return overlay_panoptic(rgb, inst)
    shown = inst[inst.scores >= min_score]
    masks = (
        shown.to_dense_masks(mask_thresh)
        if shown.mask_kind is not None
        else np.zeros((len(shown), *inst.image_size), bool)
    )
    return draw_instances(
        rgb,
        masks,
        boxes=shown.boxes.numpy(),
        labels=shown.labels.numpy(),
        scores=shown.scores.numpy(),
        class_names=class_names,
    )


def write_overlays(
    samples: EvalSamples, folder: str | Path, class_names: list[str] | None = None
) -> list[Path]:
    """Write one PNG per sample (``val_<i>.png``) into ``folder``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image, inst) in enumerate(samples):
        path = folder / f"val_{i}.png"
        cv2.imwrite(str(path), cv2.cvtColor(overlay(image, inst, class_names), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths
