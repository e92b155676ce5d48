"""Tiling geometry and merging across tile borders, and Predictor.predict_tiled on large images."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.errors import ConfigError
from instaseg.ops import tiling
from instaseg.predict.predictor import Predictor
from instaseg.structures.masks import rle_decode
from tests.serve.fakes import CLASS_NAMES, BlobModel, blob_image, disk_mask


@pytest.mark.parametrize(("h", "w", "tile", "overlap"), [(3000, 2000, 640, 0.2), (700, 641, 640, 0.5),
                                                         (300, 500, 640, 0.2), (1000, 1000, 256, 0.0)])
def test_tiles_cover_the_image_with_the_requested_overlap(h, w, tile, overlap) -> None:
    windows = tiling.tile_grid(h, w, tile, overlap)
    covered = np.zeros((h, w), np.int32)
    for x0, y0, x1, y1 in windows:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert x1 - x0 == min(tile, w) and y1 - y0 == min(tile, h)  # every tile has the full size
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    xs = sorted({x0 for x0, _, _, _ in windows})
    for a, b in zip(xs, xs[1:], strict=False):  # neighbours overlap by at least round(tile * overlap)
        assert a + tile - b >= round(tile * overlap)


def test_tile_grid_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="overlap"):
        tiling.tile_grid(100, 100, 64, 1.0)
    with pytest.raises(ValueError, match="tile"):
        tiling.tile_grid(100, 100, 0, 0.2)


def _crop_of(mask: np.ndarray) -> tiling.Crop:
    return tiling.mask_to_crop(mask)


def test_merging_stitches_an_object_cut_by_a_tile_border() -> None:
    h, w = 200, 300
    disk = disk_mask(h, w, 150, 100, 40)
    left, right = disk.copy(), disk.copy()
    left[:, 160:] = False  # tile A ends at x=160
    right[:, :130] = False  # tile B starts at x=130
    other = disk_mask(h, w, 40, 40, 15)
    masks = [left, right, other]
    boxes = np.array([tiling.mask_to_crop(m)[1] for m in masks], np.float32)
    scores, labels = np.array([0.8, 0.9, 0.7]), np.array([1, 1, 1])
    crops = [_crop_of(m) for m in masks]
    b, s, lab, c = tiling.merge_detections(boxes, scores, labels, crops, mode="nmm", metric="ios")
    assert len(b) == 2 and s.tolist() == pytest.approx([0.9, 0.7])
    merged = np.zeros((h, w), bool)
    (crop, (x0, y0, x1, y1)) = c[0]
    merged[y0:y1, x0:x1] = crop
    np.testing.assert_array_equal(merged, disk)  # the two halves make the whole disk again
    np.testing.assert_array_equal(b[0], [110, 60, 191, 141])  # half-open: cv2 draws x = 110..190
    # NMS keeps the best half only; IoU (low for two halves) does not match them at 0.5.
    assert len(tiling.merge_detections(boxes, scores, labels, crops, mode="nms")[0]) == 2
    assert len(tiling.merge_detections(boxes, scores, labels, crops, metric="iou")[0]) == 3
    # Different classes never merge unless class-agnostic.
    two = np.array([1, 2, 1])
    assert len(tiling.merge_detections(boxes, scores, two, crops)[0]) == 3
    assert len(tiling.merge_detections(boxes, scores, two, crops, class_agnostic=True)[0]) == 2
    rles = tiling.crops_to_rles(c, h, w)
    np.testing.assert_array_equal(rle_decode(rles[0]), disk)


def test_box_only_detections_merge_by_box_overlap() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], np.float32)
    b, s, _, c = tiling.merge_detections(boxes, np.array([0.5, 0.9, 0.4]), np.array([1, 1, 1]), None)
    assert c is None and len(b) == 2 and s[0] == pytest.approx(0.9)
    np.testing.assert_array_equal(b[0], [0, 0, 10, 10])  # NMM: union of the two boxes


class OneClassBlobs(BlobModel):
    """BlobModel labels blobs by size rank within each tile; a real model's class does not depend on
    the tile, so give every blob label 1."""

    def forward_lowres(self, images):
        out = super().forward_lowres(images)
        for det in out:
            det["labels"] = det["labels"].clamp(max=1)
        return out


# Blobs centred on tile borders (tile 640, overlap 0.2 -> tiles start at 0, 512, 1024, ...), some
# larger than the 128 px overlap so that no tile sees them whole.
BLOBS = ((576, 576, 40), (1088, 300, 100), (300, 1600, 55), (1600, 1088, 90), (2900, 2900, 30),
         (2450, 700, 25), (150, 150, 20))


def test_tiled_prediction_on_a_large_image_merges_objects_across_borders() -> None:
    image = blob_image(3000, 3000, BLOBS)
    pred = Predictor(OneClassBlobs(), CLASS_NAMES, score_thresh=0.0, max_detections=100)
    inst = pred.predict_tiled(image, tile=640, overlap=0.2, batch=4)
    assert inst.image_size == (3000, 3000) and inst.mask_kind == "rle"
    assert len(inst) == len(BLOBS)  # one instance per object, none duplicated at tile borders
    masks = [rle_decode(r) for r in inst.to_rles()]
    totals = [int(m.sum()) for m in masks]
    for cx, cy, r in BLOBS:
        win = np.s_[max(cy - r - 2, 0) : cy + r + 2, max(cx - r - 2, 0) : cx + r + 2]
        truth = disk_mask(3000, 3000, cx, cy, r)[win]
        # IoU with the whole mask: pixels of the mask outside the window only add to the union
        ious = [float((m[win] & truth).sum() / ((m[win] | truth).sum() + t - m[win].sum()))
                for m, t in zip(masks, totals, strict=True)]
        assert max(ious) > 0.95, (cx, cy, r, max(ious))
    # Plain per-tile predictions without merging would have duplicates: 7 objects seen 15+ times.
    raw = pred.predict_tiled(image, tile=640, overlap=0.2, match_thresh=1.01)
    assert len(raw) > len(BLOBS) + 5
    # The size-ranked labels of BlobModel differ between tiles: class-agnostic merging still stitches.
    mixed = Predictor(BlobModel(), CLASS_NAMES, score_thresh=0.0)
    assert len(mixed.predict_tiled(image, class_agnostic=True)) == len(BLOBS)


def test_global_pass_finds_an_object_larger_than_a_tile() -> None:
    image = blob_image(1200, 1200, ((600, 600, 450),))
    pred = Predictor(BlobModel(), CLASS_NAMES, score_thresh=0.0)
    inst = pred.predict_tiled(image, tile=256, overlap=0.25, global_pass=True)
    truth = disk_mask(1200, 1200, 600, 600, 450)
    best = max(float((m & truth).sum() / (m | truth).sum()) for m in map(rle_decode, inst.to_rles()))
    assert best > 0.95 and inst.scores[0] >= inst.scores.min()


def test_tiled_equals_whole_image_when_one_tile_covers_it() -> None:
    image = blob_image()
    pred = Predictor(BlobModel(), CLASS_NAMES, score_thresh=0.0)
    whole, tiled = pred.predict(image), pred.predict_tiled(image, tile=640)
    assert tiled.labels.tolist() == whole.labels.tolist()
    assert [r["counts"] for r in tiled.to_rles()] == [r["counts"] for r in whole.to_rles()]


def test_bad_tiling_options_are_config_errors() -> None:
    pred = Predictor(BlobModel(), CLASS_NAMES)
    with pytest.raises(ConfigError, match="--overlap"):
        pred.predict_tiled(blob_image(), overlap=1.5)
    with pytest.raises(ConfigError, match="--tile"):
        pred.predict_tiled(blob_image(), tile=8)


class FullMaskBlobs(OneClassBlobs):
    """A model that gives full-size masks only (the predictor keeps them as RLEs per tile)."""

    def forward_lowres(self, images):
        out = BlobModel.__call__(self, images)
        for det in out:
            det["labels"] = det["labels"].clamp(max=1)
        return out


def test_models_with_full_size_masks_are_tiled_and_merged_too() -> None:
    blobs = ((256, 300, 60), (700, 640, 30), (100, 900, 25))
    image = blob_image(1000, 1000, blobs)
    pred = Predictor(FullMaskBlobs(), CLASS_NAMES, score_thresh=0.0)
    for global_pass in (False, True):
        inst = pred.predict_tiled(image, tile=320, overlap=0.25, global_pass=global_pass)
        assert len(inst) == len(blobs)
        masks = [rle_decode(r) for r in inst.to_rles()]
        for cx, cy, r in blobs:
            truth = disk_mask(1000, 1000, cx, cy, r)
            assert max((m & truth).sum() / (m | truth).sum() for m in masks) > 0.9
