"""The point-cloud task through the CLI verbs: train, evaluate, predict, export (tiny, CPU)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from instaseg.data.points.io import write_scene
from instaseg.data.points.synthetic import generate_scene

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "instaseg.cli", *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("points") / "run"
    res = _run(
        "train",
        "-c",
        str(ROOT / "configs/points.yaml"),
        "-o",
        str(out),
        "--set",
        "train.max_iters=2",
        "--set",
        "data.train=points_shapes:4:1500",
        "--set",
        "data.val=points_shapes:10:1500",
        "--set",
        "model.kwargs.width=8",
        "--set",
        "output.tensorboard=false",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "held-out point AP" in res.stdout
    return out


def test_train_writes_point_metrics(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["segm"]) >= {"AP", "AP50", "AP25"}
    assert (run_dir / "checkpoints" / "last.pt").is_file()


def test_evaluate_and_predict(run_dir, tmp_path):
    res = _run(
        "evaluate",
        "-c",
        str(run_dir),
        "-d",
        "points_shapes:10:1500",
        "--split",
        "val",
        "-o",
        str(tmp_path / "ev"),
        "--num-samples",
        "1",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "mean" in res.stdout and (tmp_path / "ev" / "scene_0.png").is_file()
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["num_scenes"] == 2
    scene = generate_scene(9, 3000)
    write_scene(tmp_path / "in" / "room.ply", scene)
    res = _run("predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-c", str(run_dir))
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads((tmp_path / "out" / "room.json").read_text())
    assert doc["num_points"] == 3000
    for suffix in (".ply", ".png", ".html"):
        assert (tmp_path / "out" / f"room{suffix}").is_file()
    assert "cdn" not in (tmp_path / "out" / "room.html").read_text().lower()


def test_predict_bad_file_is_one_line(run_dir, tmp_path):
    (tmp_path / "bad.ply").write_bytes(
        b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n"
    )
    res = _run("predict", str(tmp_path / "bad.ply"), "-o", str(tmp_path / "o"), "-c", str(run_dir))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "bad.ply" in res.stderr


def test_export_onnx_verified(run_dir, tmp_path):
    res = _run("export", "-c", str(run_dir), "-o", str(tmp_path / "p.onnx"))
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    assert res.stdout.count(": ok:") == 2
    import onnx

    props = {p.key: p.value for p in onnx.load(str(tmp_path / "p.onnx")).metadata_props}
    meta = json.loads(props["instaseg.points"])
    assert props["instaseg.task"] == "points" and meta["voxel"] == 0.05 and meta["levels"] == 5


def test_large_scene_labels_reach_every_point(run_dir):
    from instaseg.predict.points import PointPredictor

    pred = PointPredictor.load(run_dir, downsample=0.05)
    scene = generate_scene(4, 60_000)
    inst, info = pred.predict(scene)
    assert inst.num_points == len(scene) and info["model_points"] < len(scene) // 2
    assert np.isfinite(inst.scores).all()
