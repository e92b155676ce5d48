"""Video datasets: synthetic videos, YouTube-VIS and MOTS read/write, clips, track statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from instaseg.data.build import build_dataset
from instaseg.data.video import ClipDataset, video_stats
from instaseg.data.ytvis import (
    dataset_to_mots,
    dataset_to_ytvis,
    read_mots,
    uncompressed_rle,
    write_json,
    write_mots,
)
from instaseg.errors import ConfigError, DataError
from instaseg.structures.masks import rle_decode, rle_iou, to_rle


def test_video_shapes_deterministic_with_stable_track_ids() -> None:
    ds = build_dataset("video_shapes:3:12:64")
    again = build_dataset("video_shapes:3:12:64")
    assert len(ds) == 36 and len(ds.videos) == 3
    a, b = ds.load_record(5), again.load_record(5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    # the same object keeps its id and class through the video
    for info in ds.videos:
        cls_of: dict[int, int] = {}
        for i in info.frames:
            rec = ds.load_record(i)
            assert rec.masks.shape[0] == len(rec.extra["track_ids"]) == len(rec.labels)
            for tid, lab in zip(rec.extra["track_ids"].tolist(), rec.labels.tolist(), strict=True):
                assert cls_of.setdefault(tid, lab) == lab
    # splits are disjoint streams
    test = build_dataset("video_shapes:15:12:64", split="test")
    assert len(test.videos) == 3
    assert not np.array_equal(test.load_record(0).image, ds.load_record(0).image)


def test_video_shapes_has_motion_occlusion_and_reentry() -> None:
    ds = build_dataset("video_shapes:30:24:96")
    stats = video_stats(ds)
    assert stats["tracks"] > 30 and stats["occlusions"] > 0 and stats["reentries"] > 0
    assert stats["track_length"]["min"] < stats["track_length"]["max"] <= 24


@pytest.mark.parametrize("spec", ["video_shapes:x", "video_shapes:1:1:64", "video_shapes:1:2:64:3:4"])
def test_video_shapes_bad_spec(spec: str) -> None:
    with pytest.raises(ConfigError):
        build_dataset(spec)


def test_clip_same_augmentation_across_frames() -> None:
    ds = build_dataset("video_shapes:2:8:64")
    plain = ClipDataset(ds, length=3, augment=False)
    aug = ClipDataset(ds, length=3, augment=True, seed=3)
    flips = 0
    for i in range(len(aug)):
        frames_a, frames_p = aug[i], plain[i]
        ids_a = [t["track_ids"].tolist() for _, t in frames_a]
        assert ids_a == [t["track_ids"].tolist() for _, t in frames_p]
        flipped = [bool((ta["masks"] == tp["masks"].flip(-1)).all())
                   and not bool((ta["masks"] == tp["masks"]).all())
                   for (_, ta), (_, tp) in zip(frames_a, frames_p, strict=True)]
        assert len(set(flipped)) == 1  # all frames flipped or none
        flips += flipped[0]
    assert 0 < flips < len(aug)


def test_ytvis_roundtrip_and_mots_roundtrip(tmp_path) -> None:
    ds = build_dataset("video_shapes:2:6:64")
    gt = dataset_to_ytvis(ds, uncompressed=True)
    segs = [s for a in gt["annotations"] for s in a["segmentations"] if s]
    assert segs and all(isinstance(s["counts"], list) for s in segs)
    write_json(gt, tmp_path / "gt.json")
    back = build_dataset(f"ytvis:{tmp_path / 'gt.json'}:{tmp_path}")
    assert back.class_names == ds.class_names and len(back) == len(ds)
    for i in range(len(ds)):
        rec = ds.load_record(i)
        rles, labels, _, _ = back.load_rles(i)
        ids, _ = back.load_tracks(i)
        masks = np.stack([rle_decode(r) for r in rles]) if rles else np.zeros((0, 64, 64), bool)
        # same masks and classes; track ids renumbered 1..T but one-to-one with the true ones
        order = np.argsort(rec.extra["track_ids"])
        assert np.array_equal(masks, rec.masks[order]) and np.array_equal(labels, rec.labels[order])
        assert len(set(ids)) == len(ids)
    mots = dataset_to_mots(ds, 0)
    write_mots(tmp_path / "t.txt", mots)
    rows = read_mots(tmp_path / "t.txt")
    assert len(rows) == sum(len(f) for f in mots)
    frame, obj, cls, rle = rows[0]
    tid, cat, rle0 = mots[0][0]
    assert (frame, obj, cls) == (0, cat * 1000 + tid, cat)
    assert np.array_equal(rle_decode(rle), rle_decode(rle0))


def test_uncompressed_rle_equals_compressed() -> None:
    m = np.zeros((7, 5), bool)
    m[2:5, 1:4] = True
    m[6, 4] = True
    from instaseg.structures.masks import rle_encode

    rle = uncompressed_rle(rle_encode(m))
    assert sum(rle["counts"]) == 35
    assert np.array_equal(rle_decode(rle), m)


def test_mots_bad_line(tmp_path) -> None:
    (tmp_path / "bad.txt").write_text("0 1001 1 64 64\n")
    with pytest.raises(DataError, match="line 1"):
        read_mots(tmp_path / "bad.txt")
    (tmp_path / "bad2.txt").write_text("0 x 1 64 64 abc\n")
    with pytest.raises(DataError, match="integers"):
        read_mots(tmp_path / "bad2.txt")


def test_ytvis_bad_file(tmp_path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"videos": []}))
    with pytest.raises(DataError, match="not a YouTube-VIS"):
        build_dataset(f"ytvis:{tmp_path / 'a.json'}")
    bad = {"videos": [{"id": 1, "height": 4, "width": 4, "file_names": ["v/0.png", "v/1.png"]}],
           "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": [None]}],
           "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="1 segmentations for 2 frames"):
        build_dataset(f"ytvis:{tmp_path / 'b.json'}")


def test_ytvis_reads_davis_sample(shared_data) -> None:
    root = shared_data / "davis_sample"
    ds = build_dataset(f"ytvis:{root / 'ytvis_davis_sample.json'}:{root / 'JPEGImages' / '480p'}")
    assert len(ds.videos) == 3 and len(ds) == 60 and ds.class_names[1:] == ["bear", "car", "dog"]
    rec = ds.load_record(0)
    assert rec.image.shape == (480, 854, 3) and rec.masks.shape == (1, 480, 854)
    # the JSON's masks are DAVIS's PNG annotations
    from instaseg.data.io import read_mask

    png = read_mask(root / "Annotations" / "480p" / "bear" / "00000.png") > 0
    written = to_rle(dataset_to_ytvis(ds)["annotations"][0]["segmentations"][0], 480, 854)
    assert rle_iou([ds.load_rles(0)[0][0]], [written])[0, 0] == 1.0
    assert (rec.masks[0] == png).mean() > 0.999
    stats = video_stats(ds)
    assert stats["tracks"] == 3 and stats["track_length"] == {"min": 20, "mean": 20.0, "max": 20}


def test_data_stats_cli_reports_tracks(capsys) -> None:
    from instaseg.cli import main

    assert main(["data", "stats", "video_shapes:4:10:64", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["images"] == 40 and stats["video"]["videos"] == 4
    assert stats["video"]["tracks"] >= 8 and stats["video"]["track_ids_known"] is True
    assert main(["data", "stats", "video_shapes:4:10:64"]) == 0
    assert "tracks:" in capsys.readouterr().out
    assert main(["data", "stats", "video_shapes:4:x"]) == 2
