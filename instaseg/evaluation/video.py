"""Video instance segmentation metrics.

- :func:`vis_metrics`: YouTube-VIS AP / AP50 / AP75 / AR1 / AR10 with spatio-temporal mask IoU (per-frame
  intersections summed over per-frame unions), our own pure implementation. It follows TrackEval's
  ``TrackMAP`` (TAO-style matching, 101 recall points, class-averaged, all areas, no time ranges) so the
  two agree to floating-point precision, including TrackEval's handling of tracker ids (a ground-truth
  track matched by the detection with global id 0 stays matchable, as in its ``gt_m > 0`` test).
- :func:`trackeval_metrics`: HOTA (DetA, AssA), CLEAR (MOTSA, sMOTSA, IDSW) and IDF1 computed by
  TrackEval itself (PyPI ``trackeval``) on files written in its YouTube-VIS layout, plus its TrackMAP.

Inputs are YouTube-VIS dicts: ``gt`` ``{"videos", "annotations", "categories"}`` (segmentations per
frame, RLE compressed or not, or null) and ``results`` ``[{"video_id", "category_id", "score",
"segmentations"}]``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.structures.masks import merge_rles, rle_areas, to_rle

IOU_THRESHOLDS = np.arange(0.5, 0.96, 0.05)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)


def _rles(segs: list[Any], h: int, w: int) -> list[Any]:
    return [to_rle(s, h, w) if s else None for s in segs]


def track_iou(dt: list[Any], gt: list[Any]) -> float:
    """Spatio-temporal mask IoU of two tracks: ``dt``/``gt`` are per-frame compressed RLEs or None
    (same length). Sum over frames of intersections divided by the sum of unions; 0 when both are empty."""
    inter = union = 0.0
    for d, g in zip(dt, gt, strict=True):
        if d is not None and g is not None:
            inter += float(rle_areas([merge_rles([d, g], intersect=True)])[0])
            union += float(rle_areas([merge_rles([d, g])])[0])
        elif g is not None:
            union += float(rle_areas([g])[0])
        elif d is not None:
            union += float(rle_areas([d])[0])
    return inter / union if union > np.finfo(float).eps else 0.0


def _match(ious: np.ndarray, dt_ids: list[int], gt_ig: np.ndarray) -> np.ndarray:
    """TAO/TrackEval greedy matching for every IoU threshold: ``dt_m`` (T, D), the matched gt index or -1.
    ``ious`` (D, G) with detections sorted by decreasing score and ground truth sorted ignore-last."""
    num_d, num_g = ious.shape
    dt_m = -np.ones((len(IOU_THRESHOLDS), num_d))
    dt_ig = np.zeros((len(IOU_THRESHOLDS), num_d))
    for ti, thr in enumerate(IOU_THRESHOLDS):
        gt_m = -np.ones(num_g)
        for d in range(num_d):
            best_iou, m = min(thr, 1 - 1e-10), -1
            for g in range(num_g):
                if gt_m[g] > 0:  # TrackEval's test: a match by detection id 0 does not count as taken
                    continue
                if m > -1 and gt_ig[m] == 0 and gt_ig[g] == 1:
                    break
                if ious[d, g] < best_iou - np.finfo(float).eps:
                    continue
                best_iou, m = ious[d, g], g
            if m == -1:
                continue
            dt_ig[ti, d] = gt_ig[m]
            dt_m[ti, d] = m
            gt_m[m] = dt_ids[d]
    return np.where(dt_ig > 0, -2, dt_m)  # -2: matched to an ignored (crowd) track


def _precision_recall(dt_m: np.ndarray, scores: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision at the 101 recall thresholds (T, 101) and final recall (T,), TrackEval's interpolation."""
    order = np.argsort(-scores, kind="mergesort")
    dt_m = dt_m[:, order]
    tps = np.cumsum(dt_m >= 0, axis=1).astype(float)
    fps = np.cumsum(dt_m == -1, axis=1).astype(float)
    precision = np.zeros((len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)))
    recall = np.zeros(len(IOU_THRESHOLDS))
    for ti in range(len(IOU_THRESHOLDS)):
        tp, fp = tps[ti], fps[ti]
        rc = tp / num_gt
        recall[ti] = rc[-1] if len(tp) else 0.0
        pr = tp / (fp + tp + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
        idx = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
        valid = idx < len(pr)
        # TrackEval stops filling at the first recall threshold it cannot reach
        first_bad = int(np.argmin(valid)) if not valid.all() else len(idx)
        precision[ti, :first_bad] = pr[idx[:first_bad]]
    return precision, recall


def vis_metrics(gt: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """YouTube-VIS ``AP``, ``AP50``, ``AP75``, ``AR1``, ``AR10`` (and ``AR``: no limit) in [0, 1], class
    averaged over the categories that have ground truth; ``per_class`` {name: AP}. ``AR1``/``AR10`` keep the
    1/10 highest-scoring tracks per video and category. Crowd tracks are ignored."""
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    videos = gt["videos"]
    dt_by_video: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        dt_by_video.setdefault(int(r["video_id"]), []).append(r)
    next_id = 0  # TrackEval numbers tracker tracks globally, video by video, in file order
    per_cat: dict[int, list[dict[str, Any]]] = {c["id"]: [] for c in cats}
    for v in videos:
        h, w, vid = int(v["height"]), int(v["width"]), int(v["id"])
        dts = dt_by_video.get(vid, [])
        ids = list(range(next_id, next_id + len(dts)))
        next_id += len(dts)
        gts = [a for a in gt["annotations"] if int(a["video_id"]) == vid]
        for c in cats:
            g = [a for a in gts if a["category_id"] == c["id"]]
            d = [(i, r) for i, r in zip(ids, dts, strict=True) if r["category_id"] == c["id"]]
            if not g and not d:
                continue
            d.sort(key=lambda x: -float(x[1]["score"]))
            gt_ig = np.array([int(bool(a.get("iscrowd", 0))) for a in g])
            g_order = np.argsort(gt_ig, kind="mergesort")
            g = [g[i] for i in g_order]
            gt_ig = gt_ig[g_order]
            g_rles = [_rles(a["segmentations"], h, w) for a in g]
            ious = np.array([[track_iou(_rles(r["segmentations"], h, w), gr) for gr in g_rles] for _, r in d])
            ious = ious.reshape(len(d), len(g))
            per_cat[c["id"]].append({"ious": ious, "ids": [i for i, _ in d], "gt_ig": gt_ig,
                                     "scores": np.array([float(r["score"]) for _, r in d])})
    out: dict[str, Any] = {"per_class": {}}
    sums: dict[str, list[np.ndarray]] = {"AP": [], "AR": [], "AR1": [], "AR10": []}
    for c in cats:
        seqs = per_cat[c["id"]]
        num_gt = int(sum((s["gt_ig"] == 0).sum() for s in seqs))
        if num_gt == 0:
            continue
        matched = [_match(s["ious"], s["ids"], s["gt_ig"]) for s in seqs]
        for key, limit in (("AP", None), ("AR1", 1), ("AR10", 10)):
            dt_m = np.concatenate([m[:, :limit] for m in matched], axis=1)
            scores = np.concatenate([s["scores"][:limit] for s in seqs])
            precision, recall = _precision_recall(dt_m, scores, num_gt)
            if key == "AP":
                sums["AP"].append(precision.mean(axis=1))
                sums["AR"].append(recall)
                out["per_class"][c["name"]] = float(precision.mean())
            else:
                sums[key].append(recall)
    if not sums["AP"]:
        return {**dict.fromkeys(("AP", "AP50", "AP75", "AR1", "AR10", "AR"), -1.0), "per_class": {}}
    ap = np.mean(sums["AP"], axis=0)  # (T,) class-averaged per IoU threshold
    out.update(AP=float(ap.mean()), AP50=float(ap[0]), AP75=float(ap[5]),
               AR1=float(np.mean(sums["AR1"], axis=0).mean()),
               AR10=float(np.mean(sums["AR10"], axis=0).mean()),
               AR=float(np.mean(sums["AR"], axis=0).mean()))
    return out


def _trackeval_files(gt: dict[str, Any], results: list[dict[str, Any]], root: Path) -> None:
    """Write TrackEval's YouTube-VIS layout: GT with UNCOMPRESSED RLE and per-annotation height/width,
    sequence names from the first frame's folder, results with compressed RLE strings."""
    from instaseg.data.ytvis import uncompressed_rle

    gt = copy.deepcopy(gt)
    size = {v["id"]: (int(v["height"]), int(v["width"])) for v in gt["videos"]}
    for v in gt["videos"]:
        v["file_names"] = [f"seq{v['id']}/{Path(n).name}" for n in v["file_names"]]
    for a in gt["annotations"]:
        h, w = size[a["video_id"]]
        a["height"], a["width"] = h, w
        a["segmentations"] = [uncompressed_rle(to_rle(s, h, w)) if s else None for s in a["segmentations"]]
        a["areas"] = [float(rle_areas([to_rle(s, h, w)])[0]) if s else None for s in a["segmentations"]]
    res = []
    for r in results:
        h, w = size[r["video_id"]]
        segs = []
        for s in r["segmentations"]:
            if s:
                c = to_rle(s, h, w)
                counts = c["counts"].decode("ascii") if isinstance(c["counts"], bytes) else c["counts"]
                segs.append({"size": [h, w], "counts": counts})
            else:
                segs.append(None)
        res.append({"video_id": r["video_id"], "category_id": r["category_id"], "score": float(r["score"]),
                    "segmentations": segs})
    (root / "gt" / "youtube_vis_val").mkdir(parents=True)
    (root / "gt" / "youtube_vis_val" / "gt.json").write_text(json.dumps(gt))
    (root / "trackers" / "youtube_vis_val" / "ours" / "data").mkdir(parents=True)
    (root / "trackers" / "youtube_vis_val" / "ours" / "data" / "results.json").write_text(json.dumps(res))


def trackeval_metrics(gt: dict[str, Any], results: list[dict[str, Any]], *, max_detections: int = 0,
                      workdir: str | Path | None = None) -> dict[str, Any]:
    """Run TrackEval (YouTubeVIS dataset) with HOTA, CLEAR, Identity and TrackMAP
    (``USE_TIME_RANGES=False``). Returns ``HOTA``, ``DetA``, ``AssA``, ``MOTSA``, ``sMOTSA``, ``IDSW``,
    ``IDF1`` (all classes pooled: TrackEval's detection-averaged combination) and TrackMAP's ``AP``,
    ``AP50``, ``AP75``, ``AR`` (class-averaged), each in [0, 1] except ``IDSW`` (a count)."""
    import trackeval

    with contextlib.ExitStack() as stack:
        root = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        _trackeval_files(gt, results, root)
        evaluator = trackeval.Evaluator({"USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False,
                                         "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False,
                                         "PLOT_CURVES": False,
                                         "TIME_PROGRESS": False, "OUTPUT_EMPTY_CLASSES": False,
                                         "PRINT_ONLY_COMBINED": True, "BREAK_ON_ERROR": True})
        dataset = trackeval.datasets.YouTubeVIS({
            "GT_FOLDER": str(root / "gt") + "/", "TRACKERS_FOLDER": str(root / "trackers") + "/",
            "SPLIT_TO_EVAL": "val", "PRINT_CONFIG": False, "OUTPUT_FOLDER": str(root / "out")})
        metrics = [trackeval.metrics.HOTA({"PRINT_CONFIG": False}),
                   trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
                   trackeval.metrics.Identity({"PRINT_CONFIG": False}),
                   trackeval.metrics.TrackMAP({"USE_TIME_RANGES": False, "PRINT_CONFIG": False,
                                               "MAX_DETECTIONS": max_detections})]
        with contextlib.redirect_stdout(io.StringIO()):
            res, msg = evaluator.evaluate([dataset], metrics)
    if msg.get("YouTubeVIS", {}).get("ours") not in (None, "Success"):
        raise RuntimeError(f"TrackEval failed: {msg}")
    comb = res["YouTubeVIS"]["ours"]["COMBINED_SEQ"]
    det, cls = comb["cls_comb_det_av"], comb["cls_comb_cls_av"]
    tm = cls["TrackMAP"]
    return {
        "HOTA": float(np.mean(det["HOTA"]["HOTA"])), "DetA": float(np.mean(det["HOTA"]["DetA"])),
        "AssA": float(np.mean(det["HOTA"]["AssA"])), "MOTSA": float(det["CLEAR"]["MOTA"]),
        "sMOTSA": float(det["CLEAR"]["sMOTA"]), "IDSW": int(det["CLEAR"]["IDSW"]),
        "IDF1": float(det["Identity"]["IDF1"]),
        "AP": float(np.mean(tm["AP_all"])), "AP50": float(tm["AP_all"][0]), "AP75": float(tm["AP_all"][5]),
        "AR": float(np.mean(tm["AR_all"])),
    }
