"""Predictor: torch layer, NumPy layer (RLE, dense masks on demand), filters, loading, safety."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch

from instaseg.engine.checkpoint import save_checkpoint
from instaseg.errors import CheckpointError, ConfigError
from instaseg.predict import runtime
from instaseg.predict.predictor import Predictor, image_to_tensor, resolve_classes
from instaseg.structures.instances import Instances
from instaseg.structures.masks import rle_decode
from tests.serve.fakes import CLASS_NAMES, BlobModel, blob_image, disk_mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_predict_returns_sorted_instances() -> None:
    image = blob_image()
    pred = Predictor(BlobModel(), CLASS_NAMES, score_thresh=0.5)
    out = pred.predict(image)
    assert isinstance(out, Instances) and out.image_size == (120, 160)
    assert out.boxes.shape == (2, 4) and out.boxes.dtype == torch.float32
    assert out.labels.tolist() == [1, 2]
    assert pred.class_names_of(out) == ["blob", "other"]
    assert torch.all(out.scores[:-1] >= out.scores[1:])
    assert out.mask_kind == "lowres"  # box-relative masks, pasted only when asked
    expected = [disk_mask(120, 160, 40, 50, 18), disk_mask(120, 160, 115, 60, 12)]
    dense, rles = out.to_dense_masks(), out.to_rles()
    for k in range(2):
        decoded = rle_decode(rles[k])
        np.testing.assert_array_equal(decoded, dense[k])
        assert _iou(decoded, expected[k]) > 0.85


def test_image_path_is_read(tmp_path) -> None:
    path = tmp_path / "blobs.png"
    cv2.imwrite(str(path), cv2.cvtColor(blob_image(), cv2.COLOR_RGB2BGR))
    out = Predictor(BlobModel(), CLASS_NAMES).predict(path)
    assert len(out) == 2 and out.image_size == (120, 160)


def test_score_filter_keeps_scores_equal_to_the_threshold() -> None:
    image = blob_image(blobs=((30, 30, 10), (90, 30, 10), (30, 90, 8), (120, 90, 8)))
    pred = Predictor(BlobModel(), CLASS_NAMES, score_thresh=0.0)
    scores = pred.predict(image).scores
    exact = float(scores[1])  # 0.7 as float32: kept at >= exactly this value, dropped just above it
    assert len(pred.predict(image, score_thresh=exact)) == 2
    assert len(pred.predict(image, score_thresh=float(np.nextafter(np.float32(exact), np.float32(1))))) == 1


def test_filters_score_max_detections_and_classes() -> None:
    image = blob_image(blobs=((30, 30, 10), (90, 30, 10), (30, 90, 8), (120, 90, 8)))
    pred = Predictor(BlobModel(), CLASS_NAMES, score_thresh=0.0)
    assert len(pred.predict(image)) == 4
    assert len(pred.predict(image, score_thresh=0.6)) == 2  # 0.9, 0.7
    assert len(pred.predict(image, max_detections=3)) == 3
    only = pred.predict(image, classes="other")
    assert set(pred.class_names_of(only)) == {"other"} and len(only.to_rles()) == 2
    assert pred.predict(image, classes=[1]).labels.tolist() == [1, 1]
    restricted = Predictor(BlobModel(), CLASS_NAMES, score_thresh=0.0, classes=["blob"])
    assert restricted.predict(image).labels.tolist() == [1, 1]


def test_predict_torch_keeps_low_res_masks() -> None:
    pred = Predictor(BlobModel(), CLASS_NAMES)
    (inst,) = pred.predict_torch([image_to_tensor(blob_image())])
    assert inst.mask_lowres is not None and inst.mask_lowres.shape == (2, 28, 28) and inst.rles is None
    assert inst.image_size == (120, 160)


def test_empty_image_gives_empty_results() -> None:
    out = Predictor(BlobModel(), CLASS_NAMES).predict(np.full((50, 60, 3), 128, np.uint8))
    assert out.boxes.shape == (0, 4) and out.to_rles() == [] and out.to_dense_masks().shape == (0, 50, 60)


def test_bad_options_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown class 'cat'"):
        resolve_classes("blob,cat", CLASS_NAMES)
    with pytest.raises(ConfigError, match="out of range"):
        resolve_classes([7], CLASS_NAMES)
    with pytest.raises(ConfigError, match="score-thresh"):
        Predictor(BlobModel(), CLASS_NAMES, score_thresh=1.5)
    with pytest.raises(ConfigError, match="max-detections"):
        Predictor(BlobModel(), CLASS_NAMES, max_detections=0)
    with pytest.raises(ValueError, match="uint8"):
        image_to_tensor(np.zeros((4, 4, 3), np.float32))


def _save_slim(path, **extra) -> None:
    from instaseg.models import get_model

    kwargs = {"num_classes": 3}
    model = get_model("maskrcnn_r18_slim", **kwargs)
    save_checkpoint(
        {
            "model": model.state_dict(),
            "model_spec": {"name": "maskrcnn_r18_slim", "kwargs": kwargs},
            "class_names": ["background", "person", "car"],
            "category_ids": [0, 1, 3],
            "config": {},
            **extra,
        },
        path,
    )


def test_from_checkpoint_runs_the_saved_model(tmp_path) -> None:
    _save_slim(tmp_path / "run" / "checkpoints" / "best.pt")
    pred = Predictor.load(checkpoint=tmp_path / "run", score_thresh=0.0, max_detections=5)
    assert pred.class_names == ["background", "person", "car"] and pred.name == "maskrcnn_r18_slim"
    assert pred.category_id(2) == 3
    out = pred.predict(blob_image())
    assert len(out) <= 5 and all(r["size"] == [120, 160] for r in out.to_rles())
    assert set(pred.class_names_of(out)) <= {"person", "car"}


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


# torch warns that the file's pickle protocol is unusual: that file is the attack this test refuses.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_needing_arbitrary_code_is_refused(tmp_path, capsys) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refused to load") as info:
        Predictor.from_checkpoint(path)
    assert str(path) in str(info.value)
    assert "this must never run" not in capsys.readouterr().out
    # A raw pickle of an object is refused the same way.
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError, match=str(raw)):
        Predictor.load(checkpoint=raw)


def test_backend_option_errors(tmp_path, monkeypatch) -> None:
    with pytest.raises(ConfigError, match="--backend must be one of"):
        Predictor.load(checkpoint=tmp_path, backend="tensorrt")
    with pytest.raises(ConfigError, match="needs --model"):
        Predictor.load(backend="onnxruntime")
    with pytest.raises(CheckpointError, match="does not exist"):
        Predictor.load(backend="onnxruntime", model=tmp_path / "missing.onnx")
    with pytest.raises(ConfigError, match="--checkpoint is required"):
        Predictor.load()
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not really")
    with pytest.raises(CheckpointError, match="m.onnx"):  # not an ONNX file: one line naming it
        Predictor.load(backend="onnxruntime", model=onnx)


def test_onnx_backend_plugs_in_through_load_onnx_model(tmp_path, monkeypatch) -> None:
    fake = lambda path: (BlobModel(), {"class_names": CLASS_NAMES, "name": "blob-onnx"})  # noqa: E731
    monkeypatch.setattr(runtime, "load_onnx_model", fake)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    pred = Predictor.load(backend="onnxruntime", model=onnx)
    assert pred.name == "blob-onnx" and len(pred.predict(blob_image())) == 2


def test_bad_device_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        Predictor.load(checkpoint="x.pt", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            Predictor.load(checkpoint="x.pt", device="cuda")
