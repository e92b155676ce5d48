"""The export-graph protocol (a model plugging in with its own graph, whole-image masks) and the
TorchScript format, on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from instaseg.errors import CheckpointError, ConfigError
from instaseg.export.graphs import export_graph, register_export_graph
from instaseg.export.onnx_export import export_onnx
from instaseg.export.runtime import load_onnx_model
from instaseg.export.torchscript_export import export_torchscript, load_torchscript_model
from instaseg.models import get_model


class ToySeg(nn.Module):
    """One detection per image covering it: mask = sigmoid(conv(image at half size)), score = its mean."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def _raw(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prob = torch.sigmoid(self.conv(F.avg_pool2d(image[None], 2)))[0]  # [1, h/2, w/2]
        return prob, prob.mean().reshape(1)

    def forward(self, images):  # the eager contract, for comparison
        out = []
        for img in images:
            prob, score = self._raw(img)
            h, w = img.shape[-2:]
            masks = F.interpolate(prob[None], size=(h, w), mode="bilinear", align_corners=False)
            boxes = torch.tensor([[0.0, 0.0, w, h]])
            labels = torch.ones(1, dtype=torch.int64)
            out.append({"boxes": boxes, "scores": score, "labels": labels, "masks": masks})
        return out

    def export_graph(self) -> nn.Module:
        return ToyGraph(self)


class ToyGraph(nn.Module):
    mask_kind = "image"
    default_score_threshold = 0.0
    preprocessing = {"resize": "none"}

    def __init__(self, model: ToySeg) -> None:
        super().__init__()
        self.model = model

    def forward(self, image, score_threshold):
        prob, score = self.model._raw(image)
        hw = torch._shape_as_tensor(image)[1:].to(torch.float32)
        boxes = torch.cat([torch.zeros(2), hw.flip(0)])[None]
        keep = score > score_threshold
        return boxes[keep], score[keep], torch.ones(1, dtype=torch.int64)[keep], prob[keep]


class NotExportable(nn.Module):
    def forward(self, images):
        return []


def _image(path, max_side: int = 256) -> torch.Tensor:
    """RGB float [3, H, W] in [0, 1], shrunk to ``max_side`` (keeps tests quick)."""
    pil = Image.open(path).convert("RGB")
    pil.thumbnail((max_side, max_side))
    rgb = np.asarray(pil)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255


def test_model_with_its_own_graph_exports_whole_image_masks(tmp_path, shared_data):
    model = ToySeg().eval()
    meta = {"model_spec": {"name": "toy"}, "class_names": ["background", "thing"]}
    result = export_onnx(model, tmp_path / "toy.onnx", meta=meta, image_size=(64, 96))
    assert all(c["ok"] for c in result.checks)
    onnx_model, onnx_meta = load_onnx_model(result.path)
    assert onnx_meta["mask_kind"] == "image" and onnx_meta["model_name"] == "toy"
    images = [_image(p) for p in sorted((shared_data / "nuclei").glob("*/images/*.png"))[:2]]
    images.append(_image(next((shared_data / "cityscapes_sample").rglob("*_leftImg8bit.png"))))
    with torch.no_grad():
        refs = model(images)
    for image, ref, got in zip(images, refs, onnx_model(images), strict=True):
        assert got["masks"].shape == (1, 1, *image.shape[-2:])
        assert torch.allclose(got["boxes"], ref["boxes"])
        assert torch.allclose(got["scores"], ref["scores"], atol=1e-5)
        assert (got["masks"] - ref["masks"]).abs().max() < 1e-4
    onnx_model.score_thresh = 1.0
    empty = onnx_model(images[:1])[0]
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 1, *images[0].shape[-2:])


def test_registry_and_unexportable_models():
    with pytest.raises(ConfigError, match="NotExportable cannot be exported"):
        export_graph(NotExportable())

    class Sub(NotExportable):
        pass

    register_export_graph(Sub)(lambda m: ToyGraph(ToySeg()))
    assert export_graph(Sub()).mask_kind == "image"
    with pytest.raises(ValueError, match="already registered"):
        register_export_graph(Sub)(lambda m: ToyGraph(ToySeg()))


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
    model.roi_heads.score_thresh = 0.5
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


class FakeLetterbox(nn.Module):
    """The rt_common letterbox contract with a parameter-free ``forward_tensor``: 4 detections with
    distinct scores, canvas boxes, and masks = the canvas's red channel pooled to stride 4."""

    input_size = 128
    score_threshold = 0.05

    def forward_tensor(self, batch):
        b = batch.shape[0]
        boxes = torch.tensor([[4.0, 8.0, 60.0, 90.0], [10.0, 0.0, 128.0, 50.0], [0.0, 0.0, 20.0, 20.0],
                              [30.0, 30.0, 100.0, 120.0]]).expand(b, 4, 4)
        scores = torch.tensor([0.9, 0.6, 0.3, 0.01]).expand(b, 4) * (0.5 + batch.mean((1, 2, 3)))[:, None]
        labels = torch.tensor([1, 2, 1, 2]).expand(b, 4)
        pooled = F.avg_pool2d(batch[:, :1], 4)  # [B, 1, S/4, S/4]
        masks = torch.cat([pooled, 1 - pooled, pooled.pow(2), pooled], 1)
        return boxes, scores, labels, masks

    def forward(self, images):
        from instaseg.models.rt_common import letterbox, postprocess

        batch, sizes, scales = letterbox(images, self.input_size)
        return postprocess(*self.forward_tensor(batch), sizes, scales, self.input_size, self.score_threshold)


def test_letterbox_models_export_like_their_eager_postprocess(tmp_path, shared_data):
    model = FakeLetterbox().eval()
    result = export_onnx(model, tmp_path / "lb.onnx", meta={"model_spec": {"name": "fake"}})
    assert all(c["ok"] for c in result.checks)
    onnx_model, meta = load_onnx_model(result.path)
    assert meta["mask_kind"] == "image"
    paths = [sorted((shared_data / "pennfudan" / "PNGImages").glob("*.png"))[0],
             sorted((shared_data / "coco_tiny" / "val2017").glob("*.jpg"))[1]]
    images = [_image(p, 200) for p in paths] + [torch.rand(3, 77, 131)]
    for image, ref, got in zip(images, model(images), onnx_model(images), strict=True):
        assert len(ref["boxes"]) == len(got["boxes"]) == 3
        assert (ref["boxes"] - got["boxes"]).abs().max() <= 1e-3
        assert torch.equal(ref["labels"], got["labels"])
        assert (ref["scores"] - got["scores"]).abs().max() <= 1e-5
        assert got["masks"].shape == ref["masks"].shape == (3, 1, *image.shape[-2:])
        assert (ref["masks"] - got["masks"]).abs().max() <= 1e-3
