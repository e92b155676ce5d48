"""Video prediction end to end with a small random-weight video model: frames folder (with a corrupt
frame) and MP4 through the CLI and ``run_video``; the /segment_video job endpoint; evaluate on video data."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from instaseg.data.build import build_dataset
from instaseg.data.ytvis import read_mots
from instaseg.engine.video import save_video_checkpoint
from instaseg.models import get_model, model_task
from instaseg.models.checkpoint import load_model
from instaseg.predict.predictor import Predictor
from instaseg.predict.temporal_tracker import TrackerConfig
from instaseg.predict.video import run_video
from instaseg.serve.app import create_app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def video_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = get_model("maskrcnn_r18_slim_video", min_size=64, max_size=64)
    path = tmp_path_factory.mktemp("ckpt") / "video.pt"
    ds = build_dataset("video_shapes:1:2:64")
    return save_video_checkpoint(model, path, class_names=ds.class_names, category_ids=ds.category_ids,
                                 model_kwargs={"num_classes": 4, "min_size": 64, "max_size": 64})


def _frames(n: int = 6, size: int = 64) -> list[np.ndarray]:
    ds = build_dataset(f"video_shapes:1:{n}:{size}")
    return [ds.load_record(i).image for i in range(n)]


def _mp4(path: Path, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_video_model_contract(video_ckpt: Path) -> None:
    assert model_task("maskrcnn_r18_slim_video") == "video"
    model, _ = load_model(video_ckpt)
    with torch.no_grad():
        out = model.forward_lowres([torch.rand(3, 64, 64)])[0]
    assert out["embeddings"].shape == (len(out["boxes"]), 64)
    if len(out["boxes"]):
        assert torch.allclose(out["embeddings"].norm(dim=1), torch.ones(len(out["boxes"])), atol=1e-4)


def test_association_loss_learns_identity() -> None:
    from instaseg.data.video import ClipDataset

    torch.manual_seed(0)
    model = get_model("maskrcnn_r18_slim_video", min_size=64, max_size=64)
    from instaseg.engine.video import train_association

    ds = build_dataset("video_shapes:6:6:64")
    losses = train_association(model, ds, iters=16, batch_size=3, lr=3e-3)
    # measured: first five 1.33, last five 0.63 on average (seed 0)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    clip = ClipDataset(ds, length=2, augment=False)[0]
    assert len(clip) == 2 and "track_ids" in clip[0][1]


def test_predict_cli_frames_folder_with_a_corrupt_frame(video_ckpt: Path, tmp_path: Path) -> None:
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, f in enumerate(_frames()):
        cv2.imwrite(str(frames_dir / f"{i:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (frames_dir / "00003.png").write_bytes(b"not a png at all")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "instaseg.cli", "predict", str(frames_dir), "-o", str(out),
                           "-c", str(video_ckpt), "--score-thresh", "0.0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "skipped unreadable frame 00003.png" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 5 and summary["corrupt_frames"] == 1 and summary["tracker"] == "temporal"
    results = json.loads((out / "results.json").read_text())
    assert all(len(r["segmentations"]) == 6 and r["segmentations"][3] is None for r in results)
    read_mots(out / "tracks.txt")
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()


def test_run_video_mp4_streams_and_tracks(video_ckpt: Path, tmp_path: Path) -> None:
    src = _mp4(tmp_path / "clip.mp4", _frames(8))
    model, meta = load_model(video_ckpt)
    predictor = Predictor.from_model(model, meta)
    # thresholds at 0 so the random model's detections are all tracked
    cfg = TrackerConfig(high_thresh=0.0, low_thresh=0.0, new_track_thresh=0.0)
    summary = run_video(predictor, src, tmp_path / "o", config=cfg, log=lambda m: None)
    assert summary.frames == 8 and summary.corrupt == 0 and summary.fps > 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results and {len(r["segmentations"]) for r in results} == {8}
    assert len({r["track_id"] for r in results}) == len(results)


def test_segment_video_job(video_ckpt: Path, tmp_path: Path) -> None:
    model, meta = load_model(video_ckpt)
    app = create_app(Predictor.from_model(model, meta))
    data = _mp4(tmp_path / "v.mp4", _frames(5)).read_bytes()
    with TestClient(app) as client:
        bad = client.post("/segment_video", files={"file": ("v.txt", b"abc", "text/plain")})
        assert bad.status_code == 400
        r = client.post("/segment_video", files={"file": ("v.mp4", data, "video/mp4")})
        assert r.status_code == 200
        job = r.json()["job_id"]
        for _ in range(300):
            state = client.get(f"/segment_video/{job}").json()
            if state["status"] in ("done", "failed"):
                break
            time.sleep(0.1)
        assert state["status"] == "done", state
        assert state["summary"]["frames"] == 5 and isinstance(state["results"], list)
        assert client.get("/segment_video/nope").status_code == 404


def test_evaluate_cli_on_video_data(video_ckpt: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "instaseg.cli", "evaluate", "-d", "video_shapes:5:4:64",
                           "--split", "val", "-c", str(video_ckpt), "--tracker", "temporal,iou",
                           "-o", str(tmp_path / "ev")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(metrics) == {"temporal", "iou"}
    assert {"AP", "HOTA", "IDSW", "IDF1", "MOTSA"} <= set(metrics["temporal"])
    assert "temporal" in proc.stdout and "HOTA" in proc.stdout


def test_train_video_config_runs_both_stages(tmp_path: Path) -> None:
    from instaseg.config import load_config
    from instaseg.predict.video_train import train_video

    cfg = load_config(ROOT / "configs" / "video.yaml", [
        "data.train=video_shapes:2:4:64", "data.val=video_shapes:5:4:64", "train.max_iters=2",
        "train.batch_size=2", "train.warmup_iters=1", "eval.max_images=4", "video.assoc_iters=2",
        "video.assoc_batch=2", "video.eval_videos=1", "model.kwargs={min_size: 64, max_size: 64}",
        "video.tracker={max_age: 4}", "output.progress=false"])
    result = train_video(cfg, output=tmp_path / "run", log=lambda m: None)
    assert result.checkpoint.is_file() and (result.run_dir / "video_metrics.json").is_file()
    assert set(result.metrics) == {"temporal", "iou"}
    model, meta = load_model(result.checkpoint)
    assert meta["tracker"] == {"max_age": 4} and model_task(meta["model_spec"]["name"]) == "video"
