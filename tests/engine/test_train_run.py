"""End-to-end `instaseg train` runs with a tiny model: run directory, errors, NaN stop, bad samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from instaseg.cli import main
from instaseg.config import load_config
from instaseg.engine.rundir import numbered_dir
from instaseg.models.checkpoint import load_checkpoint, load_model
from instaseg.predict.validation import train as run_training
from tests.engine.helpers import tiny_overrides


def _cli(run_dir: Path, *extra: str) -> list[str]:
    args = ["train", "--output", str(run_dir)]
    for o in tiny_overrides(*extra):
        args += ["--set", o]
    return args


def test_cli_train_writes_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(_cli(run, "eval.period=1", "output.tensorboard=true", "output.mlflow=true")) == 0
    out = capsys.readouterr().out
    assert "held-out mask AP" in out and "box AP" in out and str(run) in out
    assert "time: set-up" in out and "(12 iterations," in out
    metrics = json.loads((run / "metrics.json").read_text())
    for kind in ("segm", "bbox"):
        assert len(metrics[kind]) == 12 and all(0.0 <= v <= 1.0 or v == -1.0 for v in metrics[kind].values())
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    written = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert written["epochs"] == 2 and written["max_time_min"] == 9.5  # no --config: the default's budget
    assert sorted(p.name for p in (run / "overlays").iterdir()) == ["val_0.png", "val_1.png"]
    assert any((run / "tensorboard").iterdir())
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    # eval.period=1 and the default's test-time flips: plain validations after each epoch (the
    # learning curve and best.pt), then the flipped final score, which is what metrics.json holds.
    assert [(h["epoch"], h.get("final", False)) for h in history] == [(1, False), (2, False), (2, True)]
    assert metrics["segm"] == history[-1]["segm"]
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["best_metric"] == max(h["segm"]["AP"] for h in history[:2])
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["iteration"] == 12 and last["epoch"] == 2  # 24 images / batch 4 = 6 per epoch
    assert {"optimizer", "scheduler", "rng", "model_spec", "class_names", "category_ids", "config"} <= set(
        last
    )
    # MLflow: default local SQLite store beside the run directory, with params, metrics and the model.
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ml_run = client.get_run((run / "mlflow_run_id.txt").read_text().strip())
    assert ml_run.data.params["train.epochs"] == "2" and ml_run.info.status == "FINISHED"
    assert "val_segm_AP" in ml_run.data.metrics and "train_loss" in ml_run.data.metrics
    assert {a.path for a in client.list_artifacts(ml_run.info.run_id, "checkpoints")} == {
        "checkpoints/best.pt",
        "checkpoints/last.pt",
    }
    assert client.search_logged_models([ml_run.info.experiment_id])[0].name == "model"  # the pyfunc
    model, meta = load_model(run)  # best.pt rebuilds through the registry
    assert meta["class_names"] == ["background", "circle", "square", "triangle"]
    assert not model.training


def test_refuses_non_empty_output_and_numbers_default_dirs(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert main(_cli(run)) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (run / "notes.txt").read_text() == "mine"
    base = tmp_path / "runs" / "train"
    assert numbered_dir(base) == base
    base.mkdir(parents=True)
    (base / "x").write_text("")
    assert numbered_dir(base) == base.with_name("train2")


def test_bad_config_is_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["train", "--output", str(tmp_path / "r"), "--set", "train.lrr=1"]) == 2
    assert "instaseg: error:" in capsys.readouterr().err


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    code = main(_cli(run, "model.kwargs={nan_after: 5}", "train.checkpoint_period=2"))
    err = capsys.readouterr().err
    assert code == 3 and "non-finite" in err and "iteration 6" in err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (run / "metrics.json").exists()


def _write_coco(root: Path, n: int = 10, corrupt: int = 1) -> Path:
    import cv2

    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(n):
        img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
        img[8:20, 6:18] = 255
        cv2.imwrite(str(root / "images" / f"im{i}.png"), img)
        images.append({"id": i + 1, "file_name": f"im{i}.png", "height": 32, "width": 32})
        anns.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 7,
                "iscrowd": 0,
                "area": 144.0,
                "bbox": [6, 8, 12, 12],
                "segmentation": [[6, 8, 18, 8, 18, 20, 6, 20]],
            }
        )
    (root / "images" / f"im{corrupt}.png").write_bytes(b"this is not a png")
    ann = root / "ann.json"
    ann.write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 7, "name": "box"}]})
    )
    return ann


def test_bad_sample_is_skipped_named_and_counted(tmp_path: Path) -> None:
    ann = _write_coco(tmp_path / "data")  # image 1 is corrupt and lands in the train split
    cfg = load_config(
        None,
        tiny_overrides(
            f"data.train=coco:{ann}", f"data.val=coco:{ann}", "train.epochs=1", "eval.num_overlays=0"
        ),
    )
    result = run_training(cfg, output=tmp_path / "run")
    assert result.skipped == 1 and result.metrics is not None
    assert result.iterations == 2  # 8 train images / batch 4, the bad one skipped inside its batch
    assert result.timing["iterations"] == 2 and result.timing["train"] > 0 and result.timing["final"] > 0
    cfg.data.on_error = "raise"
    with pytest.raises(Exception, match="im1.png"):
        run_training(cfg, output=tmp_path / "run2")
