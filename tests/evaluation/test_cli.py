"""``instaseg evaluate`` and ``instaseg visualize`` through ``instaseg.cli.main``: exit codes, one-line
errors and the files of the report folder."""

from __future__ import annotations

import json

import pytest

from instaseg.cli import main
from instaseg.evaluation.coco import STAT_NAMES

SPEC = "shapes:4:64"


@pytest.fixture(scope="module")
def shapes_gt():
    from instaseg.data.build import build_dataset
    from instaseg.data.coco import dataset_to_coco

    return dataset_to_coco(build_dataset(SPEC))


def _results_from_gt(gt, score=0.9):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "segmentation": a["segmentation"], "score": score} for a in gt["annotations"]]


def test_evaluate_predictions_writes_report(tmp_path, shapes_gt, capsys):
    res = tmp_path / "results.json"
    res.write_text(json.dumps(_results_from_gt(shapes_gt)))
    out = tmp_path / "report"
    code = main(["evaluate", "--predictions", str(res), "--data", SPEC, "--output", str(out),
                 "--num-samples", "1"])
    assert code == 0
    table = capsys.readouterr().out
    assert "segm" in table and "AP50" in table
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["segm", "bbox", "per_class", "pq"]
    assert list(metrics["segm"]) == list(STAT_NAMES)
    assert metrics["segm"]["AP"] == pytest.approx(1.0)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["pq"]["PQ"] == pytest.approx(1.0)
    assert set(metrics["per_class"]) <= {"circle", "square", "triangle"}
    for name in ("dashboard", "map_breakdown", "per_class_ap", "pr_curves", "confusion_matrix",
                 "error_analysis", "iou_distribution", "quality_vs_size", "sample_00", "sample_grid"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000, name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 10 and 'src="figures' not in html
    analysis = json.loads((out / "analysis.json").read_text())
    assert all(v == 0 for v in analysis["errors"]["dAP"].values())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{\"image_id\": 1,", "malformed JSON"),
        ("{\"a\": 1}", "expected a JSON list of COCO results"),
        ("[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, 0, 2, 2]}]", "entry 0 has no 'score'"),
        ("[{\"image_id\": 987654, \"category_id\": 1, \"score\": 1, \"bbox\": [0, 0, 2, 2]}]",
         "1 results have image ids not in the dataset (e.g. '987654'"),
        ("[{\"image_id\": 0, \"category_id\": 77, \"score\": 1, \"bbox\": [0, 0, 2, 2]}]",
         "1 results have category ids not in the dataset (e.g. '77'"),
        ("[{\"image_id\": 0, \"category_id\": 1, \"score\": 1, "
         "\"segmentation\": {\"size\": [10, 10], \"counts\": \"abc\"}}]",
         "entry 0: segmentation size [10, 10] differs from image 0 (64x64)"),
    ],
)
def test_evaluate_rejects_bad_results(tmp_path, capsys, content, message):
    res = tmp_path / "bad.json"
    res.write_text(content)
    code = main(["evaluate", "--predictions", str(res), "--data", SPEC])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("instaseg: error: ") and str(res) in err and message in err
    assert "\n" not in err


def test_evaluate_needs_exactly_one_source(tmp_path, capsys):
    assert main(["evaluate", "--data", SPEC]) == 2
    assert "exactly one of --checkpoint" in capsys.readouterr().err


def test_evaluate_checkpoint(tmp_path, capsys):
    import torch

    from instaseg.engine.checkpoint import save_checkpoint
    from instaseg.models import get_model

    torch.manual_seed(0)
    kwargs = {"num_classes": 4, "min_size": 64, "max_size": 64}
    model = get_model("maskrcnn_r18_slim", **kwargs)
    run = tmp_path / "run"
    state = {
        "model": model.state_dict(),
        "model_spec": {"name": "maskrcnn_r18_slim", "kwargs": kwargs},
        "class_names": ["background", "circle", "square", "triangle"],
        "category_ids": [0, 1, 2, 3],
        "config": {},
    }
    save_checkpoint(state, run / "checkpoints" / "last.pt")
    (run / "history.jsonl").write_text(json.dumps({"epoch": 1, "iteration": 10, "segm": {"AP": 0.1},
                                                   "bbox": {"AP": 0.2}}) + "\n")
    out = tmp_path / "out"
    code = main(["evaluate", "--checkpoint", str(run), "--data", SPEC, "--output", str(out),
                 "--max-images", "2", "--num-samples", "1", "--score-thresh", "0.0"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["segm"]) == list(STAT_NAMES)
    results = json.loads((out / "results.json").read_text())
    assert {r["image_id"] for r in results} <= {0, 1}
    assert (out / "figures" / "training_curves.png").is_file()


def test_evaluate_missing_checkpoint(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--data", SPEC]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_visualize_dataset_and_results(tmp_path, shapes_gt, capsys):
    out = tmp_path / "viz"
    assert main(["visualize", SPEC, "--output", str(out), "--num", "2"]) == 0
    assert (out / "sample_00.png").is_file() and (out / "sample_grid.png").is_file()
    res = tmp_path / "results.json"
    res.write_text(json.dumps(_results_from_gt(shapes_gt)))
    out2 = tmp_path / "viz2"
    assert main(["visualize", str(res), "--data", SPEC, "--output", str(out2), "--num", "1"]) == 0
    assert (out2 / "sample_00.png").is_file()
    assert main(["visualize", str(res), "--output", str(out2)]) == 2
    assert "needs --data" in capsys.readouterr().err


def test_evaluate_empty_results_file(tmp_path, capsys):
    res = tmp_path / "empty.json"
    res.write_text("[]")
    out = tmp_path / "o"
    assert main(["evaluate", "--predictions", str(res), "--data", SPEC, "--output", str(out),
                 "--no-figures"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["segm"]["AP"] == 0.0 and metrics["bbox"]["AR100"] == 0.0
    assert metrics["pq"]["PQ"] == 0.0 and metrics["pq"]["n"] == 3  # every class has only misses


def test_results_with_file_stem_image_ids_and_polygons(shapes_gt):
    from instaseg.evaluation.results import validate_results

    gt = {**shapes_gt, "images": [{**im, "file_name": f"img_{im['id']}.png"} for im in shapes_gt["images"]]}
    entries = [
        {"image_id": "img_1", "category_id": 1, "score": 0.5, "segmentation": [[2, 2, 20, 2, 20, 20, 2, 20]]},
        {"image_id": 2.0, "category_id": "2", "score": 1, "bbox": [1, 2, 3, 4]},
    ]
    out = validate_results(entries, gt)
    assert [e["image_id"] for e in out] == [1, 2] and [e["category_id"] for e in out] == [1, 2]
    assert isinstance(out[0]["segmentation"]["counts"], str) and out[0]["segmentation"]["size"] == [64, 64]
    assert "bbox" not in out[0]  # left missing: COCO then measures the detection's area on its mask
    assert entries[0]["image_id"] == "img_1"  # copy=True leaves the input alone


def test_max_images_drops_results_of_other_images(tmp_path, shapes_gt, capsys):
    res = tmp_path / "results.json"
    res.write_text(json.dumps(_results_from_gt(shapes_gt)))
    out = tmp_path / "o"
    assert main(["evaluate", "--predictions", str(res), "--data", SPEC, "--max-images", "2",
                 "--output", str(out), "--no-figures", "--no-analysis"]) == 0
    assert "on 2 images" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["segm"]["AP"] == pytest.approx(1.0)
