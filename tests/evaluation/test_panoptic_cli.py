"""``instaseg evaluate --panoptic-gt --panoptic-pred`` on the real COCO panoptic sample: the PQ table,
metrics.json (equal to pq_compute), the report folder, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from instaseg.cli import main
from instaseg.data.coco_panoptic import read_coco_panoptic, write_coco_panoptic
from instaseg.structures.panoptic import PanopticResult, PanopticSegment

DATA = os.environ.get("INSTASEG_DATA")
pytestmark = pytest.mark.skipif(not DATA, reason="INSTASEG_DATA (the shared real data) is not set")


def _sample() -> Path:
    return Path(DATA) / "coco_panoptic_sample"


def _pred(tmp_path: Path) -> Path:
    """The GT with every third segment dropped, written as a prediction."""
    cats, items = read_coco_panoptic(_sample() / "panoptic_examples.json", _sample() / "panoptic_examples")
    pred = []
    for info, res in items:
        ids = res.id_map.copy()
        for s in res.segments[1::3]:
            ids[ids == s.id] = 0
        keep = [PanopticSegment(s.id, s.category_id, s.isthing, s.iscrowd) for s in res.segments
                if s not in res.segments[1::3]]
        pred.append((info, PanopticResult(ids, keep)))
    return write_coco_panoptic(pred, cats, tmp_path / "pred.json")


def test_panoptic_evaluate_prints_tables_and_writes_report(tmp_path: Path, capsys) -> None:
    from panopticapi.evaluation import pq_compute

    pred = _pred(tmp_path)
    gt = f"{_sample()}/panoptic_examples.json:{_sample()}/panoptic_examples:{_sample()}/input_images"
    out = tmp_path / "report"
    code = main(["evaluate", "--panoptic-gt", gt, "--panoptic-pred", f"{pred}:{tmp_path / 'pred'}",
                 "--output", str(out), "--num-samples", "2"])
    assert code == 0
    table = capsys.readouterr().out
    assert all(w in table for w in ("All", "Things", "Stuff", "person", "thing", "stuff"))
    ref = pq_compute(str(_sample() / "panoptic_examples.json"), str(pred),
                     str(_sample() / "panoptic_examples"), str(tmp_path / "pred"))
    metrics = json.loads((out / "metrics.json").read_text())["panoptic"]
    for g in ("All", "Things", "Stuff"):
        assert abs(metrics[g]["pq"] - ref[g]["pq"]) <= 1e-9 and metrics[g]["n"] == ref[g]["n"]
    assert metrics["per_class"]["1"]["name"] == "person" and metrics["per_class"]["1"]["isthing"] == 1
    assert f"{100 * ref['All']['pq']:5.1f}" in table
    for name in ("pq_summary", "pq_per_class", "panoptic_dashboard", "sample_00", "sample_01"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000, name
    html = (out / "report.html").read_text()
    assert "Panoptic quality" in html and html.count("data:image/png;base64,") == 5 and "person" in html


@pytest.mark.parametrize("case", ["missing_png", "no_prediction", "one_option", "bad_arg"])
def test_panoptic_evaluate_bad_input_is_one_line(tmp_path: Path, capsys, case: str) -> None:
    pred = _pred(tmp_path)
    gt = f"{_sample()}/panoptic_examples.json:{_sample()}/panoptic_examples"
    args = ["evaluate", "--panoptic-gt", gt, "--panoptic-pred", f"{pred}:{tmp_path / 'pred'}"]
    expect = {"missing_png": "000000439180.png: file not found",
              "no_prediction": "pred.json: no prediction for the image with id 439180",
              "one_option": "--panoptic-gt and --panoptic-pred go together",
              "bad_arg": "expected PANOPTIC.json[:PNG_DIR[:IMAGE_DIR]]"}[case]
    if case == "missing_png":
        (tmp_path / "pred" / "000000439180.png").unlink()
    elif case == "no_prediction":
        data = json.loads(pred.read_text())
        data["annotations"] = data["annotations"][:1]
        pred.write_text(json.dumps(data))
    elif case == "one_option":
        args = args[:3]
    else:
        args[2] = "gt-folder"
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0] and "Traceback" not in err[0]


def test_overlay_colours_stuff_and_things(tmp_path: Path) -> None:
    from instaseg.viz.panoptic import colorize_panoptic, overlay_panoptic

    cats, items = read_coco_panoptic(_sample() / "panoptic_examples.json", _sample() / "panoptic_examples")
    info, res = items[1]
    color = colorize_panoptic(res, cats)
    assert (color[res.id_map == 0] == 0).all()
    sky = next(s for s in res.segments if not s.isthing)
    cat = next(c for c in cats if c["id"] == sky.category_id)
    assert (color[res.id_map == sky.id] == cat["color"]).all()  # stuff: the category colour
    people = [s for s in res.segments if s.category_id == 1 and not s.iscrowd][:3]
    shades = {tuple(color[res.id_map == s.id][0]) for s in people}
    assert len(shades) == 3  # things: one shade per instance
    from instaseg.data.io import read_image

    image = read_image(_sample() / "input_images" / info["file_name"])
    over = overlay_panoptic(image, res, cats)
    assert over.shape == image.shape and over.dtype == np.uint8
    assert not np.array_equal(over[res.id_map == sky.id], image[res.id_map == sky.id])
