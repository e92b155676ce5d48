"""ONNX export through `instaseg export`, checked against PyTorch with ONNX Runtime on real images.

One export per session (module fixture): maskrcnn_r18_slim with seeded random weights, whose 2-class
scores straddle 0.5 so thresholds give non-empty, partial and empty detection sets.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from instaseg.cli import main
from instaseg.engine.checkpoint import save_checkpoint
from instaseg.errors import CheckpointError
from instaseg.models import get_model
from instaseg.ops.lowres import lowres_inference
from instaseg.predict.predictor import Predictor
from instaseg.predict.runtime import load_onnx_model
from instaseg.structures.paste import paste_masks_dense, paste_masks_to_rles
from tests.export.helpers import assert_empty_detections

CLASS_NAMES = ["background", "person"]
EXAMPLE = Path(__file__).with_name("onnx_standalone_example.py")


def _image(path: Path, max_side: int | None = None) -> torch.Tensor:
    """RGB float [3, H, W] in [0, 1]; optionally shrunk to ``max_side`` (keeps tests quick)."""
    pil = Image.open(path).convert("RGB")
    if max_side:
        pil.thumbnail((max_side, max_side))
    rgb = np.asarray(pil)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = get_model("maskrcnn_r18_slim", num_classes=2).eval()
    root = tmp_path_factory.mktemp("export")
    spec = {"name": "maskrcnn_r18_slim", "kwargs": {"num_classes": 2}}
    ckpt = save_checkpoint(
        {"model": model.state_dict(), "model_spec": spec, "class_names": CLASS_NAMES, "category_ids": [0, 1],
         "config": {}},
        root / "run" / "checkpoints" / "last.pt",
    )
    out = root / "model.onnx"
    assert main(["export", "--checkpoint", str(root / "run"), "--output", str(out)]) == 0
    onnx_model, meta = load_onnx_model(out)
    return model, onnx_model, meta, out, ckpt


@pytest.fixture(scope="module")
def real_images(shared_data):
    peds = sorted((shared_data / "pennfudan" / "PNGImages").glob("*.png"))[:2]
    coco = sorted((shared_data / "coco_tiny" / "val2017").glob("*.jpg"))[:1]
    return [_image(p, max_side=256) for p in peds + coco]


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-detection IoU of [K, 1, H, W] probability masks thresholded at 0.5."""
    a, b = a[:, 0] >= 0.5, b[:, 0] >= 0.5
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def _assert_parity(ref: dict, got: dict) -> None:
    assert len(got["boxes"]) == len(ref["boxes"])
    assert torch.equal(got["labels"], ref["labels"])
    assert (got["boxes"] - ref["boxes"]).abs().max() <= 1.0
    assert (got["scores"] - ref["scores"]).abs().max() <= 1e-3
    assert got["masks"].shape == ref["masks"].shape
    assert _mask_iou(got["masks"], ref["masks"]).min() >= 0.98


def _torch_run(model, image, threshold):
    saved = model.score_thresh
    model.score_thresh = threshold
    try:
        with torch.no_grad():
            return model([image])[0]
    finally:
        model.score_thresh = saved


def test_file_metadata_and_dynamic_axes(exported):
    _, _, meta, path, _ = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["instaseg.class_names"]) == CLASS_NAMES
    assert json.loads(props["instaseg.category_ids"]) == [0, 1]
    assert props["instaseg.model_name"] == "maskrcnn_r18_slim"
    pre = json.loads(props["instaseg.preprocessing"])
    assert pre["color"] == "RGB" and pre["range"] == [0.0, 1.0] and len(pre["normalize_mean"]) == 3
    import instaseg

    assert props["instaseg.version"] == instaseg.__version__
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["", "height", "width"]
    assert meta["class_names"] == CLASS_NAMES and meta["mask_kind"] == "box"


def test_parity_on_real_images_of_several_sizes(exported, real_images):
    model, onnx_model, _, _, _ = exported
    sizes = {tuple(img.shape[-2:]) for img in real_images}
    assert len(sizes) == len(real_images)  # different sizes / aspect ratios through one file
    for image in real_images:
        ref = _torch_run(model, image, 0.5)
        onnx_model.score_thresh = 0.5
        got = onnx_model([image])[0]
        assert len(ref["boxes"]) > 0  # a non-empty comparison
        assert (ref["masks"] >= 0.5).any()
        _assert_parity(ref, got)


def test_partial_threshold_and_batch_of_mixed_sizes(exported, real_images):
    model, onnx_model, _, _, _ = exported
    image = real_images[0]
    all_scores = _torch_run(model, image, 0.05)["scores"].sort(descending=True).values
    # halfway between two scores well apart, near the middle (never exactly on a score)
    gaps = all_scores[:-1] - all_scores[1:]
    mid = len(all_scores) // 2
    k = mid // 2 + int(gaps[mid // 2 : mid + mid // 2].argmax())
    threshold = float(all_scores[k] + all_scores[k + 1]) / 2
    ref = _torch_run(model, image, threshold)
    assert 0 < len(ref["boxes"]) < len(all_scores)
    onnx_model.score_thresh = threshold
    outs = onnx_model(real_images[:2])
    assert len(outs) == 2
    _assert_parity(ref, outs[0])
    _assert_parity(_torch_run(model, real_images[1], threshold), outs[1])


def test_sizes_where_float32_resize_sizes_would_round_differently(exported):
    # 479 px -> 127.99999999999999 in double (eager: 127) but 128.00000283 in float32
    from instaseg.export.onnx_export import compare_detections

    model, onnx_model, _, _, _ = exported
    onnx_model.score_thresh = 0.05
    for size in [(445, 479), (300, 479), (200, 215), (77, 513)]:
        image = torch.rand(3, *size, generator=torch.Generator().manual_seed(0))
        ref = _torch_run(model, image, 0.05)
        got = onnx_model.run_raw(image)
        assert len(ref["boxes"]) > 0
        check = compare_detections([ref["boxes"], ref["scores"], ref["labels"]], got)
        assert check["ok"], (size, check)


@pytest.mark.parametrize("case", ["high_threshold", "blank_image"])
def test_no_detections_is_empty_and_well_formed(exported, case):
    model, onnx_model, _, _, _ = exported
    image = torch.rand(3, 150, 210) if case == "high_threshold" else torch.zeros(3, 150, 210)
    threshold = 1.01 if case == "high_threshold" else 0.999
    onnx_model.score_thresh = threshold
    out = onnx_model([image])[0]
    assert len(_torch_run(model, image, threshold)["boxes"]) == 0
    assert_empty_detections(out, 150, 210)
    assert onnx_model.forward_lowres([image])[0]["mask_lowres"].shape[0] == 0


def test_predictor_gives_the_same_instances(exported, real_images):
    model, _, _, path, ckpt = exported
    rgb = (real_images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    torch_pred = Predictor.from_checkpoint(ckpt, score_thresh=0.5)
    onnx_pred = Predictor.load(backend="onnxruntime", model=path, score_thresh=0.5)
    a, b = torch_pred.predict(rgb), onnx_pred.predict(rgb)
    assert len(a.scores) == len(b.scores) > 0
    np.testing.assert_allclose(a.boxes.numpy(), b.boxes.numpy(), atol=1.0)
    np.testing.assert_allclose(a.scores.numpy(), b.scores.numpy(), atol=1e-3)


def test_lowres_inference_gives_the_same_instances_for_both_backends(exported, real_images):
    # the path the predictor takes: lowres_inference, then RLEs pasted inside the boxes
    model, onnx_model, _, _, _ = exported
    image = real_images[0]
    h, w = image.shape[-2:]
    model.score_thresh = onnx_model.score_thresh = 0.5
    try:
        a, b = lowres_inference(model, [image])[0], lowres_inference(onnx_model, [image])[0]
    finally:
        model.score_thresh = 0.05
    assert len(a["scores"]) == len(b["scores"]) > 0 and float(a["scores"].min()) >= 0.5
    np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1.0)
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-3)
    rles_a = paste_masks_to_rles(a["mask_lowres"].numpy(), a["boxes"].numpy(), h, w)
    rles_b = paste_masks_to_rles(b["mask_lowres"].numpy(), b["boxes"].numpy(), h, w)
    ious = mask_utils.iou(rles_a, rles_b, [0] * len(rles_b)).diagonal()
    assert ious.min() >= 0.98


def test_standalone_example_needs_only_onnxruntime(exported, shared_data, tmp_path):
    _, onnx_model, _, path, _ = exported
    assert not re.search(r"^\s*(import|from)\s+instaseg", EXAMPLE.read_text(), re.M)
    image_path = sorted((shared_data / "pennfudan" / "PNGImages").glob("*.png"))[0]
    masks_path = tmp_path / "masks.npy"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), str(path), str(image_path), str(masks_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    onnx_model.score_thresh = 0.5
    ref = onnx_model.forward_lowres([_image(image_path)])[0]
    assert len(found) == len(ref["boxes"]) > 0
    assert {f["class"] for f in found} == {"person"}
    np.testing.assert_allclose([f["score"] for f in found], ref["scores"].numpy(), atol=1e-3)
    np.testing.assert_allclose([f["box"] for f in found], ref["boxes"].numpy(), atol=0.06)
    # the same masks as `instaseg predict` (instaseg.structures.paste samples box masks the same way)
    height, width = np.asarray(Image.open(image_path)).shape[:2]
    expected = paste_masks_dense(ref["mask_lowres"].numpy(), ref["boxes"].numpy(), height, width)
    masks = np.load(masks_path)
    assert masks.shape == expected.shape and masks.any()
    inter = (masks & expected).sum((1, 2))
    union = np.maximum((masks | expected).sum((1, 2)), 1)
    assert (inter / union).min() >= 0.99


def test_corrupt_foreign_and_missing_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="junk.onnx: not a loadable ONNX model"):
        load_onnx_model(junk)
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    foreign = onnx.helper.make_model(
        onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
    )
    foreign.ir_version = 8
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(CheckpointError, match="foreign.onnx: not an instaseg export"):
        load_onnx_model(tmp_path / "foreign.onnx")
    with pytest.raises(CheckpointError, match="missing.onnx: ONNX model file does not exist"):
        load_onnx_model(tmp_path / "missing.onnx")


def test_cli_refuses_to_overwrite_and_reports_errors(exported, tmp_path, capsys):
    _, _, _, path, ckpt = exported
    before = path.read_bytes()
    assert main(["export", "--checkpoint", str(ckpt), "--output", str(path)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert path.read_bytes() == before
    missing = ["--checkpoint", str(tmp_path / "no.pt"), "--output", str(tmp_path / "a.onnx")]
    assert main(["export", *missing]) == 2
    assert "no.pt: checkpoint file does not exist" in capsys.readouterr().err
    for args in (["--format", "tflite"], ["--opset", "9"], ["--image-size", "x"]):
        assert main(["export", "--checkpoint", str(ckpt), "--output", str(tmp_path / "b.onnx"), *args]) == 2
    assert not (tmp_path / "b.onnx").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_format_1_files_with_the_old_threshold_names_still_load(exported, real_images, tmp_path):
    # Format 1 named the threshold input and metadata `score_threshold` / `mask_threshold`; rewrite a
    # fresh export into that form and check the runtime gives the same detections.
    _, onnx_model, new_meta, path, _ = exported
    proto = onnx.load(str(path))
    for node in proto.graph.node:
        node.input[:] = ["score_threshold" if name == "score_thresh" else name for name in node.input]
    proto.graph.input[1].name = "score_threshold"
    renames = {"instaseg.score_thresh": "instaseg.score_threshold",
               "instaseg.mask_thresh": "instaseg.mask_threshold"}
    for prop in proto.metadata_props:
        prop.key = renames.get(prop.key, prop.key)
        if prop.key == "instaseg.format_version":
            prop.value = "1"
    old = tmp_path / "format1.onnx"
    onnx.save(proto, str(old))
    old_model, meta = load_onnx_model(old)
    assert meta["format_version"] == "1" and meta["score_thresh"] == new_meta["score_thresh"]
    assert meta["mask_thresh"] == new_meta["mask_thresh"] == 0.5
    old_model.score_thresh = onnx_model.score_thresh
    a, b = onnx_model([real_images[0]])[0], old_model([real_images[0]])[0]
    assert len(a["scores"]) == len(b["scores"])
    np.testing.assert_array_equal(a["scores"].numpy(), b["scores"].numpy())
