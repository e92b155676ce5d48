"""One inference path: a run's validation AP equals ``instaseg evaluate --checkpoint RUN`` on the same
val data, and ``instaseg.load(RUN).predict(image)`` gives the instances both of them scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import instaseg
from instaseg.cli import main
from instaseg.data.build import build_dataset
from instaseg.predict.dataset import instances_to_results
from instaseg.predict.evaluate import checkpoint_predictor
from instaseg.predict.predictor import Predictor
from tests.engine.helpers import TINY

VAL = "shapes:30:64"  # data.val of the run below, split "val" (6 images)
SCORE = 0.1
# The tiny engine config with the real CPU default model at 64 px: its low-res masks go through the
# same paste as in deployment, and even 12 iterations give it detections to compare. Validation
# without flips and refinement (the embedded default turns both on): predict() runs without them
# unless asked.
RUN = [*TINY, "model.name=maskrcnn_r18_slim", "model.kwargs={min_size: 64, max_size: 64}",
       "data.train=shapes:24:64", f"data.val={VAL}", "data.image_size=64", "train.lr=0.02",
       f"eval.score_thresh={SCORE}", "eval.num_overlays=1", "eval.tta=false", "eval.refine_masks=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    args = ["train", "--output", str(run_dir)]
    for o in RUN:
        args += ["--set", o]
    assert main(args) == 0
    return run_dir


def _evaluate(run: Path, out: Path, *extra: str) -> dict:
    argv = ["evaluate", "--checkpoint", str(run), "--data", VAL, "--split", "val", "--output", str(out),
            "--no-figures", "--no-analysis", *extra]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def test_evaluate_checkpoint_reproduces_training_metrics_exactly(run: Path, tmp_path: Path) -> None:
    trained = json.loads((run / "metrics.json").read_text())
    evaluated = _evaluate(run, tmp_path / "eval")
    for kind in ("segm", "bbox"):
        assert evaluated[kind] == trained[kind], kind  # exact, stat by stat
    assert trained["bbox"]["AR100"] > 0  # there are detections to compare
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results and min(r["score"] for r in results) >= SCORE  # the run's eval.score_thresh by default
    assert all("segmentation" in r for r in results)
    # A lower threshold keeps more detections, so the default above really was the run's threshold.
    _evaluate(run, tmp_path / "eval0", "--score-thresh", "0.0")
    lower = json.loads((tmp_path / "eval0" / "results.json").read_text())
    assert len(lower) > len(results)


def test_load_predict_gives_the_evaluated_instances(run: Path, tmp_path: Path) -> None:
    _evaluate(run, tmp_path / "eval", "--batch-size", "1")  # one image per forward, as predict() runs
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    dataset = build_dataset(VAL, split="val")
    predictor = instaseg.load(run, score_thresh=SCORE)
    checked = 0
    for i in range(len(dataset)):
        image, target = dataset[i]
        rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        inst = predictor.predict(rgb)
        assert inst.image_size == tuple(image.shape[-2:]) and torch.all(inst.scores >= SCORE)
        image_id = int(target["image_id"])
        mine = instances_to_results(inst, image_id, dataset.category_ids, predictor.mask_thresh)
        theirs = [r for r in results if r["image_id"] == image_id]
        assert [r["segmentation"] for r in mine] == [r["segmentation"] for r in theirs]
        assert [r["category_id"] for r in mine] == [r["category_id"] for r in theirs]
        np.testing.assert_allclose([r["score"] for r in mine], [r["score"] for r in theirs], rtol=1e-6)
        checked += len(mine)
    assert checked == len(results) > 0


def test_import_instaseg_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, instaseg; print('torch' in sys.modules, callable(instaseg.load))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert out == ["False", "True"]


def test_evaluate_with_flips_scores_the_predictor_with_flips(run: Path, tmp_path: Path) -> None:
    _evaluate(run, tmp_path / "tta", "--tta", "--batch-size", "1")
    _evaluate(run, tmp_path / "plain", "--batch-size", "1")
    results = json.loads((tmp_path / "tta" / "results.json").read_text())
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    assert [r["score"] for r in results] != [r["score"] for r in plain]  # the mirror views changed them
    mine = _predict_val(instaseg.load(run, score_thresh=SCORE, tta=True))
    assert [r["segmentation"] for r in mine] == [r["segmentation"] for r in results] and mine


def _predict_val(predictor: Predictor) -> list[dict]:
    """COCO results of ``predictor.predict`` on the val images, given as uint8 RGB arrays."""
    dataset = build_dataset(VAL, split="val")
    out = []
    for i in range(len(dataset)):
        image, target = dataset[i]
        rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        out += instances_to_results(predictor.predict(rgb), int(target["image_id"]), dataset.category_ids,
                                    predictor.mask_thresh)
    return out


def test_evaluate_with_refined_masks_scores_the_refining_predictor(run: Path, tmp_path: Path) -> None:
    refined = _evaluate(run, tmp_path / "refine", "--refine", "--batch-size", "1")
    results = json.loads((tmp_path / "refine" / "results.json").read_text())
    _evaluate(run, tmp_path / "plain", "--batch-size", "1")
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    assert results and min(r["score"] for r in results) >= SCORE  # rescored, then filtered again
    assert sorted(r["score"] for r in results) != sorted(r["score"] for r in plain)  # rescored by maskness
    assert 0.0 <= refined["segm"]["AP"] <= 1.0
    # The run did not ask for refinement: the default predictor pastes plainly; --refine is the same
    # path as instaseg.load(..., refine=True).
    assert checkpoint_predictor(run).refine is None
    mine = _predict_val(instaseg.load(run, score_thresh=SCORE, refine=True))
    assert [r["segmentation"] for r in mine] == [r["segmentation"] for r in results] and mine
