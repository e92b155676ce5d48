"""YouTube-VIS JSON and MOTS text: read and write video instance annotations and results.

YouTube-VIS (``ytvis:ANNOTATIONS.json[:FRAMES_DIR]``): ``videos`` ``[{id, file_names, height, width}]``,
``annotations`` ``[{id, video_id, category_id, segmentations, iscrowd}]`` with one segmentation per
frame (COCO RLE compressed or not, polygons, or ``null`` where the track is absent), ``categories``.
Results: ``[{video_id, category_id, score, segmentations}]``.

MOTS text (KITTI MOTS / MOTSChallenge), one line per mask: ``frame obj_id class_id height width rle``
with ``obj_id = class_id * 1000 + instance`` and ``rle`` a compressed COCO RLE string.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.data.base import Record
from instaseg.data.video import VideoDataset, VideoInfo, is_video_dataset, track_ids_of
from instaseg.errors import DataError
from instaseg.structures.masks import decode_rles, encode_masks, to_rle

RLE = dict[str, Any]


class YtvisDataset(VideoDataset):
    """The frames of a YouTube-VIS annotation file (a :class:`~instaseg.data.video.VideoDataset`).

    ``frames_dir`` holds the ``file_names`` (default: ``JPEGImages`` beside the JSON, else its folder).
    Track ids are the annotation ids. Category ids are mapped to contiguous labels 1..C.
    """

    name = "ytvis"

    def __init__(self, annotations: str | Path, frames_dir: str | Path | None = None, *,
                 transform: Any = None) -> None:
        super().__init__(transform)
        from instaseg.data.io import read_json

        self.path = Path(annotations)
        data = read_json(self.path)
        if not isinstance(data, dict) or not {"videos", "annotations", "categories"} <= set(data):
            raise DataError(self.path, "not a YouTube-VIS file (needs videos, annotations, categories)")
        if frames_dir is None:
            guess = self.path.parent / "JPEGImages"
            frames_dir = guess if guess.is_dir() else self.path.parent
        self.frames_dir = Path(frames_dir)
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.class_names = ["background", *[str(c["name"]) for c in cats]]
        self.category_ids = [0, *[int(c["id"]) for c in cats]]
        label_of = {cid: i for i, cid in enumerate(self.category_ids) if i}
        self.videos, self._frame_of = [], []
        for v in data["videos"]:
            names = list(v.get("file_names") or [])
            if not names:
                raise DataError(self.path, f"video {v.get('id')} has no file_names")
            first = len(self._frame_of)
            self._frame_of += [(len(self.videos), t) for t in range(len(names))]
            self.videos.append(VideoInfo(int(v["id"]), str(v.get("name", v["id"])),
                                         list(range(first, first + len(names))), int(v["height"]),
                                         int(v["width"]), names))
        by_video: dict[int, list[dict[str, Any]]] = {}
        for a in data["annotations"]:
            if int(a["category_id"]) not in label_of:
                raise DataError(self.path,
                                f"annotation {a.get('id')}: unknown category_id {a['category_id']}")
            by_video.setdefault(int(a["video_id"]), []).append(a)
        self._tracks = [by_video.get(v.id, []) for v in self.videos]
        for v, tracks in zip(self.videos, self._tracks, strict=True):
            for a in tracks:
                if len(a["segmentations"]) != len(v.file_names):
                    raise DataError(self.path, f"annotation {a.get('id')}: {len(a['segmentations'])} "
                                    f"segmentations for {len(v.file_names)} frames")
        self._label_of = label_of

    def __len__(self) -> int:
        return len(self._frame_of)

    def image_info(self, index: int) -> dict[str, Any]:
        v, t = self._frame_of[index]
        info = self.videos[v]
        return {"id": index, "file_name": info.file_names[t], "height": info.height, "width": info.width}

    def load_rles(self, index: int) -> tuple[list[RLE], np.ndarray, np.ndarray, tuple[int, int]]:
        """``(compressed RLEs, labels, iscrowd, (H, W))`` of frame ``index`` straight from the JSON."""
        rles, labels, crowd, _ = self._frame_annotations(index)
        info = self.videos[self._frame_of[index][0]]
        return rles, labels, crowd, (info.height, info.width)

    def load_tracks(self, index: int) -> tuple[list[int], list[RLE]]:
        rles, _, _, ids = self._frame_annotations(index)
        return [int(i) for i in ids], rles

    def _frame_annotations(self, index: int) -> tuple[list[RLE], np.ndarray, np.ndarray, np.ndarray]:
        v, t = self._frame_of[index]
        info = self.videos[v]
        rles, labels, crowd, ids = [], [], [], []
        for a in self._tracks[v]:
            seg = a["segmentations"][t]
            if not seg:
                continue
            try:
                rles.append(to_rle(seg, info.height, info.width))
            except (TypeError, KeyError, ValueError) as exc:
                problem = f"annotation {a.get('id')} frame {t}: bad segmentation ({exc})"
                raise DataError(self.path, problem) from None
            labels.append(self._label_of[int(a["category_id"])])
            crowd.append(int(a.get("iscrowd", 0)))
            ids.append(int(a.get("id", len(ids) + 1)))
        as64 = lambda x: np.array(x, dtype=np.int64)  # noqa: E731
        return rles, as64(labels), as64(crowd), as64(ids)

    def load_record(self, index: int) -> Record:
        from instaseg.data.io import read_image

        v, t = self._frame_of[index]
        info = self.videos[v]
        path = self.frames_dir / info.file_names[t]
        image = read_image(path)
        rles, labels, crowd, ids = self._frame_annotations(index)
        masks = decode_rles(rles, info.height, info.width) if rles else np.zeros((0, *image.shape[:2]), bool)
        if masks.shape[1:] != image.shape[:2]:
            raise DataError(path, f"frame is {image.shape[:2]} but the annotations say {masks.shape[1:]}")
        return Record(image, masks, labels, crowd, index, str(path),
                      {"video_id": info.id, "frame": t, "track_ids": ids})


def _json_rle(rle: RLE, uncompressed: bool) -> RLE:
    if uncompressed:
        return uncompressed_rle(rle)
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def uncompressed_rle(rle: RLE) -> RLE:
    """An RLE with ``counts`` as a list of run lengths (column-major, zeros first)."""
    h, w = (int(v) for v in rle["size"])
    flat = decode_rles([to_rle(rle, h, w)], h, w)[0].ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1] if flat.size else 0]])))
    counts = np.diff(np.concatenate([[0], change])).tolist()
    if flat.size and counts and sum(counts) < flat.size:
        counts.append(flat.size - sum(counts))
    return {"size": [h, w], "counts": [int(c) for c in counts]}


def dataset_to_ytvis(dataset: Any, *, uncompressed: bool = False) -> dict[str, Any]:
    """The YouTube-VIS ground truth of a video dataset (one annotation per true track). ``uncompressed``
    writes counts as run-length lists (what TrackEval's YouTube-VIS reader needs)."""
    from instaseg.data._split import load_rles

    if not is_video_dataset(dataset):
        raise DataError(None, f"{type(dataset).__name__} is not a video dataset (no videos/track ids)")
    videos, annotations = [], []
    for info in dataset.videos:
        videos.append({"id": info.id, "name": info.name, "height": info.height, "width": info.width,
                       "length": len(info.frames), "file_names": list(info.file_names)})
        tracks: dict[int, dict[str, Any]] = {}
        for t, index in enumerate(info.frames):
            rles, labels, crowd, _ = load_rles(dataset, index)
            ids = _ids(dataset, index, len(labels))
            for rle, label, c, tid in zip(rles, labels.tolist(), crowd.tolist(), ids, strict=True):
                track = tracks.setdefault(tid, {"category_id": dataset.category_ids[label], "iscrowd": int(c),
                                                "segmentations": [None] * len(info.frames)})
                track["segmentations"][t] = _json_rle(rle, uncompressed)
        for tid in sorted(tracks):
            ann = tracks[tid]
            from instaseg.structures.masks import rle_areas, rle_boxes

            segs = [to_rle(s, info.height, info.width) if s else None for s in ann["segmentations"]]
            ann["areas"] = [float(rle_areas([s])[0]) if s else None for s in segs]
            ann["bboxes"] = [[float(x) for x in rle_boxes([s])[0]] if s else None for s in segs]
            annotations.append({"id": len(annotations) + 1, "video_id": info.id, **ann})
    categories = [{"id": int(cid), "name": name}
                  for cid, name in zip(dataset.category_ids[1:], dataset.class_names[1:], strict=True)]
    return {"videos": videos, "annotations": annotations, "categories": categories}


def _ids(dataset: Any, index: int, n: int) -> list[int]:
    fn = getattr(dataset, "load_tracks", None)
    if fn is not None:
        return fn(index)[0]
    return track_ids_of(dataset.load_record(index)).tolist() if n else []


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as JSON (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def tracks_to_results(video_id: int, frames: list[list[tuple[int, int, float, RLE]]], num_frames: int,
                      height: int, width: int) -> list[dict[str, Any]]:
    """YouTube-VIS results of one video from per-frame ``(track_id, category_id, score, rle)`` tuples:
    one result per track, ``score`` the mean of its per-frame scores, category its most frequent one,
    ``null`` segmentations where the track is absent."""
    tracks: dict[int, dict[str, Any]] = {}
    for t, items in enumerate(frames):
        for tid, cat, score, rle in items:
            tr = tracks.setdefault(tid, {"segs": [None] * num_frames, "scores": [], "cats": []})
            tr["segs"][t] = _json_rle(rle, False)
            tr["scores"].append(float(score))
            tr["cats"].append(int(cat))
    out = []
    for tid in sorted(tracks):
        tr = tracks[tid]
        cats, counts = np.unique(tr["cats"], return_counts=True)
        out.append({"video_id": int(video_id), "category_id": int(cats[np.argmax(counts)]),
                    "score": float(np.mean(tr["scores"])), "segmentations": tr["segs"], "track_id": int(tid)})
    return out


def write_mots(path: str | Path, frames: list[list[tuple[int, int, RLE]]]) -> Path:
    """Write MOTS text: ``frames[t]`` lists ``(track_id, class_id, rle)``; ``obj_id`` is
    ``class_id * 1000 + track_id`` (track ids must be < 1000)."""
    lines = []
    for t, items in enumerate(frames):
        for tid, cls, rle in items:
            if not 0 < int(tid) < 1000:
                raise ValueError(f"MOTS track ids must be 1..999, got {tid}")
            r = _json_rle(rle, False)
            h, w = r["size"]
            lines.append(f"{t} {int(cls) * 1000 + int(tid)} {int(cls)} {h} {w} {r['counts']}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return path


def read_mots(path: str | Path) -> list[tuple[int, int, int, RLE]]:
    """Read MOTS text into ``(frame, obj_id, class_id, rle)`` rows (DataError naming the line)."""
    rows = []
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such MOTS file")
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise DataError(path, f"line {n}: expected 'frame id class_id height width rle', "
                                  f"got {len(parts)} fields")
        try:
            frame, obj, cls, h, w = (int(p) for p in parts[:5])
        except ValueError:
            raise DataError(path, f"line {n}: frame, id, class_id, height, width must be integers") from None
        rows.append((frame, obj, cls, {"size": [h, w], "counts": parts[5]}))
    return rows


def dataset_to_mots(dataset: Any, video: int) -> list[list[tuple[int, int, RLE]]]:
    """Per-frame ``(track_id, category_id, rle)`` of one video of a video dataset (for :func:`write_mots`)."""
    from instaseg.data._split import load_rles

    out = []
    for index in dataset.videos[video].frames:
        rles, labels, _, _ = load_rles(dataset, index)
        ids = _ids(dataset, index, len(labels))
        out.append([(tid, dataset.category_ids[lab], encode_masks(decode_rles([r], *r["size"]))[0])
                    for tid, lab, r in zip(ids, labels.tolist(), rles, strict=True)])
    return out
