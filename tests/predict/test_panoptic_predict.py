"""Panoptic outputs through the one predictor path: ``Predictor.predict_panoptic`` and ``instaseg
predict`` on a panoptic checkpoint (COCO panoptic PNG + JSON that panopticapi's ``pq_compute`` loads,
semantic maps, overlays)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from panopticapi.evaluation import pq_compute

from instaseg.cli import main
from instaseg.data.build import build_dataset
from instaseg.data.coco_panoptic import read_coco_panoptic, write_coco_panoptic
from instaseg.engine.checkpoint import save_checkpoint
from instaseg.engine.launch import panoptic_meta
from instaseg.errors import ConfigError
from instaseg.evaluation.panoptic import evaluate_panoptic
from instaseg.models import get_model
from instaseg.predict.predictor import Predictor

SPEC = "shapes_panoptic:20:96"


def save_panoptic_checkpoint(path: Path, **kwargs) -> dict:
    """A checkpoint of an untrained panoptic_fpn_r18_slim for shapes_panoptic, as a training run
    writes it. ``instances_score_thresh`` 0 so that its (low-scoring) instances are painted too."""
    ds = build_dataset(SPEC, split="test")
    torch.manual_seed(0)
    spec_kwargs = {"num_classes": 4, "num_stuff_classes": 3, "min_size": 96, "max_size": 96,
                   "instances_score_thresh": 0.0, **kwargs}
    model = get_model("panoptic_fpn_r18_slim", **spec_kwargs)
    meta = {"model_spec": {"name": "panoptic_fpn_r18_slim", "kwargs": spec_kwargs},
            "class_names": ds.class_names, "category_ids": ds.category_ids, **panoptic_meta(ds)}
    save_checkpoint({"model": model.state_dict(), **meta}, path)
    return meta


def _write_images(folder: Path, n: int = 3) -> list:
    ds = build_dataset(SPEC, split="test")
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        rec = ds.load_record(i)
        cv2.imwrite(str(folder / f"{i:012d}.png"), cv2.cvtColor(rec.image, cv2.COLOR_RGB2BGR))
        items.append(({"id": i, "file_name": f"{i:012d}.png"}, rec.extra["panoptic"]))
    return items


def test_predict_panoptic_gives_a_consistent_segmentation(tmp_path: Path) -> None:
    save_panoptic_checkpoint(tmp_path / "pan.pt")
    predictor = Predictor.from_checkpoint(tmp_path / "pan.pt")
    assert predictor.is_panoptic and predictor.fusion.instances_score_thresh == 0.0
    image = build_dataset(SPEC, split="test").load_record(0).image
    result = predictor.predict_panoptic(image)
    assert result.image_size == image.shape[:2] and result.validate() == []
    kinds = {s.isthing for s in result.segments}
    assert kinds == {True, False}  # things (scores >= 0) and stuff
    assert all(s.score is not None for s in result.segments if s.isthing)
    assert {s.category_id for s in result.segments} <= {1, 2, 3, 4, 5, 6}
    # a higher instances threshold paints no thing at all
    assert all(not s.isthing for s in predictor.predict_panoptic(image, score_thresh=1.0).segments)


def test_cli_predict_writes_coco_panoptic_that_pq_compute_loads(tmp_path: Path, capsys) -> None:
    save_panoptic_checkpoint(tmp_path / "pan.pt")
    gt_items = _write_images(tmp_path / "imgs")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "imgs"), "-c", str(tmp_path / "pan.pt"), "-o", str(out)]) == 0
    assert "3 images" in capsys.readouterr().out
    pred = json.loads((out / "panoptic.json").read_text())
    assert [a["image_id"] for a in pred["annotations"]] == [0, 1, 2]
    assert {c["id"]: c["isthing"] for c in pred["categories"]} == {1: 1, 2: 1, 3: 1, 4: 0, 5: 0, 6: 0}
    _, loaded = read_coco_panoptic(out / "panoptic.json")
    for (info, res), (_, gt) in zip(loaded, gt_items, strict=True):
        assert res.validate() == [] and res.image_size == gt.image_size
        sem = cv2.imread(str(out / "semantic" / Path(info["file_name"]).name), cv2.IMREAD_UNCHANGED)
        lut = {0: 0, **{s.id: s.category_id for s in res.segments}}
        assert np.array_equal(sem, np.vectorize(lut.get)(res.id_map))
    assert all((out / f"{i:012d}.jpg").is_file() for i in range(3))
    # panopticapi's pq_compute loads the prediction as it is and agrees with our PQ
    categories = pred["categories"]
    gt_json = write_coco_panoptic(gt_items, categories, tmp_path / "gt.json")
    ref = pq_compute(str(gt_json), str(out / "panoptic.json"), str(tmp_path / "gt"), str(out / "panoptic"))
    ours = evaluate_panoptic([(gt, res) for (_, gt), (_, res) in zip(gt_items, loaded, strict=True)],
                             categories)
    for group in ("All", "Things", "Stuff"):
        assert ours[group]["n"] == ref[group]["n"]
        for key in ("pq", "sq", "rq"):
            assert ours[group][key] == pytest.approx(ref[group][key], abs=1e-9)
    # never overwrite silently
    assert main(["predict", str(tmp_path / "imgs"), "-c", str(tmp_path / "pan.pt"), "-o", str(out)]) == 2
    assert "panoptic.json: already exists" in capsys.readouterr().err


def test_instance_model_has_no_panoptic_output(tmp_path: Path) -> None:
    model = get_model("maskrcnn_r18_slim", num_classes=4).eval()
    predictor = Predictor(model, ["background", "a", "b", "c"])
    assert not predictor.is_panoptic
    with pytest.raises(ConfigError, match="not a panoptic model"):
        predictor.predict_panoptic(np.zeros((64, 64, 3), np.uint8))
