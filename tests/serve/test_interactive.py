"""Interactive segmentation: the offline click backend finds obvious objects; SAM is optional."""

from __future__ import annotations

import sys
import types

import cv2
import numpy as np
import pytest

from instaseg.errors import CheckpointError, ConfigError
from instaseg.serve.interactive import ClickSegmenter, SamSegmenter, build_interactive


def _scene(shape: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Textured grey background with one reddish object; returns (image, ground-truth mask)."""
    rng = np.random.default_rng(seed)
    h, w = 240, 320
    image = rng.normal(120, 25, (h, w, 3)).clip(0, 255).astype(np.uint8)
    gt = np.zeros((h, w), np.uint8)
    if shape == "disk":
        cv2.circle(gt, (200, 110), 55, 1, -1)
    else:
        cv2.rectangle(gt, (60, 50), (180, 200), 1, -1)
    obj = rng.normal([200, 60, 40], 20, (h, w, 3)).clip(0, 255).astype(np.uint8)
    image[gt > 0] = obj[gt > 0]
    return image, gt.astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize(("shape", "click", "box"), [("disk", (200, 110), (140, 50, 262, 172)),
                                                     ("rect", (100, 120), (50, 40, 190, 210))])
def test_click_and_box_prompts_cover_the_object(shape, click, box) -> None:
    image, gt = _scene(shape)
    seg = ClickSegmenter()
    ((mask, score),) = seg.segment(image, np.array([click], float), np.array([1]))
    assert mask.shape == gt.shape and mask.dtype == bool
    assert _iou(mask, gt) > 0.8 and 0.5 < score <= 1.0
    ((mask, _),) = seg.segment(image, np.zeros((0, 2)), np.zeros(0, int), box=np.array(box, float))
    assert _iou(mask, gt) > 0.8


def test_background_click_and_multimask() -> None:
    image, gt = _scene("disk", seed=1)
    results = ClickSegmenter().segment(
        image, np.array([[200, 110], [20, 20]], float), np.array([1, 0]), multimask=True
    )
    assert len(results) == 2 and results[0][1] >= results[1][1]
    assert all(_iou(m, gt) > 0.8 for m, _ in results)
    assert not results[0][0][20, 20]


def test_large_images_are_processed_downscaled_but_returned_full_size() -> None:
    image, gt = _scene("disk")
    big = cv2.resize(image, (960, 720), interpolation=cv2.INTER_NEAREST)
    big_gt = cv2.resize(gt.astype(np.uint8), (960, 720), interpolation=cv2.INTER_NEAREST).astype(bool)
    ((mask, _),) = ClickSegmenter(max_side=320).segment(big, np.array([[600, 330]], float), np.array([1]))
    assert mask.shape == (720, 960) and _iou(mask, big_gt) > 0.8


def test_default_backend_is_offline() -> None:
    assert build_interactive(None).name == "grabcut"


def test_sam_backend_errors_are_clear(tmp_path, monkeypatch) -> None:
    with pytest.raises(CheckpointError, match="SAM checkpoint file does not exist"):
        SamSegmenter(tmp_path / "sam_vit_b.pth")
    ckpt = tmp_path / "sam_vit_b_01ec64.pth"
    ckpt.write_bytes(b"weights")
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # not installed
    with pytest.raises(CheckpointError, match="pip install segment-anything"):
        build_interactive(ckpt)


def _fake_segment_anything(calls: dict) -> types.ModuleType:
    """A stand-in exposing the parts of segment_anything the adapter uses."""
    import torch

    class FakeSam(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(2))

    class FakePredictor:
        def __init__(self, sam) -> None:
            self.sam = sam

        def set_image(self, image, image_format="RGB") -> None:
            calls["set_image"] = calls.get("set_image", 0) + 1
            self.shape = image.shape[:2]

        def predict(self, point_coords=None, point_labels=None, box=None, multimask_output=True):
            calls["points"] = point_coords
            calls["box"] = box
            n = 3 if multimask_output else 1
            masks = np.zeros((n, *self.shape), bool)
            masks[:, :10, :10] = True
            return masks, np.linspace(0.5, 0.9, n), np.zeros((n, 256, 256))

    module = types.ModuleType("segment_anything")
    module.sam_model_registry = {"vit_b": FakeSam, "vit_l": FakeSam, "vit_h": FakeSam}
    module.SamPredictor = FakePredictor
    return module


def test_sam_adapter_loads_weights_safely_caches_embeddings_and_sorts(tmp_path, monkeypatch) -> None:
    import torch

    calls: dict = {}
    monkeypatch.setitem(sys.modules, "segment_anything", _fake_segment_anything(calls))
    ckpt = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save({"weight": torch.ones(2)}, ckpt)
    seg = build_interactive(ckpt)
    assert seg.name == "sam" and float(seg.predictor.sam.weight.detach().sum()) == 2.0
    image = np.zeros((40, 50, 3), np.uint8)
    out = seg.segment(image, np.array([[5.0, 6.0]]), np.array([1]), multimask=True)
    assert [round(s, 2) for _, s in out] == [0.9, 0.7, 0.5] and out[0][0].shape == (40, 50)
    seg.segment(image, np.array([[7.0, 6.0]]), np.array([1]))
    assert calls["set_image"] == 1  # same image: embedding reused
    seg.segment(image + 1, np.zeros((0, 2)), np.zeros(0), box=np.array([1, 1, 20, 20]))
    assert calls["set_image"] == 2 and calls["points"] is None and calls["box"].tolist() == [1, 1, 20, 20]

    with pytest.raises(ConfigError, match="--sam-model-type"):
        odd = tmp_path / "mysam.pth"
        torch.save({"weight": torch.ones(2)}, odd)
        SamSegmenter(odd)

    class _Evil:
        def __reduce__(self):
            return (print, ("never",))

    evil = tmp_path / "sam_vit_b_evil.pth"
    torch.save({"weight": _Evil()}, evil)
    with pytest.raises(CheckpointError, match="not a loadable SAM vit_b checkpoint"):
        SamSegmenter(evil)
