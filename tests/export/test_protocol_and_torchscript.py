"""Export through the model contract (a model outside the zoo plugging in with its own graph), files
of earlier exports, and the TorchScript format, on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from instaseg.errors import CheckpointError, ConfigError
from instaseg.export.graphs import export_graph
from instaseg.export.onnx_export import export_onnx
from instaseg.export.torchscript_export import export_torchscript
from instaseg.models import get_model
from instaseg.models.protocol import ExportGraph, InputSpec, InstanceSegmentationModel
from instaseg.ops.lowres import lowres_inference
from instaseg.ops.masks import masks_in_boxes
from instaseg.predict.runtime import load_onnx_model, load_torchscript_model, raw_to_detections


class ToySeg(InstanceSegmentationModel):
    """A model outside the zoo plugging into export through the contract: one detection per image,
    box = the whole image, mask = sigmoid(conv(image at half size)) resampled to 8 x 8, score = its mean."""

    score_thresh = 0.0
    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec((0.0,) * 3, (1.0,) * 3, min_size=32, max_size=4096)

    def detect(self, image: torch.Tensor, score_thresh) -> tuple[torch.Tensor, ...]:
        prob = torch.sigmoid(self.conv(F.avg_pool2d(image[None], 2)))  # [1, 1, h/2, w/2]
        score = prob.mean().reshape(1)
        hw = torch._shape_as_tensor(image)[1:].to(torch.float32)
        boxes = torch.cat([torch.zeros(2), hw.flip(0)])[None]
        keep = score >= score_thresh
        low = masks_in_boxes(prob[0], boxes, 2.0, 8)  # [1, 8, 8]: the mask map over the whole-image box
        return boxes[keep], score[keep], torch.ones(1, dtype=torch.int64)[keep], low[keep]

    def forward_lowres(self, images):
        return [dict(zip(("boxes", "scores", "labels", "mask_lowres"), self.detect(img, self.score_thresh),
                          strict=True)) for img in images]

    def forward(self, images, targets=None):
        return self.paste_full_size(images)

    def export_graph(self) -> ExportGraph:
        return ToyGraph(self)


class ToyGraph(ExportGraph):
    def forward(self, image, score_thresh):
        return self.model.detect(image, score_thresh)


class NotExportable(nn.Module):
    def forward(self, images):
        return []


def _image(path, max_side: int = 256) -> torch.Tensor:
    """RGB float [3, H, W] in [0, 1], shrunk to ``max_side`` (keeps tests quick)."""
    pil = Image.open(path).convert("RGB")
    pil.thumbnail((max_side, max_side))
    rgb = np.asarray(pil)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255


def test_model_outside_the_zoo_exports_through_the_contract(tmp_path, shared_data):
    model = ToySeg().eval()
    meta = {"model_spec": {"name": "toy"}, "class_names": ["background", "thing"]}
    result = export_onnx(model, tmp_path / "toy.onnx", meta=meta, image_size=(64, 96))
    assert all(c["ok"] for c in result.checks)
    onnx_model, onnx_meta = load_onnx_model(result.path)
    assert onnx_meta["mask_kind"] == "box" and onnx_meta["model_name"] == "toy"
    assert onnx_meta["preprocessing"]["normalize_std"] == [1.0, 1.0, 1.0]
    images = [_image(p) for p in sorted((shared_data / "nuclei").glob("*/images/*.png"))[:2]]
    images.append(_image(next((shared_data / "cityscapes_sample").rglob("*_leftImg8bit.png"))))
    with torch.no_grad():
        refs = model(images)
    for image, ref, got in zip(images, refs, onnx_model(images), strict=True):
        assert got["masks"].shape == (1, 1, *image.shape[-2:])
        assert torch.allclose(got["boxes"], ref["boxes"])
        assert torch.allclose(got["scores"], ref["scores"], atol=1e-5)
        assert (got["masks"] - ref["masks"]).abs().max() < 1e-4
    onnx_model.score_thresh = 1.01
    empty = onnx_model(images[:1])[0]
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 1, *images[0].shape[-2:])


def test_models_without_the_contract_are_refused():
    with pytest.raises(ConfigError, match="NotExportable cannot be exported"):
        export_graph(NotExportable())
    with pytest.raises(TypeError, match="NotExportable does not implement"):
        lowres_inference(NotExportable(), [torch.rand(3, 8, 8)])


def test_torchscript_export_matches_pytorch_on_real_images(tmp_path, shared_data):
    torch.manual_seed(0)
    model = get_model("maskrcnn_r18_slim", num_classes=2).eval()
    meta = {"model_spec": {"name": "maskrcnn_r18_slim"}}
    result = export_torchscript(model, tmp_path / "model.ts", meta=meta)
    assert all(c["ok"] for c in result.checks)
    with pytest.raises(ConfigError, match="already exists"):
        export_torchscript(model, result.path)
    ts_model, meta = load_torchscript_model(result.path)
    assert meta["model_name"] == "maskrcnn_r18_slim" and meta["mask_kind"] == "box"
    ts_model.score_thresh = 0.5
    model.score_thresh = 0.5
    paths = [sorted((shared_data / "pennfudan" / "PNGImages").glob("*.png"))[5],
             sorted((shared_data / "coco_tiny" / "val2017").glob("*.jpg"))[3]]
    for path in paths:
        image = _image(path)
        with torch.no_grad():
            ref = model([image])[0]
        got = ts_model([image])[0]
        assert len(ref["boxes"]) == len(got["boxes"]) > 0
        assert (ref["boxes"] - got["boxes"]).abs().max() <= 1.0
        assert (ref["scores"] - got["scores"]).abs().max() <= 1e-3
        assert ((ref["masks"] >= 0.5) == (got["masks"] >= 0.5)).float().mean() > 0.999


def test_torchscript_loader_rejects_junk(tmp_path):
    junk = tmp_path / "junk.ts"
    junk.write_bytes(b"\x00not a zip" * 100)
    with pytest.raises(CheckpointError, match="junk.ts: not a loadable TorchScript file"):
        load_torchscript_model(junk)
    plain = tmp_path / "plain.ts"
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(plain))
    with pytest.raises(CheckpointError, match="plain.ts: not an instaseg export"):
        load_torchscript_model(plain)


def test_files_with_whole_image_masks_from_earlier_exports_still_load():
    # mask_kind "image": [K, h, w] masks covering the whole image at a lower resolution
    h, w = 60, 90
    masks = torch.zeros(1, 30, 45)
    masks[0, 5:15, 10:30] = 1.0  # image pixels y 10..30, x 20..60
    boxes = torch.tensor([[10.0, 5.0, 80.0, 50.0]])
    low = raw_to_detections(boxes, torch.ones(1), torch.ones(1), masks, mask_kind="image",
                            image_size=(h, w), paste=False)["mask_lowres"]
    full = raw_to_detections(boxes, torch.ones(1), torch.ones(1), masks, mask_kind="image",
                             image_size=(h, w), paste=True)["masks"][0, 0] >= 0.5
    assert low.shape[0] == 1 and low.shape[1] == low.shape[2]
    expected = torch.zeros(h, w, dtype=torch.bool)
    expected[10:30, 20:60] = True
    assert int((full ^ expected).sum()) <= 0.05 * int(expected.sum())
