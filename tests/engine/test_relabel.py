"""Self-training: the model relabels its training masks mid-run (box-only training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from instaseg.cli import main
from instaseg.data.build import build_dataset
from instaseg.engine.relabel import RelabelHook, relabel_dataset
from instaseg.errors import ConfigError
from instaseg.models import get_model
from instaseg.predict.validation import train
from instaseg.structures import masks_to_boxes
from tests.engine.helpers import tiny_overrides
from tests.models.helpers import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _box_file(tmp_path: Path, n: int = 4) -> Path:
    """A box-only COCO file (filled-box masks) of ``n`` synthetic 64 px images."""
    out = tmp_path / "boxes.json"
    assert main(["data", "pseudo-masks", f"shapes:{n}:64", str(out), "--method", "box"]) == 0
    return out


def test_relabel_dataset_replaces_masks_inside_their_boxes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ds = build_dataset(f"coco:{_box_file(tmp_path)}")
    model = get_model("maskrcnn_r18_slim", num_classes=ds.num_classes, min_size=64, max_size=64)
    before = [ds.load_record(i).masks for i in range(len(ds))]
    masks = relabel_dataset(model, ds, weight=1.0)  # an untrained head: its own (noisy) masks
    assert model.training  # mode restored
    changed = 0
    for i in range(len(ds)):
        rec = ds.load_record(i)
        assert len(masks[rec.image_id]) == len(rec.masks) == len(before[i])
        for new, stored, ann in zip(masks[rec.image_id], rec.masks, ds.anns[i], strict=True):
            assert np.array_equal(new, stored)  # what the loader reads from now on
            x, y, w, h = ann["bbox"]
            # inside the box and reaching its four sides: training derives the same box from it
            assert masks_to_boxes(torch.from_numpy(stored)[None]).tolist() == [[x, y, x + w, y + h]]
        changed += sum(int((a != b).any()) for a, b in zip(rec.masks, before[i], strict=True))
    assert changed > 0  # the filled boxes were revised


def test_relabel_refuses_models_without_a_mask_head(tmp_path: Path) -> None:
    ds = build_dataset(f"coco:{_box_file(tmp_path, 1)}")
    with pytest.raises(ConfigError, match="Mask R-CNN"):
        relabel_dataset(torch.nn.Linear(1, 1), ds)


def test_relabel_hook_runs_once_mid_training(tmp_path: Path) -> None:
    data = _box_file(tmp_path, 8)
    hook = RelabelHook(2, log=lambda _msg: None)
    overrides = [*tiny_overrides(f"data.train=coco:{data}", f"data.val=coco:{data}", "data.image_size=64",
                                 "train.epochs=1", "train.max_iters=3", "train.checkpoint_period=0",
                                 "eval.num_overlays=0"),
                 "model.name=maskrcnn_r18_slim", "model.kwargs={min_size: 64, max_size: 64}"]
    result = train(None, output=tmp_path / "run", overrides=overrides, hooks=[hook])
    assert result.iterations == 3
    assert sum(len(m) for m in hook.masks.values()) > 0 and hook.seconds > 0
