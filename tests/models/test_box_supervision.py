"""train.supervision=boxes: Mask R-CNN learns its mask head from boxes, never reading the masks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from instaseg.cli import main
from instaseg.config import load_config
from instaseg.errors import ConfigError
from instaseg.models import get_model
from tests.engine.helpers import tiny_overrides
from tests.models.helpers import make_sample, one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _grey_sample(seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """make_sample's objects on a flat grey background (colour affinity needs a coherent background)."""
    image, target = make_sample(96, 96, n=2, seed=seed)
    g = torch.Generator().manual_seed(100 + seed)
    bg = ~target["masks"].any(0)
    image[:, bg] = 0.5 + 0.02 * torch.rand(3, int(bg.sum()), generator=g)
    return image, target


def test_box_mode_losses_and_masks_never_read() -> None:
    torch.manual_seed(0)
    model = get_model("maskrcnn_r18_slim", num_classes=3, min_size=96, max_size=96)
    assert model.supervision == "masks"
    image, target = _grey_sample(0)
    garbage = {**target, "masks": torch.zeros(len(target["labels"]), 1, 1, dtype=torch.bool)}
    model.train()
    with pytest.raises(ValueError, match="masks"):  # the mask-supervised model reads and checks them
        model([image], [garbage])
    model.supervision = "boxes"
    losses = model([image], [garbage])  # wrong-shaped masks: never looked at
    assert {"loss_mask_proj", "loss_mask_outside", "loss_mask_pairwise", "loss_mask_inside"} <= set(losses)
    assert "loss_mask" not in losses and all(math.isfinite(v.item()) for v in losses.values())
    no_masks = {k: v for k, v in target.items() if k != "masks"}
    assert set(model([image], [no_masks])) == set(losses)
    with pytest.raises(ConfigError, match="supervision"):
        model.supervision = "scribbles"


def test_box_supervised_training_reduces_the_mask_loss_with_zeroed_masks() -> None:
    torch.manual_seed(0)
    model = get_model("maskrcnn_r18_slim", num_classes=3, min_size=96, max_size=96)
    model.supervision = "boxes"
    model.roi_heads.box_pairwise_warmup = 1  # a constant objective, so first and last steps compare
    samples = [_grey_sample(s) for s in range(8)]
    images, targets = [s[0] for s in samples], [s[1] for s in samples]
    zeroed = [{**t, "masks": torch.zeros_like(t["masks"])} for t in targets]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first, last = [], []
    for it in range(STEPS):
        model.train()
        batch = [(it * 4 + k) % 8 for k in range(4)]
        losses = model([images[k] for k in batch], [zeroed[k] for k in batch])
        mask_loss = sum(v for k, v in losses.items() if k.startswith("loss_mask"))
        (first if it < 10 else last if it >= STEPS - 10 else []).append(float(mask_loss.detach()))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    # measured: the mask terms fall from ~3.1 (mean of the first 10 steps) to ~0.7 (last 10)
    assert sum(last) < 0.5 * sum(first)
    assert all(float(t["masks"].sum()) == 0 for t in zeroed)


STEPS = 60


def test_supervision_config_key() -> None:
    assert load_config(None, ["train.supervision=boxes"]).train.supervision == "boxes"
    with pytest.raises(ConfigError, match="train.supervision"):
        load_config(None, ["train.supervision=points"])
    with pytest.raises(ConfigError, match="data.shots"):
        load_config(None, ["data.shots=0"])


def test_model_without_box_support_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    args = ["train", "--output", str(tmp_path / "run")]
    for o in tiny_overrides("train.supervision=boxes"):
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.supervision" in err[0]


def test_box_only_coco_file_trains_with_box_supervision(tmp_path: Path, capsys) -> None:
    """A COCO file with boxes and no masks: refused (one line saying how) unless train.supervision=boxes,
    which trains on it; its own val split cannot score masks."""
    import json

    full = tmp_path / "shapes.json"
    assert main(["data", "convert", "shapes:12:32", str(full)]) == 0
    data = json.loads(full.read_text())
    for ann in data["annotations"]:
        del ann["segmentation"]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(data))
    capsys.readouterr()
    args = ["train"]
    for o in [*tiny_overrides(), "model.name=maskrcnn_r18_slim", "model.kwargs={min_size: 32, max_size: 32}",
              f"data.train=coco:{boxes}", "data.train_split=null", "data.val_split=val", "train.max_iters=2"]:
        args += ["--set", o]
    assert main([*args, "--output", str(tmp_path / "masks")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no 'segmentation'" in err[0] and "train.supervision=boxes" in err[0]
    assert main([*args, "--set", "train.supervision=boxes", "--output", str(tmp_path / "boxes")]) == 0
    assert (tmp_path / "boxes" / "checkpoints" / "last.pt").is_file()
    capsys.readouterr()
    own_val = ["--set", f"data.val=coco:{boxes}", "--set", "train.supervision=boxes"]
    assert main([*args, *own_val, "--output", str(tmp_path / "own_val")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.val" in err[0] and "true masks" in err[0]
