"""ONNX export of the Panoptic FPN, run with ONNX Runtime: the instance outputs plus ``sem_seg``, the
same panoptic result as PyTorch through the predictor, and an image with no things."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from instaseg.cli import main
from instaseg.data.build import build_dataset
from instaseg.data.shapes_panoptic import render_stuff
from instaseg.predict.predictor import Predictor
from instaseg.predict.runtime import PANOPTIC_OUTPUT_NAMES
from tests.predict.test_panoptic_predict import SPEC, save_panoptic_checkpoint


def test_panoptic_onnx_matches_pytorch(tmp_path: Path, capsys) -> None:
    save_panoptic_checkpoint(tmp_path / "pan.pt", instances_score_thresh=0.2)
    onnx_path = tmp_path / "pan.onnx"
    assert main(["export", "-c", str(tmp_path / "pan.pt"), "-o", str(onnx_path)]) == 0
    capsys.readouterr()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(PANOPTIC_OUTPUT_NAMES)

    torch_pred = Predictor.from_checkpoint(tmp_path / "pan.pt")
    onnx_pred = Predictor.from_onnx(onnx_path)
    assert onnx_pred.is_panoptic and onnx_pred.fusion == torch_pred.fusion
    assert onnx_pred.fusion.instances_score_thresh == 0.2
    image = build_dataset(SPEC, split="test").load_record(2).image
    a, b = torch_pred.predict_panoptic(image), onnx_pred.predict_panoptic(image)
    kinds = [[(s.category_id, s.isthing) for s in r.segments] for r in (a, b)]
    assert kinds[0] == kinds[1]
    assert any(s.isthing for s in a.segments) and any(not s.isthing for s in a.segments)
    assert float((a.id_map == b.id_map).mean()) >= 0.999
    for sa, sb in zip(a.segments, b.segments, strict=True):
        assert (sa.score is None) == (sb.score is None)
        if sa.score is not None:
            assert abs(sa.score - sb.score) < 1e-3


def test_panoptic_onnx_on_an_image_with_no_things(tmp_path: Path, capsys) -> None:
    save_panoptic_checkpoint(tmp_path / "pan.pt")
    onnx_path = tmp_path / "pan.onnx"
    assert main(["export", "-c", str(tmp_path / "pan.pt"), "-o", str(onnx_path)]) == 0
    capsys.readouterr()
    background, _ = render_stuff(np.random.default_rng(3), 80)
    image = np.clip(background, 0, 255).astype(np.uint8)[:, :72]  # stuff only, not square
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255
    feeds = {"image": chw, "score_thresh": np.array(1.01, np.float32)}
    boxes, scores, labels, masks, sem = session.run(None, feeds)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,) and masks.shape[0] == 0
    assert sem.shape == (80, 72) and sem.dtype == np.int64 and 0 <= sem.min() and sem.max() <= 3
    onnx_pred = Predictor.from_onnx(onnx_path, score_thresh=0.0)
    onnx_pred.model.score_thresh = 1.01  # the graph drops every detection
    result = onnx_pred.predict_panoptic(image)
    torch_sem = Predictor.from_checkpoint(tmp_path / "pan.pt").model.forward_panoptic(
        [torch.from_numpy(chw)])[0]["sem_seg"].numpy()
    assert float((torch_sem == sem).mean()) >= 0.999
    assert result.validate() == [] and result.segments and all(not s.isthing for s in result.segments)
