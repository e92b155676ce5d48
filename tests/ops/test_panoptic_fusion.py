import numpy as np
import pytest

from instaseg.ops.panoptic_fusion import FusionParams, panoptic_fusion


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_instances_by_score_then_stuff_then_void():
    h, w = 20, 20
    a = _box(h, w, 0, 10, 0, 10)  # 100 px, score 0.6
    b = _box(h, w, 5, 15, 5, 15)  # 100 px, score 0.9, overlaps a by 25 px
    sem = np.full((h, w), 255, np.int64)
    sem[:, 10:] = 1  # stuff 1 on the right half
    sem[:, :10] = 2  # stuff 2 on the left half
    res = panoptic_fusion(np.stack([a, b]), [0.6, 0.9], [7, 8], sem, [40, 41], stuff_area_thresh=10)
    assert res.validate() == []
    segs = {s.id: s for s in res.segments}
    # b painted first (better score) with id 1, a keeps only its free 75 px with id 2
    assert segs[1].category_id == 8 and segs[1].score == pytest.approx(0.9) and segs[1].isthing
    assert segs[2].category_id == 7 and (res.id_map == 2).sum() == 75
    assert (res.id_map == 1).sum() == 100
    # stuff fills what is left, by sem class, with ids after the things
    stuff = [s for s in res.segments if not s.isthing]
    assert [s.category_id for s in stuff] == [40, 41]
    covered = (res.id_map == 1) | (res.id_map == 2)
    assert ((res.id_map == stuff[0].id) == ((sem == 1) & ~covered)).all()
    assert (res.id_map > 0).all()


def test_overlap_threshold_drops_mostly_covered_instances():
    h, w = 20, 20
    big = _box(h, w, 0, 10, 0, 10)
    small = _box(h, w, 2, 10, 0, 10)  # 80 px, 100 % inside big
    part = _box(h, w, 6, 16, 0, 10)  # 100 px, 40 % inside big
    sem = np.zeros((h, w), np.int64)
    res = panoptic_fusion(np.stack([big, small, part]), [0.9, 0.8, 0.7], [1, 1, 2], sem, [5],
                          overlap_threshold=0.5)
    assert [s.category_id for s in res.segments] == [1, 2]  # small dropped (covered 100 % > 50 %)
    res = panoptic_fusion(np.stack([big, part]), [0.9, 0.7], [1, 2], sem, [5], overlap_threshold=0.3)
    assert [s.category_id for s in res.segments] == [1]  # 40 % > 30 %: dropped
    # things-class pixels that no instance claims are VOID
    assert ((res.id_map == 0) == ~big).all()


def test_score_and_area_thresholds():
    h, w = 16, 16
    inst = _box(h, w, 0, 4, 0, 4)
    sem = np.ones((h, w), np.int64)
    sem[12:, 12:] = 2  # a 16 px stuff region
    res = panoptic_fusion(inst[None], [0.3], [1], sem, [9, 10], instances_score_thresh=0.5,
                          stuff_area_thresh=20)
    assert all(not s.isthing for s in res.segments)  # the instance scores too low
    assert [s.category_id for s in res.segments] == [9]  # the 16 px region is under 20 px: VOID
    assert (res.id_map[12:, 12:] == 0).all()
    res = panoptic_fusion(inst[None], [0.3], [1], sem, [9, 10], instances_score_thresh=0.2,
                          stuff_area_thresh=16)
    assert [s.category_id for s in res.segments] == [1, 9, 10]


def test_no_instances_and_bad_input():
    sem = np.zeros((8, 8), np.int64)
    sem[:4] = 1
    res = panoptic_fusion(np.zeros((0, 8, 8), bool), [], [], sem, [3], stuff_area_thresh=1)
    assert [(s.category_id, s.isthing) for s in res.segments] == [(3, False)]
    assert res.id_map.dtype == np.int32 and (res.id_map[4:] == 0).all()
    with pytest.raises(ValueError, match="masks must be"):
        panoptic_fusion(np.zeros((1, 4, 4), bool), [0.9], [1], sem, [3])
    with pytest.raises(ValueError, match="differ"):
        panoptic_fusion(np.zeros((1, 8, 8), bool), [0.9, 0.8], [1], sem, [3])
    with pytest.raises(ValueError, match="stuff_area_thresh"):
        FusionParams(stuff_area_thresh=-1)
    assert FusionParams.from_kwargs({"overlap_threshold": 0.3, "lr": 1}).overlap_threshold == 0.3
