"""`instaseg train` with a panoptic model: PQ validation (All/Things/Stuff) in the run's metrics,
history and TensorBoard/MLflow scalars, best.pt on PQ, panoptic metadata in the checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instaseg.cli import main
from instaseg.models.checkpoint import load_checkpoint, load_model

PANOPTIC = [
    "model.name=panoptic_fpn_r18_slim",
    "model.kwargs={min_size: 64, max_size: 64}",
    "data.train=shapes_panoptic:8:64",
    "data.val=shapes_panoptic:20:64",
    "data.augment={}",
    "train.batch_size=4",
    "train.epochs=2",
    "train.warmup_iters=1",
    "train.num_threads=1",
    "eval.period=1",
    "eval.batch_size=4",
    "eval.num_overlays=1",
    "output.tensorboard=false",
    "output.progress=false",
]


def _cli(run: Path, *extra: str) -> list[str]:
    args = ["train", "--output", str(run)]
    for o in [*PANOPTIC, *extra]:
        args += ["--set", o]
    return args


def test_train_panoptic_validates_with_pq(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(_cli(run, "output.mlflow=true")) == 0
    out = capsys.readouterr().out
    assert "held-out PQ" in out and "things" in out and "stuff" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"panoptic"}
    for group in ("All", "Things", "Stuff"):
        assert {"pq", "sq", "rq", "n"} <= set(metrics["panoptic"][group])
        assert 0.0 <= metrics["panoptic"][group]["pq"] <= 1.0
    assert set(metrics["panoptic"]["per_class"]) == {"1", "2", "3", "4", "5", "6"}
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2] and all("panoptic" in h for h in history)
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["best_metric"] == max(h["panoptic"]["All"]["pq"] for h in history)
    assert best["panoptic"]["stuff_category_ids"] == [4, 5, 6]
    assert best["model_spec"]["kwargs"]["num_stuff_classes"] == 3
    assert (run / "overlays" / "val_0.png").is_file()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ml_run = client.get_run((run / "mlflow_run_id.txt").read_text().strip())
    assert "val_panoptic_All_pq" in ml_run.data.metrics and "val_panoptic_Stuff_pq" in ml_run.data.metrics
    model, meta = load_model(run)
    assert hasattr(model, "forward_panoptic") and meta["panoptic"]["categories"][3]["name"] == "sky"


def test_panoptic_model_needs_panoptic_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(tmp_path / "run", "data.train=shapes:8:64", "data.val=shapes:20:64",
                     "output.mlflow=false")) == 2
    err = capsys.readouterr().err
    assert "is panoptic but data.train 'shapes:8:64' has no stuff classes" in err
    assert len(err.strip().splitlines()) == 1
