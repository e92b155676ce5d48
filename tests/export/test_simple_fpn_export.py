"""simple_fpn through `instaseg export` (ONNX and TorchScript), checked against eager PyTorch on real images.

One ONNX export per session (module fixture). The model has seeded random weights with two changes so
the check is not vacuous: a class head with zero bias and larger weights (scores spread over 0..1, so
threshold 0.5 leaves more than ``pre_nms_top_k`` candidates and 0.9 fewer) and a dynamic-mask
controller with larger weights (masks with real foreground and background, of varied sizes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instaseg.cli import main
from instaseg.engine.checkpoint import save_checkpoint
from instaseg.models import get_model
from instaseg.predict.runtime import load_onnx_model
from tests.export.helpers import assert_empty_detections

CLASS_NAMES = ["background", "person"]
SPEC = {"name": "simple_fpn", "kwargs": {"num_classes": 2, "pre_nms_top_k": 100}}


def _image(path: Path, max_side: int, transpose: bool = False) -> torch.Tensor:
    """RGB float [3, H, W] in [0, 1], shrunk to ``max_side``; ``transpose`` makes a portrait of it."""
    pil = Image.open(path).convert("RGB")
    if transpose:
        pil = pil.transpose(Image.Transpose.TRANSPOSE)
    pil.thumbnail((max_side, max_side))
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def model_and_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = get_model(SPEC["name"], **SPEC["kwargs"]).eval()
    with torch.no_grad():
        model.cls_logits.bias.zero_()
        model.cls_logits.weight.normal_(std=0.05)
        model.controller.weight.normal_(std=0.05)
    root = tmp_path_factory.mktemp("sfpn")
    ckpt = save_checkpoint(
        {"model": model.state_dict(), "model_spec": SPEC, "class_names": CLASS_NAMES, "category_ids": [0, 1],
         "config": {}},
        root / "run" / "checkpoints" / "last.pt",
    )
    return model, ckpt


@pytest.fixture(scope="module")
def exported(model_and_ckpt):
    _, ckpt = model_and_ckpt
    out = ckpt.parent.parent.parent / "simple_fpn.onnx"
    run_dir = ckpt.parent.parent
    assert main(["export", "--checkpoint", str(run_dir), "--format", "onnx", "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def real_images(shared_data):
    peds = sorted((shared_data / "pennfudan" / "PNGImages").glob("*.png"))[:2]
    # landscape and portrait: two sizes and aspect ratios through the same file
    return [_image(peds[0], 256), _image(peds[1], 224, transpose=True)]


def _torch_run(model, image: torch.Tensor, threshold: float) -> dict:
    saved = model.score_thresh
    model.score_thresh = threshold
    try:
        with torch.no_grad():
            return model([image])[0]
    finally:
        model.score_thresh = saved


def _candidates(model, image: torch.Tensor, threshold: float) -> int:
    """How many (location, class) scores reach ``threshold`` before top-k and NMS."""
    with torch.no_grad():
        batch, _ = model.transform([image])
        logits = model._heads(model.backbone(batch.tensors)["0"])[0]
    return int((logits.sigmoid() >= threshold).sum())


def _pairs(ref: dict, got: dict) -> list[tuple[int, int]]:
    """Pair each reference detection with the nearest unused one of the same label (order of
    near-equal scores may differ between runtimes)."""
    dist = (ref["boxes"][:, None] - got["boxes"][None]).abs().amax(-1)
    dist[ref["labels"][:, None] != got["labels"][None]] = float("inf")
    used: set[int] = set()
    pairs = []
    for i in range(len(ref["boxes"])):
        order = [int(j) for j in dist[i].argsort() if int(j) not in used]
        used.add(order[0])
        pairs.append((i, order[0]))
    return pairs


def _assert_parity(ref: dict, got: dict) -> None:
    assert len(got["boxes"]) == len(ref["boxes"]) > 0
    assert got["masks"].shape == ref["masks"].shape
    for i, j in _pairs(ref, got):
        assert int(got["labels"][j]) == int(ref["labels"][i])
        assert float((got["boxes"][j] - ref["boxes"][i]).abs().max()) <= 1.0
        assert abs(float(got["scores"][j] - ref["scores"][i])) <= 1e-3
        a, b = ref["masks"][i, 0] >= 0.5, got["masks"][j, 0] >= 0.5
        union = int((a | b).sum())
        iou = int((a & b).sum()) / union if union else 1.0
        assert iou >= 0.98, (i, iou)


def test_onnx_parity_on_real_images_of_two_shapes(model_and_ckpt, exported, real_images):
    model, _ = model_and_ckpt
    onnx_model, meta = load_onnx_model(exported)
    assert meta["model_name"] == "simple_fpn" and meta["mask_kind"] == "box"
    assert meta["class_names"] == CLASS_NAMES
    assert len({tuple(img.shape[-2:]) for img in real_images}) == 2
    fg_fractions = []
    for image in real_images:
        for threshold in (0.5, 0.9):
            ref = _torch_run(model, image, threshold)
            onnx_model.score_thresh = threshold
            got = onnx_model([image])[0]
            _assert_parity(ref, got)
            fg_fractions += (ref["masks"][:, 0] >= 0.5).flatten(1).float().mean(1).tolist()
    assert min(fg_fractions) < 0.5 and max(fg_fractions) > 0  # masks with foreground and background
    # both the capped (> pre_nms_top_k candidates) and uncapped paths were compared
    counts = [_candidates(model, real_images[0], t) for t in (0.5, 0.9)]
    assert counts[0] > model.pre_nms_top_k > counts[1] > 0


@pytest.mark.parametrize("case", ["threshold_above_one", "blank_image"])
def test_onnx_no_detections_is_empty_and_well_formed(model_and_ckpt, exported, case):
    model, _ = model_and_ckpt
    onnx_model, _ = load_onnx_model(exported)
    image = torch.rand(3, 150, 210, generator=torch.Generator().manual_seed(0))
    threshold = 1.01
    if case == "blank_image":
        image = torch.zeros(3, 150, 210)
        # just above the best score: nothing left (margin: runtimes differ by ~1e-7)
        threshold = float(_torch_run(model, image, 0.0)["scores"].max()) + 1e-3
    onnx_model.score_thresh = threshold
    out = onnx_model([image])[0]
    assert len(_torch_run(model, image, threshold)["boxes"]) == 0
    assert_empty_detections(out, 150, 210)
    raw_masks = onnx_model.run_raw(image)[3]
    assert raw_masks.ndim == 3 and raw_masks.shape[0] == 0


def test_torchscript_export_matches_eager(model_and_ckpt, real_images, tmp_path):
    from instaseg.predict.runtime import load_torchscript_model

    model, ckpt = model_and_ckpt
    out = tmp_path / "simple_fpn.pt"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--output", str(out)]) == 0
    ts_model, meta = load_torchscript_model(out, score_thresh=0.5)
    assert meta["mask_kind"] == "box"
    image = real_images[1]  # traced at the default landscape size; this one is portrait
    _assert_parity(_torch_run(model, image, 0.5), ts_model([image])[0])


def test_predict_cli_with_onnxruntime_backend(model_and_ckpt, exported, shared_data, tmp_path, capsys):
    _, ckpt = model_and_ckpt
    src = sorted((shared_data / "pennfudan" / "PNGImages").glob("*.png"))[0]
    folder = tmp_path / "imgs"
    folder.mkdir()
    pil = Image.open(src).convert("RGB")
    pil.thumbnail((256, 256))
    pil.save(folder / "ped.png")
    found = {}
    backends = (("onnxruntime", ["--model", str(exported)]), ("torch", ["--checkpoint", str(ckpt)]))
    for backend, model_args in backends:
        out = tmp_path / backend
        argv = ["predict", str(folder), *model_args, "--backend", backend, "--output", str(out),
                "--score-thresh", "0.5"]
        assert main(argv) == 0, capsys.readouterr().err
        found[backend] = json.loads((out / "results.json").read_text())
    onnx_res, torch_res = found["onnxruntime"], found["torch"]
    assert len(onnx_res) == len(torch_res) > 0
    assert {r["category_id"] for r in onnx_res} == {1}
    np.testing.assert_allclose(sorted(r["score"] for r in onnx_res), sorted(r["score"] for r in torch_res),
                               atol=1e-3)
