"""``instaseg evaluate-interactive`` and the interactive backends: the protocol end to end on real
images with GrabCut, a trained click model through the same path, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from instaseg.cli import main
from instaseg.errors import CheckpointError, ConfigError
from instaseg.predict.interactive import ModelSegmenter, check_points
from instaseg.predict.interactive_eval import parse_backend


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_parse_backend():
    assert parse_backend("grabcut") == ("grabcut", None)
    assert parse_backend("model runs/x") == ("model", "runs/x")
    assert parse_backend("sam:/w/sam_vit_b.pth") == ("sam", "/w/sam_vit_b.pth")
    for bad, msg in (("nope", "expected"), ("model", "run directory"), ("sam", "checkpoint"),
                     ("grabcut x", "no argument")):
        with pytest.raises(ConfigError, match=msg):
            parse_backend(bad)


def test_clicks_outside_the_image_are_one_line_errors():
    check_points(np.array([[0.0, 0.0], [9.5, 4.0]]), np.array([1, 0]), 5, 10)
    with pytest.raises(ConfigError, match=r"\(10, 4\) is outside the 10x5 image"):
        check_points(np.array([[10.0, 4.0]]), np.array([1]), 5, 10)
    with pytest.raises(ConfigError, match="outside"):
        check_points(np.array([[-1.0, 2.0]]), np.array([1]), 5, 10)
    with pytest.raises(ConfigError, match="labels must be 1"):
        check_points(np.array([[1.0, 2.0]]), np.array([2]), 5, 10)
    with pytest.raises(ConfigError, match="1 labels for 2 points"):
        check_points(np.array([[1.0, 2.0], [2.0, 2.0]]), np.array([1]), 5, 10)


def test_cli_grabcut_on_pennfudan(shared_data, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate-interactive", "--backend", "grabcut", "--data", f"folder:{shared_data}/pennfudan",
                 "--split", "val", "--max-objects", "1", "--max-clicks", "3", "--output", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "NoC@85" in text and "grabcut" in text
    payload = json.loads((out / "interactive.json").read_text())
    m = payload["backends"]["grabcut"]
    assert m["objects"] == 1 and len(m["mIoU@k"]) == 3 and 1 <= m["NoC@85"] <= 3
    assert 0.0 < m["mIoU@k"][-1] <= 1.0 and m["seconds_per_click"] > 0
    objects = payload["objects"]["grabcut"]
    assert len(objects) == 1 and objects[0]["clicks"][0][2] is True
    assert (out / "miou_vs_clicks.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["evaluate-interactive", "--backend", "grabcut", "--data", f"folder:{empty}"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("instaseg: error:") and len(err.splitlines()) == 1
    code = main(["evaluate-interactive", "--backend", "sam /no/sam_vit_b.pth", "--data", "shapes:2:64"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "SAM checkpoint file does not exist" in err and len(err.splitlines()) == 1


def test_unreadable_images_are_skipped(tmp_path, capsys):
    import cv2

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image = np.full((64, 64, 3), 40, np.uint8)
    image[16:48, 16:48] = (220, 60, 40)
    ids = np.zeros((64, 64), np.uint8)
    ids[16:48, 16:48] = 1
    cv2.imwrite(str(root / "images" / "a.png"), image[..., ::-1])
    cv2.imwrite(str(root / "masks" / "a.png"), ids)
    (root / "images" / "b.png").write_bytes(b"not a png")
    cv2.imwrite(str(root / "masks" / "b.png"), ids)
    code = main(["evaluate-interactive", "--backend", "grabcut", "--data", f"folder:{root}",
                 "--max-clicks", "2", "--output", str(tmp_path / "eval")])
    out = capsys.readouterr().out
    assert code == 0 and "skipped unreadable image" in out and "b.png" in out
    m = json.loads((tmp_path / "eval" / "interactive.json").read_text())["backends"]["grabcut"]
    assert m["objects"] == 1 and m["mIoU@k"][0] > 0.8  # the readable image's square is found




def test_a_checkpoint_that_is_not_an_interactive_model_is_refused(tmp_path, capsys):
    path = tmp_path / "inst.pt"
    torch.save({"model": {}, "model_spec": {"name": "maskrcnn_r18_slim", "kwargs": {}}}, path)
    with pytest.raises(CheckpointError, match="not an interactive model"):
        ModelSegmenter(path)
    code = main(["evaluate-interactive", "--backend", f"model {path}", "--data", "shapes:2:64"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not an interactive model" in err and len(err.splitlines()) == 1


def test_trained_click_model_through_the_cli(tmp_path, capsys):
    """A few training steps through the engine (configs/interactive.yaml's model on synthetic shapes),
    then the same protocol: the backend answers every click with a mask of the image's size."""
    from instaseg.config import load_config
    from instaseg.predict.validation import train

    cfg = load_config("configs/interactive.yaml", [
        "data.train=shapes:8:96", "data.val=shapes:8:96", "model.kwargs.crop_size=64",
        "model.kwargs.max_size=96", "model.backbone_weights=null", "train.max_iters=2", "train.batch_size=4",
        "output.progress=false"])
    result = train(cfg, output=tmp_path / "run")
    assert result.metrics is None and (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    resumed = train(resume=tmp_path / "run", overrides=["train.max_iters=3"])  # no COCO validation either
    assert resumed.iterations == 3 and resumed.metrics is None
    seg = ModelSegmenter(tmp_path / "run")
    image = np.zeros((96, 96, 3), np.uint8)
    ((mask, score),) = seg.segment(image, np.array([[40.0, 40.0]]), np.array([1]))
    assert mask.shape == (96, 96) and mask.dtype == bool and 0.0 <= score <= 1.0
    ((mask2, _),) = seg.segment(image, np.array([[40.0, 40.0], [5.0, 5.0]]), np.array([1, 0]),
                                prev_mask=np.ones((96, 96), bool))
    assert mask2.shape == (96, 96)
    # flip averaging makes the answer mirror-equivariant: the mirrored image and click give the
    # mirrored mask (a single run of the barely trained network does not)
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    prev = np.zeros((96, 96), bool)
    prev[30:70, 20:50] = True
    for seg_flip, want in ((seg, True), (ModelSegmenter(tmp_path / "run", flip=False), False)):
        seg_flip._image = noisy.astype(np.float32) / 255.0
        a = seg_flip._prob(noisy, (10.0, 5.0, 70.0), np.array([[30.0, 40.0]]), np.array([1]), prev)
        seg_flip._image = np.ascontiguousarray(seg_flip._image[:, ::-1])
        b = seg_flip._prob(noisy, (16.0, 5.0, 70.0), np.array([[65.0, 40.0]]), np.array([1]), prev[:, ::-1])
        assert np.allclose(a, b[:, ::-1], atol=1e-5) == want
    # small objects get a wide crop (context), those shrunk into the crop a tight one (detail)
    size = seg.model.crop_size
    assert [seg.expand_for(s) for s in (10, size, 1.5 * size, 2 * size, 9 * size)] == pytest.approx(
        [1.5, 1.5, 1.35, 1.2, 1.2])
    with pytest.raises(ConfigError, match="outside"):
        seg.segment(image, np.array([[100.0, 40.0]]), np.array([1]))
    # the service's /segment_interactive answers with it, in SAM's points + labels convention
    from fastapi.testclient import TestClient

    from instaseg.serve.app import create_app

    ok, png = __import__("cv2").imencode(".png", image)
    with TestClient(create_app(None, seg)) as client:
        r = client.post("/segment_interactive", files={"file": ("a.png", png.tobytes(), "image/png")},
                        data={"points": "[[40, 40], [5, 5]]", "labels": "[1, 0]"})
    assert r.status_code == 200 and r.json()["backend"] == "model" and len(r.json()["masks"]) == 1
    code = main(["evaluate-interactive", "--backend", f"model {tmp_path / 'run'}", "--data", "shapes:4:96",
                 "--split", "val", "--max-objects", "2", "--max-clicks", "2"])
    assert code == 0 and "NoC@85" in capsys.readouterr().out
    # instaseg export writes the crop network and checks it with ONNX Runtime
    code = main(["export", "--checkpoint", str(tmp_path / "run"), "--output", str(tmp_path / "click.onnx")])
    out = capsys.readouterr().out
    assert code == 0 and "click model" in out and out.count(": ok: max abs diff") == 2


def test_an_answer_touching_the_crop_edge_inside_the_image_asks_for_a_larger_crop():
    from instaseg.predict.interactive import _touches_crop_edge

    mask = np.zeros((100, 100), bool)
    mask[40:60, 40:60] = True
    assert not _touches_crop_edge(mask, (30.0, 30.0, 40.0), 100, 100)  # margin all round
    assert _touches_crop_edge(mask, (40.0, 30.0, 40.0), 100, 100)  # cut at the crop's left edge
    # an edge outside the image cuts nothing: the object ends with the image
    edge = np.zeros((100, 100), bool)
    edge[40:60, 0:20] = True
    assert not _touches_crop_edge(edge, (-10.0, 30.0, 40.0), 100, 100)
    assert not _touches_crop_edge(np.zeros((100, 100), bool), (40.0, 30.0, 40.0), 100, 100)
