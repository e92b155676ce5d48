"""Panoptic drawing without real data: colours of stuff and things, and the PQ panels of the dashboard."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from instaseg.evaluation.coco import STAT_NAMES
from instaseg.evaluation.panoptic import evaluate_panoptic
from instaseg.evaluation.panoptic_report import panoptic_metrics
from instaseg.structures.panoptic import PanopticResult, PanopticSegment
from instaseg.viz.dashboard import save_dashboard
from instaseg.viz.panoptic import colorize_panoptic, overlay_panoptic

CATS = [{"id": 1, "name": "cell", "isthing": 1},
        {"id": 7, "name": "road", "isthing": 0, "color": [10, 200, 30]}]


def _result() -> PanopticResult:
    ids = np.zeros((40, 60), np.int32)
    ids[20:] = 5  # road
    ids[2:10, 2:10] = 1
    ids[2:10, 20:30] = 2
    return PanopticResult(ids, [PanopticSegment(1, 1, True, score=0.9), PanopticSegment(2, 1, True),
                                PanopticSegment(5, 7, False)])


def test_colorize_gives_stuff_its_colour_and_each_thing_a_shade() -> None:
    res = _result()
    color = colorize_panoptic(res, CATS)
    assert (color[res.id_map == 5] == [10, 200, 30]).all() and (color[res.id_map == 0] == 0).all()
    a, b = color[res.id_map == 1][0], color[res.id_map == 2][0]
    assert not np.array_equal(a, b) and a.any() and b.any()
    over = overlay_panoptic(np.full((40, 60, 3), 128, np.uint8), res, CATS, labels=False, boundaries=False)
    assert (over[res.id_map == 0] == 128).all() and not (over[res.id_map == 5] == 128).all()


def test_dashboard_shows_pq_panels_for_panoptic_metrics(tmp_path) -> None:
    res = _result()
    segs = [PanopticSegment(s.id, s.category_id, s.isthing) for s in res.segments]
    pred = PanopticResult(res.id_map.copy(), segs)
    pred.id_map[pred.id_map == 2] = 0
    pred.segments = pred.segments[:1] + pred.segments[2:]
    result = evaluate_panoptic([(res, pred)], CATS)
    assert result["per_class"][1]["fn"] == 1 and result["per_class"][7]["pq"] == 1.0
    undefined = dict.fromkeys(STAT_NAMES, -1.0)
    pan = panoptic_metrics(result, CATS)
    metrics = {"segm": undefined, "bbox": undefined, "per_class": {}, "panoptic": pan}
    report = SimpleNamespace(metrics=metrics, class_names={}, evals={}, matches=None, confusion=None,
                             errors=None, gt={"annotations": []})
    paths = save_dashboard(report, tmp_path)
    assert paths["pq_summary"].stat().st_size > 1000 and paths["pq_per_class"].stat().st_size > 1000
