"""``instaseg active select``: scores, diversity, and bad input (non-images, budget > pool)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from instaseg.cli import main
from instaseg.data.build import build_dataset
from instaseg.data.io import read_image
from instaseg.models import get_model
from instaseg.predict.active import (
    ImageScore,
    embed,
    flip_disagreement,
    score_image,
    select,
    typicality,
    uncertainty,
)
from instaseg.predict.predictor import Predictor, image_to_tensor
from tests.engine.helpers import tiny_overrides


def test_flip_disagreement_and_uncertainty() -> None:
    a = np.zeros((1, 8, 8), bool)
    a[0, 2:6, 2:6] = True
    assert flip_disagreement(a, a) == 0.0 and flip_disagreement(a[:0], a[:0]) == 0.0
    assert flip_disagreement(a, a[:0]) == 1.0
    b = np.zeros_like(a)
    b[0, 2:6, 4:8] = True
    assert abs(flip_disagreement(a, b) - (1 - 8 / 24)) < 1e-6
    assert uncertainty(np.array([0.99]), [np.full(4, 0.99)]) < 0.05
    assert uncertainty(np.array([0.5]), [np.full(4, 0.5)]) == 1.0


def test_select_prefers_diverse_batches() -> None:
    scores = [ImageScore(f"{i}.png", 0.5, 0.5, v, 1) for i, v in enumerate([0.9, 0.89, 0.5])]
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # images 0 and 1 are copies
    picks = select(scores, emb, 2, diversity_weight=0.5, typicality_weight=0.0)
    assert [p.file for p in picks] == ["0.png", "2.png"] and [p.rank for p in picks] == [1, 2]
    assert [p.file for p in select(scores, emb, 2, diversity_weight=0.0, typicality_weight=0.0)] == [
        "0.png", "1.png"]


def test_score_image_takes_the_embedding_from_the_prediction(tmp_path: Path) -> None:
    model = get_model("maskrcnn_r18_slim", num_classes=2, min_size=64, max_size=64).eval()
    predictor = Predictor(model, ["background", "a"], score_thresh=0.05)
    path = tmp_path / "img.png"
    Image.fromarray(build_dataset("shapes:1:64", split="train").load_record(0).image).save(path)
    calls = []
    counter = model.backbone.register_forward_hook(lambda *_: calls.append(1))
    _, emb = score_image(predictor, path)
    counter.remove()
    assert len(calls) == 2  # the image and its mirror: no third pass for the embedding
    ref = embed(model, image_to_tensor(read_image(path)))
    assert emb.shape == ref.shape and np.allclose(emb, ref, atol=1e-5)


def _unit(rows: list[list[float]]) -> np.ndarray:
    a = np.array(rows, dtype=float)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_typicality_ranks_a_cluster_above_its_outlier() -> None:
    emb = _unit([[1, 0.0], [1, 0.05], [1, -0.05], [1, 0.1], [0, 1]])  # four alike, one apart
    typ = typicality(emb, k=2)
    assert typ.shape == (5,) and typ.min() == 0.0 and typ.max() == 1.0
    assert int(np.argmin(typ)) == 4 and (typ[:4] > 0.9).all()
    assert (typicality(emb[:2]) == 1).all() and (typicality(_unit([[1, 0]] * 4)) == 1).all()


def test_select_skips_outliers_and_what_is_labelled() -> None:
    emb = _unit([[1, 0.0], [1, 0.05], [1, -0.05], [0, 1], [0.1, 1]])
    scores = [ImageScore(f"{i}.png", 0.5, 0.5, 0.5, 1) for i in range(5)]
    # equally informative: typicality alone picks from the larger group first
    assert select(scores, emb, 1, diversity_weight=0.0, typicality_weight=0.5)[0].file in {"0.png", "1.png",
                                                                                            "2.png"}
    # the same group is labelled already: the diversity bonus moves the pick to the other group
    labelled = _unit([[1, 0.01]])
    pick = select(scores, emb, 1, diversity_weight=1.0, typicality_weight=0.5, labelled=labelled)[0]
    assert pick.file in {"3.png", "4.png"} and pick.diversity > 1.0


def test_richness_prefers_images_with_more_objects() -> None:
    emb = _unit([[1, 0.0], [1, 0.01], [1, -0.01]])
    scores = [ImageScore(f"{i}.png", 0.5, 0.5, 0.5, n, expected_objects=float(n))
              for i, n in enumerate([1, 4, 2])]
    rich = select(scores, emb, 1, diversity_weight=0.0, typicality_weight=0.0, richness_weight=0.5)
    assert rich[0].file == "1.png"
    plain = select(scores, emb, 3, diversity_weight=0.0, typicality_weight=0.0, richness_weight=0.0)
    assert [p.file for p in plain] == ["0.png", "1.png", "2.png"]  # ties: the pool's order
    by_default = select(scores, emb, 3, diversity_weight=0.0, typicality_weight=0.0)
    assert [p.file for p in by_default] == ["1.png", "2.png", "0.png"]  # richness is on by default


def test_cli_select_skips_non_images_and_clamps_budget(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", "--output", str(run)]
    for o in tiny_overrides("train.epochs=1"):
        args += ["--set", o]
    assert main(args) == 0
    pool = tmp_path / "pool"
    pool.mkdir()
    ds = build_dataset("shapes:3:32", split="train")
    for i in range(3):
        Image.fromarray(ds.load_record(i).image).save(pool / f"img{i}.png")
    (pool / "notes.txt").write_text("not an image")
    capsys.readouterr()
    out = tmp_path / "sel.json"
    assert main(["active", "select", "--checkpoint", str(run), "--pool", str(pool), "--budget", "5",
                 "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 non-image" in err and "choosing all" in err
    data = json.loads(out.read_text())
    assert len(data["selected"]) == 3 and data["skipped_non_images"] == ["notes.txt"]
    assert sorted(s["rank"] for s in data["selected"]) == [1, 2, 3]
    assert all(0 <= s["informativeness"] <= 1 for s in data["selected"])
    before = out.read_bytes()
    assert main(["active", "select", "--checkpoint", str(run), "--pool", str(pool), "--budget", "1",
                 "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["active", "select", "--checkpoint", str(run), "--pool", str(pool), "--budget", "0",
                 "--output", str(tmp_path / "x.json")]) == 2
    done = tmp_path / "done"
    done.mkdir()
    (pool / "img0.png").rename(done / "img0.png")
    assert main(["active", "select", "--checkpoint", str(run), "--pool", str(pool), "--budget", "1",
                 "--labelled", str(done), "--output", str(tmp_path / "y.json")]) == 0
    picked = json.loads((tmp_path / "y.json").read_text())["selected"][0]
    assert picked["diversity"] > 0 and picked["expected_objects"] >= 0
    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()
    assert main(["active", "select", "--checkpoint", str(run), "--pool", str(pool), "--budget", "1",
                 "--labelled", str(empty), "--output", str(tmp_path / "z.json")]) == 2
    assert "no images in the labelled folder" in capsys.readouterr().err
    assert main(["active", "select", "--checkpoint", str(run), "--pool", str(pool), "--budget", "1",
                 "--labelled", str(out), "--output", str(tmp_path / "z.json")]) == 2
    assert "--labelled must be a folder of images" in capsys.readouterr().err


def test_prelabel_formats_round_trip_through_convert(tmp_path: Path, capsys) -> None:
    from instaseg.predict.prelabel import Prelabel, write_prelabels

    ds = build_dataset("shapes:2:48", split="train")
    rec = ds.load_record(0)
    Image.fromarray(rec.image).save(tmp_path / "a.png")
    names = [ds.class_names[int(k)] for k in rec.labels]
    split = np.zeros((1, 48, 48), bool)  # one instance in two pieces (an occluded object)
    split[0, 2:8, 2:8] = split[0, 40:46, 40:46] = True
    masks = np.concatenate([rec.masks.astype(bool), split])
    names.append(names[0])
    item = Prelabel(tmp_path / "a.png", 48, 48, masks, names, [0.9] * len(names))
    out = tmp_path / "pre"
    for fmt in ("labelme", "coco", "labelstudio", "cvat"):
        assert write_prelabels([item], out, fmt, ds.class_names)
    lm = json.loads((out / "a.json").read_text())
    assert len(lm["shapes"]) > len(names) and lm["imagePath"] == "../a.png"
    pieces = [sh["group_id"] for sh in lm["shapes"][-2:]]
    assert pieces[0] is not None and pieces == [pieces[0]] * 2  # one instance: one group
    tasks = json.loads((out / "labelstudio_tasks.json").read_text())
    pts = np.array(tasks[0]["predictions"][0]["result"][0]["value"]["points"])
    assert 0 <= pts.min() and pts.max() <= 100
    cvat = json.loads((out / "annotations" / "instances_default.json").read_text())
    assert cvat["images"][0]["file_name"] == "../../a.png"
    # nothing replaced without --overwrite
    before = (out / "a.json").read_bytes()
    try:
        write_prelabels([item], out, "labelme", ds.class_names)
        raise AssertionError("expected a refusal")
    except Exception as exc:  # DataError
        assert "already exists" in str(exc)
    assert (out / "a.json").read_bytes() == before
    # an annotator's corrected files come back through instaseg data convert
    assert main(["data", "convert", str(out / "a.json"), str(tmp_path / "back.json")]) == 0
    back = json.loads((tmp_path / "back.json").read_text())
    assert len(back["annotations"]) == len(names)  # the two pieces are one instance again
    assert main(["data", "check", f"coco:{out / 'prelabels_coco.json'}"]) == 0
    # a corrected file that no longer matches its image: one-line error
    lm["imageWidth"] = 99
    (out / "a.json").write_text(json.dumps(lm))
    capsys.readouterr()
    assert main(["data", "convert", str(out / "a.json"), str(tmp_path / "bad.json")]) == 2
    assert "99x48" in capsys.readouterr().err


def test_cli_prelabel_from_selection(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", "--output", str(run)]
    for o in tiny_overrides("train.epochs=1"):
        args += ["--set", o]
    assert main(args) == 0
    pool = tmp_path / "pool"
    pool.mkdir()
    Image.fromarray(build_dataset("shapes:2:32", split="train").load_record(0).image).save(pool / "a.png")
    sel = tmp_path / "sel.json"
    assert main(["active", "select", "--checkpoint", str(run), "--pool", str(pool), "--budget", "1",
                 "--output", str(sel)]) == 0
    assert main(["active", "prelabel", "--checkpoint", str(run), "--images", str(sel), "--output",
                 str(tmp_path / "pre"), "--format", "labelstudio", "--score-thresh", "0.0"]) == 0
    assert (tmp_path / "pre" / "labelstudio_tasks.json").is_file()
    assert main(["active", "prelabel", "--checkpoint", str(run), "--images", str(sel), "--output",
                 str(tmp_path / "pre"), "--format", "yolo"]) == 2
