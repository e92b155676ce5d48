"""The temporal tracker: occlusion recovery by motion, low-score recovery, appearance re-identification,
birth/death rules, mask smoothing; the IoU baseline switches identities where it does not."""

from __future__ import annotations

import numpy as np

from instaseg.predict.temporal_tracker import TemporalTracker, TrackerConfig
from instaseg.predict.video import FrameDetections, make_tracker


def _box(x: float, y: float = 20.0, s: float = 16.0) -> list[float]:
    return [x, y, x + s, y + s]


def test_coasts_through_a_gap_by_motion() -> None:
    tr = TemporalTracker(TrackerConfig.bytetrack())
    ids = []
    for t in range(14):
        if 6 <= t < 9:  # occluded: no detection for 3 frames, the object keeps moving 4 px/frame
            out = tr.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
            assert len(out.index) == 0
            continue
        out = tr.update(np.array([_box(4 * t)]), np.array([0.9]), np.array([1]))
        ids.append(int(out.track_ids[0]))
    assert set(ids) == {1}


def test_low_score_detections_extend_tracks_but_do_not_start_them() -> None:
    tr = TemporalTracker(TrackerConfig())
    out = tr.update(np.array([_box(0), _box(60)]), np.array([0.9, 0.3]), np.array([1, 1]))
    assert out.index.tolist() == [0]  # the low one starts nothing
    out = tr.update(np.array([_box(2)]), np.array([0.3]), np.array([1]))
    assert out.index.tolist() == [0] and out.track_ids.tolist() == [1]  # recovered by stage 2
    out = tr.update(np.array([_box(4)]), np.array([0.05]), np.array([1]))
    assert len(out.index) == 0  # below low_thresh: ignored


def test_appearance_reidentifies_after_a_jump() -> None:
    e1, e2 = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    tr = TemporalTracker(TrackerConfig())
    a = tr.update(np.array([_box(0), _box(60)]), np.array([0.9, 0.9]), np.array([1, 1]), np.stack([e1, e2]))
    # both objects teleport and swap places: boxes overlap the other's track, appearance decides
    b = tr.update(np.array([_box(60), _box(0)]), np.array([0.9, 0.9]), np.array([1, 1]), np.stack([e1, e2]))
    assert b.track_ids.tolist() == a.track_ids.tolist()
    plain = TemporalTracker(TrackerConfig.bytetrack())
    a = plain.update(np.array([_box(0), _box(60)]), np.array([0.9, 0.9]), np.array([1, 1]))
    b = plain.update(np.array([_box(60), _box(0)]), np.array([0.9, 0.9]), np.array([1, 1]))
    assert b.track_ids.tolist() == a.track_ids[::-1].tolist()  # motion only follows the boxes


def test_birth_and_death_rules() -> None:
    tr = TemporalTracker(TrackerConfig(min_hits=2, max_age=1))
    assert len(tr.update(np.array([_box(0)]), np.array([0.9]), np.array([1])).index) == 1  # frame 0 shown
    tr.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
    tr.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
    assert tr.num_tracks == 0  # unmatched for more than max_age frames: dead
    first = tr.update(np.array([_box(40)]), np.array([0.9]), np.array([1]))
    assert len(first.index) == 0  # a new track waits for min_hits matches
    second = tr.update(np.array([_box(41)]), np.array([0.9]), np.array([1]))
    assert second.track_ids.tolist() == [2]
    weak = TemporalTracker(TrackerConfig(new_track_thresh=0.8))
    assert len(weak.update(np.array([_box(0)]), np.array([0.7]), np.array([1])).index) == 0


def test_mask_smoothing() -> None:
    tr = TemporalTracker(TrackerConfig(mask_momentum=0.5))
    tr.update(np.array([_box(0)]), np.array([0.9]), np.array([1]), mask_lowres=np.ones((1, 4, 4)))
    out = tr.update(np.array([_box(1)]), np.array([0.9]), np.array([1]), mask_lowres=np.zeros((1, 4, 4)))
    assert np.allclose(out.mask_lowres, 0.5)


def test_iou_baseline_on_same_detections() -> None:
    def det(x: float) -> FrameDetections:
        return FrameDetections((64, 64), np.array([_box(x)]), np.array([0.9]), np.array([1]),
                               np.ones((1, 8, 8), np.float32))

    for kind in ("iou", "bytetrack", "temporal"):
        step = make_tracker(kind)
        ids = [step.step(det(x))[1].tolist() for x in (0, 2, 4)]
        assert ids == [[1], [1], [1]], kind
    iou = make_tracker("iou")  # a 12 px jump in one frame: no mask overlap, a new id for the baseline
    iou.step(det(0))
    assert iou.step(det(20))[1].tolist() == [2]


def test_tracker_rules_from_config_keys() -> None:
    import pytest

    from instaseg.config import load_config
    from instaseg.errors import ConfigError
    from instaseg.predict.video_train import tracker_config

    cfg = load_config(None, ["video.tracker={max_age: 3, min_hits: 2}"])
    rules = tracker_config(cfg.video.tracker)
    assert rules.max_age == 3 and rules.min_hits == 2 and rules.high_thresh == TrackerConfig().high_thresh
    with pytest.raises(ConfigError, match="max_agee"):
        tracker_config({"max_agee": 3})


def test_duplicates_dropped_and_class_flips_survive() -> None:
    tr = TemporalTracker(TrackerConfig())
    out = tr.update(np.array([_box(0), _box(0.5)]), np.array([0.9, 0.7]), np.array([1, 2]))
    assert out.index.tolist() == [0] and tr.num_tracks == 1  # the second is the same object
    out = tr.update(np.array([_box(2)]), np.array([0.9]), np.array([3]))  # the detector flips the class
    assert out.track_ids.tolist() == [1]
    strict = TemporalTracker(TrackerConfig(match_labels=True))
    strict.update(np.array([_box(0)]), np.array([0.9]), np.array([1]))
    assert strict.update(np.array([_box(2)]), np.array([0.9]), np.array([3])).track_ids.tolist() == [2]
