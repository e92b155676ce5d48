"""``instaseg evaluate --checkpoint`` on a panoptic run: PQ through the one predictor path equals the PQ
the training validator wrote to the run's metrics.json, the PQ table is printed, the report shows PQ
per class and GT-beside-prediction overlays, and the things keep their mask/box AP."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from instaseg.cli import main

VAL = "shapes_panoptic:10:64"  # data.val of the run below, split "val" (2 images)
# Two iterations; instances_score_thresh 0 so that the barely trained model paints things too and the
# comparison covers thing and stuff segments (TP, FP and FN), whatever PQ comes out.
RUN = ["data.train=shapes_panoptic:8:64", f"data.val={VAL}", "train.epochs=1", "train.warmup_iters=1",
       "model.kwargs.instances_score_thresh=0.0", "eval.num_overlays=1", "output.progress=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("pan") / "run"
    args = ["train", "-c", "configs/panoptic_fpn.yaml", "--output", str(run_dir)]
    for o in RUN:
        args += ["--set", o]
    assert main(args) == 0
    return run_dir


def test_evaluate_checkpoint_pq_equals_the_training_validator(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    trained = json.loads((run / "metrics.json").read_text())["panoptic"]
    capsys.readouterr()
    out = tmp_path / "ev"
    argv = ["evaluate", "--checkpoint", str(run), "--data", VAL, "--split", "val", "-o", str(out),
            "--num-samples", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    pan = metrics["panoptic"]
    for group in ("All", "Things", "Stuff"):
        assert pan[group] == trained[group], group  # exact
    assert set(pan["per_class"]) == set(trained["per_class"])
    for c, row in trained["per_class"].items():
        assert {k: pan["per_class"][c][k] for k in row} == row, c
    counts = [v["tp"] + v["fp"] + v["fn"] for v in pan["per_class"].values()]
    assert sum(counts) > 0 and {v["isthing"] for v in pan["per_class"].values()} == {0, 1}
    # the PQ table as `evaluate --panoptic-gt/--panoptic-pred` prints it, with every class that occurs
    assert "Things    |" in printed and "Stuff     |" in printed
    for row in pan["per_class"].values():
        if row["tp"] + row["fp"] + row["fn"]:
            assert f"\n{row['name']}" in printed
    assert not re.search(r"PQ \d\.\d{3}  SQ", printed)  # the things-only PQ line is gone
    assert metrics["pq"] == {} and "AP" in metrics["segm"] and "AP" in metrics["bbox"]  # things' AP kept
    page = (out / "report.html").read_text()
    assert "Panoptic quality" in page and 'alt="pq_per_class"' in page
    assert 'alt="panoptic_0_gt_vs_pred"' in page and 'alt="panoptic_1_gt_vs_pred"' in page
    assert (out / "figures" / "panoptic_01.png").is_file()


def test_panoptic_model_on_instance_data_says_so(run: Path, tmp_path: Path, capsys) -> None:
    argv = ["evaluate", "--checkpoint", str(run), "--data", "shapes:5:64", "-o", str(tmp_path / "ev"),
            "--no-figures"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "a panoptic model, but the dataset has no panoptic ground truth" in err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "panoptic" not in metrics and metrics["segm"]["AP"] >= 0
