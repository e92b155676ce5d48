"""Files of ``instaseg annotate``: the output lock, the working state and the COCO file.

Three files live beside ``--output annotations.json``:

- ``annotations.json``: COCO instances (RLE or polygons) of the images marked done, the file
  ``instaseg train`` reads (``data.train=coco:annotations.json:IMAGES``). Images still being worked on
  are left out, so a model is never taught that an unfinished image has no more objects.
- ``annotations.annotate.json`` (the *state*): every image's objects (done or not), its ``done`` and
  ``prelabeled`` flags, the clicks behind each object, and the image the user was on. A restarted tool
  resumes from it; without it, the COCO file is read back (its images count as done).
- ``annotations.json.lock``: ``PID HOST`` of the ``annotate`` that owns the output; a second one is
  refused, a lock left by a dead process is taken over.

Both JSON files are written atomically (:mod:`instaseg.fileio`), state first: a kill between the two
writes leaves a newer state, from which the COCO file is rewritten on the next change.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.errors import ConfigError, DataError
from instaseg.fileio import atomic_open
from instaseg.structures.masks import rle_areas, rle_boxes, rle_decode

STATE_VERSION = 1
MASK_FORMATS = ("rle", "polygon")


def state_path(output: Path) -> Path:
    """The working-state file beside ``output`` (``a.json`` -> ``a.annotate.json``)."""
    return output.with_name(f"{output.stem}.annotate.json")


def lock_path(output: Path) -> Path:
    return output.with_name(f"{output.name}.lock")


def list_images(images: str | Path) -> list[Path]:
    """The image files directly in folder ``images``, sorted; DataError for a missing or empty folder."""
    from instaseg.predict.files import list_sources

    folder = Path(images)
    if not folder.is_dir():
        raise DataError(folder, "not a folder (instaseg annotate labels a folder of images)")
    return list_sources(str(folder))


def parse_classes(classes: Sequence[str] | str | None) -> list[str]:
    """Class names from ``"a,b,c"`` or a list; ConfigError for a name given twice."""
    if classes is None:
        return []
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else [str(c) for c in classes]
    names = [n for n in names if n]
    if len(set(names)) != len(names):
        raise ConfigError(f"--classes: a class is named twice in {','.join(names)}")
    return names


def counts_text(counts: Any) -> str:
    """An RLE's ``counts`` as JSON-ready text."""
    return counts.decode("ascii") if isinstance(counts, bytes) else str(counts)


# ---------------------------------------------------------------- lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OSError:
        return False
    return True


class OutputLock:
    """An exclusive claim on one output file: ``PID HOST`` in ``<output>.lock``.

    :meth:`acquire` raises :class:`DataError` (one line) while another live process (or another
    session in this one) holds it, and takes over a lock whose process is gone on this host."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = lock_path(output)
        self.me = f"{os.getpid()} {socket.gethostname()}"
        self.held = False

    def _holder(self) -> tuple[int | None, str]:
        try:
            text = self.path.read_text().split()
        except OSError:
            return None, ""
        pid = int(text[0]) if text and text[0].isdigit() else None
        return pid, text[1] if len(text) > 1 else ""

    def acquire(self) -> str | None:
        """Take the lock; returns a message when a stale lock was taken over, else None."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            fd = None
        if fd is not None:
            with os.fdopen(fd, "w") as fh:
                fh.write(self.me + "\n")
            self.held = True
            return None
        pid, host = self._holder()
        here = socket.gethostname()
        if pid is None or host not in ("", here) or _pid_alive(pid):
            who = f"PID {pid}" + (f" on {host}" if host and host != here else "") if pid else "unknown"
            raise DataError(
                self.output, f"already open in another instaseg annotate ({who}); stop that one first, "
                f"or delete {self.path} if it is gone"
            )
        with atomic_open(self.path, "w") as fh:  # replace, never delete-then-create
            fh.write(self.me + "\n")
        if self._holder() != (os.getpid(), here):  # another process took it over at the same time
            raise DataError(self.output, f"locked by another instaseg annotate ({self.path})")
        self.held = True
        return f"{self.path.name}: took over a stale lock of PID {pid}, which is not running"

    def release(self) -> None:
        """Remove the lock file if it still names this process."""
        if self.held and self._holder() == (os.getpid(), socket.gethostname()):
            self.path.unlink(missing_ok=True)
        self.held = False


# ---------------------------------------------------------------- state


@dataclass
class ImageState:
    """One image of the folder. ``objects``: dicts ``{"id", "category_id", "rle" (JSON-ready, str
    counts), "source" ("model" | "clicks"), "score" (model pre-labels) , "clicks" [[x, y, 1|0], ...]}``,
    never mutated in place (undo keeps references to old lists)."""

    file_name: str
    image_id: int
    height: int | None = None
    width: int | None = None
    done: bool = False
    prelabeled: bool = False
    objects: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # why the image cannot be read (skipped), not saved

    def to_json(self) -> dict[str, Any]:
        return {"id": self.image_id, "height": self.height, "width": self.width, "done": self.done,
                "prelabeled": self.prelabeled, "objects": self.objects}


def _check(cond: bool, path: Path, problem: str) -> None:
    if not cond:
        raise DataError(path, f"not an instaseg annotate state file: {problem}")


def load_state(path: Path) -> dict[str, Any]:
    """The state file's dict (validated: ``categories``, ``images`` by file name, ``current``)."""
    from instaseg.data.io import read_json

    data = read_json(path)
    _check(isinstance(data, dict) and data.get("version") == STATE_VERSION, path,
           f"expected version {STATE_VERSION}")
    _check(isinstance(data.get("categories"), list) and isinstance(data.get("images"), dict), path,
           "no 'categories' list or 'images' object")
    cats = {c.get("id") for c in data["categories"] if isinstance(c, dict)}
    for name, img in data["images"].items():
        _check(isinstance(img, dict) and isinstance(img.get("id"), int)
               and isinstance(img.get("objects", []), list), path, f"bad entry for image {name!r}")
        for obj in img.get("objects", []):
            rle = obj.get("rle") if isinstance(obj, dict) else None
            size = [img.get("height"), img.get("width")]
            _check(isinstance(rle, dict) and isinstance(rle.get("counts"), str) and rle.get("size") == size
                   and isinstance(obj.get("id"), int) and obj.get("category_id") in cats,
                   path, f"bad object in image {name!r}")
    return data


def import_coco(
    path: Path, images_dir: Path, known: set[str]
) -> tuple[list[dict[str, Any]], dict[str, ImageState]]:
    """Read an existing COCO file (no state file beside it) back through the project's reader:
    ``(categories, {file_name: ImageState})``, every image done. Refuses (DataError) a file that names
    images outside ``known`` (the folder's files): saving would drop them."""
    from instaseg.data.coco import CocoDataset
    from instaseg.data.io import read_json

    raw = read_json(path)
    dataset = CocoDataset(path, images_dir)
    missing = [im["file_name"] for im in dataset.images if im["file_name"] not in known]
    if missing:
        raise DataError(path, f"lists {len(missing)} images that are not in {images_dir} (first: "
                        f"{missing[0]}); pick another --output")
    categories = [{"id": int(c["id"]), "name": str(c["name"])} for c in raw.get("categories", [])]
    states: dict[str, ImageState] = {}
    next_id = 1
    for k, img in enumerate(dataset.images):
        rles, labels, _, (h, w) = dataset.load_rles(k)
        objects = []
        for rle, label in zip(rles, labels.tolist(), strict=True):
            counts = rle["counts"]
            objects.append({"id": next_id, "category_id": int(dataset.category_ids[label]), "source": "file",
                            "rle": {"size": [h, w], "counts": counts.decode() if isinstance(counts, bytes)
                                    else counts}, "clicks": []})
            next_id += 1
        states[img["file_name"]] = ImageState(img["file_name"], int(img["id"]), h, w, done=True,
                                              prelabeled=True, objects=objects)
    return categories, states


def _segmentation(rle: dict[str, Any], fmt: str) -> Any:
    if fmt == "polygon":
        from instaseg.predict.prelabel import mask_polygons

        polys = mask_polygons(rle_decode(rle))
        if polys:
            return polys
    return rle  # RLE format, or a mask too thin for a polygon


def _annotations(st: ImageState, fmt: str) -> list[dict[str, Any]]:
    """COCO annotations of one image (``bbox`` XYWH, ``area`` in pixels)."""
    if not st.objects:
        return []
    rles = [o["rle"] for o in st.objects]
    return [{"id": int(obj["id"]), "image_id": st.image_id, "category_id": int(obj["category_id"]),
             "segmentation": _segmentation(obj["rle"], fmt), "area": float(area),
             "bbox": [float(v) for v in box], "iscrowd": 0}
            for obj, area, box in zip(st.objects, rle_areas(rles), rle_boxes(rles), strict=True)]


class Saver:
    """Writes the state file, then the COCO file, each atomically.

    Every edit saves everything, so each image's JSON is kept serialized and redone only when that
    image changes (its ``objects`` list is replaced on every edit, never mutated, so the list's
    identity and the flags tell): a save costs joining strings plus the disk write."""

    def __init__(self, output: Path, images_dir: Path, fmt: str) -> None:
        self.output = output
        self.images_dir = images_dir
        self.fmt = fmt
        self._cache: dict[str, tuple[tuple[Any, ...], tuple[str, str, str]]] = {}

    def _fragments(self, st: ImageState) -> tuple[str, str, str]:
        """``(state entry, COCO image entry, COCO annotations joined by commas)`` of one image."""
        key = (st.objects, st.done, st.prelabeled, st.height, st.width, st.image_id)
        hit = self._cache.get(st.file_name)
        if hit is not None and hit[0][0] is st.objects and hit[0][1:] == key[1:]:
            return hit[1]
        image = {"id": st.image_id, "file_name": st.file_name, "height": st.height, "width": st.width}
        frags = (json.dumps(st.to_json()), json.dumps(image) if st.done else "",
                 ",".join(json.dumps(a) for a in _annotations(st, self.fmt)) if st.done else "")
        self._cache[st.file_name] = (key, frags)
        return frags

    def save(self, images: list[ImageState], categories: list[dict[str, Any]], current: str | None,
             next_object_id: int, *, lost: Sequence[ImageState] = (), coco: bool = True) -> None:
        """Write the state of ``images`` and ``lost`` (images gone from the folder: kept in the state
        file only); then, when ``coco``, the COCO file of the done images. DataError when the disk
        refuses (the files on disk stay as they were)."""
        kept = [st for st in [*images, *lost] if st.prelabeled or st.done or st.objects]
        head = {"version": STATE_VERSION, "tool": "instaseg annotate", "images_dir": str(self.images_dir),
                "categories": categories, "current": current, "next_object_id": next_object_id}
        entries = ", ".join(f"{json.dumps(st.file_name)}: {self._fragments(st)[0]}" for st in kept)
        self._write(state_path(self.output), json.dumps(head)[:-1] + f', "images": {{{entries}}}}}')
        if not coco:
            return
        ok = [st for st in images if st.error is None]
        done = [self._fragments(st) for st in ok if st.done]
        info = {"description": f"instaseg annotate: {len(done)} of {len(ok)} images of "
                f"{self.images_dir.name} done", "images_done": len(done), "images_total": len(ok),
                "state_file": state_path(self.output).name}
        cats = [{"id": int(c["id"]), "name": c["name"], "supercategory": ""} for c in categories]
        anns = ", ".join(f[2] for f in done if f[2])
        self._write(self.output, f'{{"info": {json.dumps(info)}, "licenses": [], '
                    f'"images": [{", ".join(f[1] for f in done)}], "annotations": [{anns}], '
                    f'"categories": {json.dumps(cats)}}}')

    def _write(self, path: Path, text: str) -> None:
        try:
            with atomic_open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise DataError(path, f"cannot save ({exc.strerror or exc}); the last saved version is "
                            "intact and this change is saved with the next one that succeeds") from None


def empty_mask_message(what: str) -> str:
    return f"{what} gave an empty mask; nothing changed (try a point nearer the object's middle)"


def mask_of(obj: dict[str, Any]) -> np.ndarray:
    """An object's ``(H, W)`` bool mask."""
    return rle_decode(obj["rle"])
