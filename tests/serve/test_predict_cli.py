"""``instaseg predict`` and the runner: folders, globs, videos with tracking, bad inputs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from instaseg.cli import main
from instaseg.errors import ConfigError, DataError
from instaseg.predict.files import image_ids, list_sources, run_predict
from instaseg.predict.predictor import Predictor
from instaseg.structures.masks import rle_decode
from tests.serve.fakes import CLASS_NAMES, BlobModel, blob_image


def _write_images(folder, names=("000000000007.png", "street.png")) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(folder / name), cv2.cvtColor(blob_image(), cv2.COLOR_RGB2BGR))


def test_cli_predicts_a_folder_with_a_real_checkpoint(tmp_path, capsys) -> None:
    from tests.predict.test_predictor import _save_slim

    _save_slim(tmp_path / "slim.pt")
    _write_images(tmp_path / "imgs")
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "imgs"), "--checkpoint", str(tmp_path / "slim.pt"),
            "--output", str(out), "--score-thresh", "0.0", "--max-detections", "3"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "2 images" in captured.out and "1 skipped" in captured.out
    skipped = [line for line in captured.err.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0]
    results = json.loads((out / "results.json").read_text())
    assert {r["file_name"] for r in results} <= {"000000000007.png", "street.png"}
    assert len(results) <= 6 and all(r["category_id"] in (1, 3) for r in results)
    assert {r["image_id"] for r in results} <= {0, 2}  # positions of the readable images (broken.jpg is 1)
    assert (out / "000000000007.jpg").is_file() and (out / "street.jpg").is_file()
    # Never overwrite silently.
    assert main(argv) == 2
    assert "results.json: already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [(["--score-thresh", "2"], "--score-thresh must be in [0, 1]"),
     (["--backend", "tensorrt"], "--backend must be one of"),
     (["--max-frames", "0"], "--max-frames must be >= 1")],
)
def test_cli_bad_arguments_give_one_line_errors(tmp_path, capsys, extra, fragment) -> None:
    from tests.predict.test_predictor import _save_slim

    ckpt = tmp_path / "slim.pt"
    _save_slim(ckpt)
    assert main(["predict", str(tmp_path), "--checkpoint", str(ckpt), "-o", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("instaseg: error:") and fragment in err and len(err.splitlines()) == 1


def test_missing_checkpoint_and_source(tmp_path, capsys) -> None:
    missing = str(tmp_path / "nope.pt")
    assert main(["predict", str(tmp_path), "--checkpoint", missing, "-o", str(tmp_path)]) == 2
    assert "nope.pt: checkpoint file does not exist" in capsys.readouterr().err
    with pytest.raises(DataError, match="no such file"):
        list_sources(str(tmp_path / "missing.jpg"))
    with pytest.raises(DataError, match="glob matches no image"):
        list_sources(str(tmp_path / "*.jpg"))
    with pytest.raises(DataError, match="no image files"):
        list_sources(str(tmp_path))


def test_image_ids_use_coco_numbers_only_when_unambiguous(tmp_path) -> None:
    assert image_ids([tmp_path / "000000000139.jpg", tmp_path / "7.png"]) == [139, 7]
    assert image_ids([tmp_path / "a" / "1.png", tmp_path / "b" / "1.png"]) == [0, 1]
    assert image_ids([tmp_path / "12.png", tmp_path / "cat.png"]) == [0, 1]


def test_glob_source_and_overwrite(tmp_path) -> None:
    _write_images(tmp_path / "a", ("1.png", "2.png"))
    _write_images(tmp_path / "b", ("1.png",))
    pred = Predictor(BlobModel(), CLASS_NAMES)
    summary = run_predict(pred, str(tmp_path / "*" / "*.png"), tmp_path / "out", log=lambda m: None)
    assert summary.images == 3 and summary.instances == 6
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jpg")) == ["1.jpg", "1_2.jpg", "2.jpg"]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results) == 6 and all(r["segmentation"]["size"] == [120, 160] for r in results)
    assert results[0]["bbox"][2] > 0  # XYWH
    with pytest.raises(ConfigError, match="already exists"):
        run_predict(pred, str(tmp_path / "a"), tmp_path / "out")
    summary = run_predict(pred, str(tmp_path / "a"), tmp_path / "out", overwrite=True, save_overlays=False)
    assert summary.images == 2


def _write_video(path, frames: int = 6) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (160, 120))
    assert writer.isOpened()
    for t in range(frames):
        # A big disk moving right, a small one moving down: both overlap their previous positions.
        image = blob_image(blobs=((30 + 6 * t, 50, 18), (120, 25 + 5 * t, 11)))
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_frames_in_order_with_stable_track_ids(tmp_path) -> None:
    video = tmp_path / "clip.mp4"
    _write_video(video)
    pred = Predictor(BlobModel(), CLASS_NAMES, score_thresh=0.0)
    summary = run_predict(pred, str(video), tmp_path / "out")
    assert summary.images == 6 and summary.frames == 6
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted({r["frame"] for r in results}) == list(range(6))
    big = {r["frame"]: r for r in results if r["score"] > 0.8}  # the largest blob scores 0.9
    small = {r["frame"]: r for r in results if 0.6 < r["score"] < 0.8}  # the second largest: 0.7
    assert len(big) == 6 and len(small) == 6
    assert len({r["track_id"] for r in big.values()}) == 1
    assert len({r["track_id"] for r in small.values()}) == 1
    assert big[0]["track_id"] != small[0]["track_id"]
    # The big blob really moves right frame by frame (frames are read in order).
    xs = [np.nonzero(rle_decode(big[f]["segmentation"]))[1].mean() for f in range(6)]
    assert all(b > a for a, b in zip(xs, xs[1:], strict=False))
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip_overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()
    summary = run_predict(pred, str(video), tmp_path / "out2", max_frames=2, save_overlays=False)
    assert summary.images == 2


def test_unreadable_video_is_reported(tmp_path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    messages: list[str] = []
    pred = Predictor(BlobModel(), CLASS_NAMES)
    with pytest.raises(DataError, match="no image could be read"):
        run_predict(pred, str(bad), tmp_path / "out", log=messages.append)
    assert len(messages) == 1 and "bad.mp4" in messages[0]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [(["serve", "--port", "70000"], "--port must be in 1..65535"),
     (["demo", "--max-upload-mb", "0"], "--max-upload-mb and --max-megapixels must be > 0"),
     (["serve", "--sam-checkpoint", "missing_sam_vit_b.pth"], "SAM checkpoint file does not exist"),
     (["serve", "--threads", "0"], "--threads must be >= 1"),
     (["serve"], "--checkpoint is required")],
)
def test_serve_and_demo_bad_arguments(capsys, argv, fragment) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("instaseg: error:") and fragment in err and len(err.splitlines()) == 1


def test_cli_tiled_prediction_and_bad_tiling_options(tmp_path, capsys) -> None:
    from tests.predict.test_predictor import _save_slim

    _save_slim(tmp_path / "slim.pt")
    _write_images(tmp_path / "imgs", names=("big.png",))
    base = ["predict", str(tmp_path / "imgs"), "--checkpoint", str(tmp_path / "slim.pt"),
            "--score-thresh", "0.0", "--max-detections", "3"]
    from instaseg.ops.tiling import tile_grid

    out = tmp_path / "out"
    assert main([*base, "-o", str(out), "--tile", "64", "--overlap", "0.25", "--tile-global"]) == 0
    results = json.loads((out / "results.json").read_text())
    # at most 3 detections per tile and for the global pass, fewer once merged across borders
    assert 0 < len(results) <= 3 * (len(tile_grid(120, 160, 64, 0.25)) + 1)
    assert all(r["segmentation"]["size"] == [120, 160] for r in results)
    assert (tmp_path / "out" / "big.jpg").is_file()
    capsys.readouterr()
    assert main([*base, "-o", str(tmp_path / "o2"), "--tile", "64", "--overlap", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overlap must be in [0, 1)" in err[0]


def test_cli_predict_with_flips(tmp_path, capsys) -> None:
    from tests.predict.test_predictor import _save_slim

    _save_slim(tmp_path / "slim.pt")
    _write_images(tmp_path / "imgs", names=("a.png",))
    base = ["predict", str(tmp_path / "imgs"), "--checkpoint", str(tmp_path / "slim.pt"), "--score-thresh",
            "0.0", "--no-overlays"]
    assert main([*base, "--output", str(tmp_path / "plain")]) == 0
    assert main([*base, "--output", str(tmp_path / "tta"), "--tta"]) == 0
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    flips = json.loads((tmp_path / "tta" / "results.json").read_text())
    assert flips and [r["score"] for r in flips] != [r["score"] for r in plain]
    assert main([*base, "--output", str(tmp_path / "ray.jsonl"), "--tta", "--engine", "ray"]) == 2
    assert "--tta and --refine run with --engine local" in capsys.readouterr().err
