"""YouTube-VIS AP/AR (ours) against TrackEval's TrackMAP, and TrackEval's HOTA/CLEAR/IDF1 wrapper."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from instaseg.data.build import build_dataset
from instaseg.data.ytvis import dataset_to_ytvis
from instaseg.evaluation.video import track_iou, trackeval_metrics, vis_metrics
from instaseg.structures.masks import encode_masks, rle_decode, rle_encode


def _perturbed(gt: dict, seed: int, shift: int = 3) -> list[dict]:
    """Results built from the ground truth: shifted masks, dropped frames and tracks, wrong classes,
    duplicates, random scores."""
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    out = []
    for a in gt["annotations"]:
        if rng.random() < 0.15:
            continue
        segs = []
        for s in a["segmentations"]:
            if s is None or rng.random() < 0.1:
                segs.append(None)
                continue
            m = np.roll(rle_decode(s), int(rng.integers(-shift, shift + 1)), axis=1)
            segs.append(rle_encode(m))
        cat = a["category_id"] if rng.random() < 0.85 else int(rng.choice(cats))
        out.append({"video_id": a["video_id"], "category_id": cat, "score": float(rng.random()),
                    "segmentations": segs})
        if rng.random() < 0.3:
            out.append({"video_id": a["video_id"], "category_id": a["category_id"],
                        "score": float(rng.random()), "segmentations": segs[::-1]})
    return out


def test_track_iou_sums_over_frames() -> None:
    a = np.zeros((2, 4, 4), bool)
    b = np.zeros((2, 4, 4), bool)
    a[0, :2], b[0, :1] = True, True  # frame 0: inter 4, union 8
    a[1, :, :1] = True  # frame 1: only a, 4 px
    dt = [encode_masks(a[0:1])[0], encode_masks(a[1:2])[0]]
    gt = [encode_masks(b[0:1])[0], None]
    assert track_iou(dt, gt) == pytest.approx(4 / 12)
    assert track_iou([None, None], [None, None]) == 0.0


def test_perfect_results_score_one() -> None:
    gt = dataset_to_ytvis(build_dataset("video_shapes:3:6:64"))
    results = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 0.9,
                "segmentations": a["segmentations"]} for a in gt["annotations"]]
    ours = vis_metrics(gt, results)
    assert ours["AP"] == pytest.approx(1.0) and ours["AR10"] == pytest.approx(1.0)
    te = trackeval_metrics(gt, results)
    assert te["HOTA"] == pytest.approx(1.0) and te["IDSW"] == 0 and te["IDF1"] == pytest.approx(1.0)
    assert te["MOTSA"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_vis_ap_equals_trackeval_on_synthetic(seed: int) -> None:
    gt = dataset_to_ytvis(build_dataset("video_shapes:6:8:64"))
    results = _perturbed(gt, seed)
    ours = vis_metrics(gt, results)
    te = trackeval_metrics(copy.deepcopy(gt), results)
    for key in ("AP", "AP50", "AP75"):
        assert abs(ours[key] - te[key]) <= 1e-6, key
    assert abs(ours["AR"] - te["AR"]) <= 1e-6
    assert 0.05 < ours["AP"] < 0.95  # a non-trivial case
    te1 = trackeval_metrics(gt, results, max_detections=1)
    assert abs(ours["AR1"] - te1["AR"]) <= 1e-6


def test_vis_ap_equals_trackeval_on_davis(shared_data) -> None:
    """Real data: DAVIS 2016 masks in YouTube-VIS form, results = shifted/degraded masks + distractors."""
    root = shared_data / "davis_sample"
    ds = build_dataset(f"ytvis:{root / 'ytvis_davis_sample.json'}:{root / 'JPEGImages' / '480p'}")
    gt = dataset_to_ytvis(ds)
    results = _perturbed(gt, 0, shift=40)
    for r in list(results):  # plus lower-scored copies under other classes: false positives
        results.append({**r, "category_id": 1 + r["category_id"] % 3, "score": r["score"] / 2})
    ours = vis_metrics(gt, results)
    te = trackeval_metrics(gt, results)
    for key in ("AP", "AP50", "AP75", "AR"):
        assert abs(ours[key] - te[key]) <= 1e-6, key
    assert 0 < ours["AP"] < 1
    assert 0 < te["HOTA"] < 1 and 0 < te["DetA"] < 1 and 0 < te["AssA"] <= 1
