"""``instaseg annotate``: label a folder of images in the browser, saved as COCO as you go.

:class:`AnnotationSession` holds the work (one :class:`~instaseg.serve.annotate_store.ImageState` per
image) and does every edit: pre-labels from a :class:`~instaseg.predict.predictor.Predictor` the first
time an image is opened, objects added or corrected by clicks through an interactive backend
(:func:`~instaseg.predict.interactive.build_interactive`), class changes, deletions, undo/redo and the
per-image "done" flag. Each edit is saved atomically at once (files: :mod:`.annotate_store`). It is
plain Python, tested without HTTP; :func:`build_annotate_app` puts a small JSON API and the page
(``static/annotate.html``, no CDN) in front of it.

Clicks: a positive click with no object selected adds an object; clicks on a selected object refine
it (all its clicks go to the backend with its current mask). A pre-label has no clicks: its mask's
interior point farthest from the boundary (the protocol's first click) stands in for a positive one.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from instaseg.errors import ConfigError, DataError
from instaseg.serve.annotate_store import (
    MASK_FORMATS,
    ImageState,
    OutputLock,
    Saver,
    counts_text,
    empty_mask_message,
    import_coco,
    list_images,
    load_state,
    mask_of,
    parse_classes,
    state_path,
)
from instaseg.structures.masks import rle_areas, rle_encode

logger = logging.getLogger("instaseg.annotate")
STATIC_DIR = Path(__file__).parent / "static"
MAX_HISTORY = 100  # undo steps kept per image


class AnnotationSession:
    """The annotation work on one folder, saved to ``output`` after every change.

    Args:
        images: folder of images (``file_name`` in the COCO file is relative to it).
        output: the COCO JSON to write; the state file and the lock go beside it.
        predictor: pre-labels (``None``: start every image empty).
        interactive: click backend with ``segment(image, points (P, 2) xy, labels (P,), prev_mask=...)``.
        classes: class names; added to those of an existing output, else to the model's.
        mask_format: ``"rle"`` or ``"polygon"`` segmentations in the COCO file.
        log: where messages go (skipped images, a stale lock taken over).

    Raises DataError for an empty folder, a folder whose images are all unreadable, an output held
    by another session, or an output that is not this tool's; ConfigError for bad options.
    """

    def __init__(
        self,
        images: str | Path,
        output: str | Path,
        *,
        predictor: Any | None = None,
        interactive: Any | None = None,
        classes: Sequence[str] | str | None = None,
        mask_format: str = "rle",
        log: Callable[[str], None] | None = None,
    ) -> None:
        if mask_format not in MASK_FORMATS:
            raise ConfigError(f"--format must be rle or polygon, got {mask_format!r}")
        self.images_dir = Path(images)
        self.output = Path(output)
        self.predictor = predictor
        self.interactive = interactive
        self.mask_format = mask_format
        self.log = log or logger.warning
        self.messages: list[str] = []  # shown on the page
        self._lock = threading.RLock()
        self._cache: dict[str, np.ndarray] = {}  # decoded images, the last few opened
        self._undo: dict[str, list[list[dict[str, Any]]]] = {}
        self._redo: dict[str, list[list[dict[str, Any]]]] = {}
        paths = list_images(self.images_dir)
        if self.output.suffix.lower() != ".json":
            raise ConfigError(f"--output must be a .json file, got {self.output}")
        if not self.output.parent.is_dir():
            raise DataError(self.output.parent, "folder of --output does not exist")
        self._saver = Saver(self.output, self.images_dir, mask_format)
        self._file_lock = OutputLock(self.output)
        took_over = self._file_lock.acquire()
        try:
            if took_over:
                self._say(took_over)
            self._load(paths, parse_classes(classes))
            self._check_headers()
            self.current = self._resume_index()
            self._save()
        except BaseException:
            self._file_lock.release()
            raise

    # ---------------------------------------------------------------- setup
    def _load(self, paths: list[Path], classes: list[str]) -> None:
        names = [p.name for p in paths]
        saved: dict[str, ImageState] = {}
        categories: list[dict[str, Any]] = []
        self.next_object_id = 1
        current = None
        if state_path(self.output).is_file():
            data = load_state(state_path(self.output))
            categories = [{"id": int(c["id"]), "name": str(c["name"])} for c in data["categories"]]
            current = data.get("current")
            self.next_object_id = int(data.get("next_object_id") or 1)
            for name, img in data["images"].items():
                saved[name] = ImageState(name, img["id"], img.get("height"), img.get("width"),
                                         bool(img.get("done")), bool(img.get("prelabeled")),
                                         list(img.get("objects") or []))
        elif self.output.is_file():
            categories, saved = import_coco(self.output, self.images_dir, set(names))
            self.next_object_id = 1 + max((o["id"] for s in saved.values() for o in s.objects), default=0)
        lost = sorted(set(saved) - set(names))
        if lost:
            self._say(f"{state_path(self.output).name}: {len(lost)} annotated images are no longer in "
                      f"{self.images_dir} (first: {lost[0]}); their work stays in the state file")
        self.lost = {n: saved[n] for n in lost}  # kept in the state file, never dropped
        model_names = list(self.predictor.class_names[1:]) if self.predictor is not None else []
        for name in classes or ([] if categories else model_names):
            if name not in [c["name"] for c in categories]:
                categories.append({"id": 1 + max((c["id"] for c in categories), default=0), "name": name})
        if not categories:
            raise ConfigError("no classes: give --classes a,b,c (or --checkpoint with a model to pre-label)")
        self.categories = categories
        next_image = 1 + max((s.image_id for s in saved.values()), default=0)
        self.states: list[ImageState] = []
        for name in names:
            if name not in saved:
                saved[name] = ImageState(name, next_image)
                next_image += 1
            self.states.append(saved[name])
        self._resume_name = current

    def _check_headers(self) -> None:
        """Mark images whose header cannot be read as skipped (decoding errors show up on opening)."""
        from instaseg.data.io import image_size

        for st in self.states:
            try:
                h, w = image_size(self.images_dir / st.file_name)
            except DataError as exc:
                self._skip(st, exc)
                continue
            if st.height is None:
                st.height, st.width = h, w
        if all(st.error for st in self.states):
            first = self.states[0]
            raise DataError(self.images_dir, f"none of its {len(self.states)} images can be read "
                            f"({first.file_name}: {first.error})")

    def _resume_index(self) -> int:
        names = [st.file_name for st in self.states]
        if self._resume_name in names and not self.states[names.index(self._resume_name)].error:
            return names.index(self._resume_name)
        todo = [k for k, st in enumerate(self.states) if not st.done and not st.error]
        return todo[0] if todo else next(k for k, st in enumerate(self.states) if not st.error)

    def _say(self, message: str) -> None:
        self.log(message)
        self.messages.append(message)

    def _skip(self, st: ImageState, exc: DataError) -> None:
        st.error = exc.problem
        self._say(f"skipped {st.file_name}: {exc.problem}")

    def close(self) -> None:
        """Release the output lock (the files are already saved)."""
        self._file_lock.release()

    # ---------------------------------------------------------------- saving
    def _save(self, coco: bool = True) -> None:
        """Save the state file, and the COCO file when ``coco`` (an edit of a done image, a done flag)."""
        current = self.states[self.current].file_name if self.states else None
        self._saver.save(self.states, self.categories, current, self.next_object_id,
                         lost=list(self.lost.values()), coco=coco)

    def _state(self, index: int) -> ImageState:
        if not isinstance(index, int) or not 0 <= index < len(self.states):
            raise ConfigError(f"image index {index} is out of range 0..{len(self.states) - 1}")
        return self.states[index]

    def _image(self, st: ImageState) -> np.ndarray:
        """The decoded ``(H, W, 3)`` uint8 RGB image (cached); DataError marks it skipped."""
        from instaseg.data.io import read_image

        if st.error:
            raise DataError(self.images_dir / st.file_name, st.error)
        if st.file_name not in self._cache:
            try:
                image = read_image(self.images_dir / st.file_name)
            except DataError as exc:
                self._skip(st, exc)
                raise
            if len(self._cache) >= 3:
                self._cache.pop(next(iter(self._cache)))
            self._cache[st.file_name] = image
            st.height, st.width = image.shape[:2]
        return self._cache[st.file_name]

    def _commit(self, st: ImageState, objects: list[dict[str, Any]]) -> None:
        """Replace ``st``'s objects (undoable) and save."""
        history = self._undo.setdefault(st.file_name, [])
        history.append(st.objects)
        del history[:-MAX_HISTORY]
        self._redo[st.file_name] = []
        st.objects = objects
        self._save(coco=st.done)

    # ---------------------------------------------------------------- reading
    def summary(self) -> dict[str, Any]:
        """Progress and the image list: ``{"images": [{"index", "file_name", "done", "objects",
        "error"}], "current", "done", "total", "skipped", "progress", "categories", ...}``."""
        with self._lock:
            ok = [st for st in self.states if not st.error]
            done = sum(st.done for st in ok)
            skipped = len(self.states) - len(ok)
            progress = f"{done} of {len(ok)} done" + (f" ({skipped} skipped)" if skipped else "")
            return {
                "images": [{"index": k, "file_name": st.file_name, "done": st.done, "error": st.error,
                            "objects": len(st.objects)} for k, st in enumerate(self.states)],
                "current": self.current, "done": done, "total": len(ok), "skipped": skipped,
                "progress": progress, "categories": self.categories, "output": str(self.output),
                "model": getattr(self.predictor, "name", None),
                "backend": getattr(self.interactive, "name", None), "messages": list(self.messages),
            }

    def view(self, index: int, selected: int | None = None, message: str | None = None) -> dict[str, Any]:
        """What the page shows of image ``index``: size, done flag, objects (with colours), undo/redo."""
        from instaseg.viz.draw import instance_colors

        st = self._state(index)
        colors = instance_colors(max((o["id"] for o in st.objects), default=0) + 1)
        objects = [{"id": o["id"], "category_id": o["category_id"], "rle": o["rle"], "source": o["source"],
                    "score": o.get("score"), "clicks": o.get("clicks", []),
                    "color": [int(v) for v in colors[o["id"]]]} for o in st.objects]
        return {"index": index, "file_name": st.file_name, "width": st.width, "height": st.height,
                "done": st.done, "error": st.error, "objects": objects, "selected": selected,
                "can_undo": bool(self._undo.get(st.file_name)),
                "can_redo": bool(self._redo.get(st.file_name)), "message": message}

    def open(self, index: int) -> dict[str, Any]:
        """Open image ``index``: decode it, pre-label it the first time, make it the resume point.
        A corrupt image is marked skipped and its view carries ``error`` instead of objects."""
        with self._lock:
            st = self._state(index)
            try:
                image = self._image(st)
            except DataError:
                self._save()
                return self.view(index, message=f"skipped {st.file_name}: {st.error}")
            self.current = index
            if not st.prelabeled:
                st.objects = st.objects + self._prelabels(image)
                st.prelabeled = True
            self._save(coco=st.done)
            return self.view(index)

    def image_jpeg(self, index: int) -> bytes:
        """Image ``index`` as JPEG bytes (decoded with EXIF orientation applied, as clicks see it)."""
        from PIL import Image

        with self._lock:
            image = self._image(self._state(index))
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=92)
        return buf.getvalue()

    def _prelabels(self, image: np.ndarray) -> list[dict[str, Any]]:
        if self.predictor is None:
            return []
        inst = self.predictor.predict(image)
        names = self.predictor.class_names_of(inst)
        cat_of = {c["name"]: c["id"] for c in self.categories}
        out = []
        for name, score, rle in zip(names, inst.scores.tolist(), inst.to_rles(self.predictor.mask_thresh),
                                    strict=True):
            if name not in cat_of:  # a model class that is not among --classes
                continue
            rle = {"size": [int(v) for v in rle["size"]], "counts": counts_text(rle["counts"])}
            out.append({"id": self._new_id(), "category_id": cat_of[name], "rle": rle, "source": "model",
                        "score": round(float(score), 4), "clicks": []})
        areas = rle_areas([o["rle"] for o in out])
        return [o for o, area in zip(out, areas, strict=True) if area > 0]

    def _new_id(self) -> int:
        self.next_object_id += 1
        return self.next_object_id - 1

    # ---------------------------------------------------------------- edits
    def click(self, index: int, x: float, y: float, positive: bool = True, object_id: int | None = None,
              category_id: int | None = None) -> dict[str, Any]:
        """A click at pixel ``(x, y)`` of image ``index``: positive with no ``object_id`` adds an object
        (class ``category_id``, default the first); otherwise the click refines object ``object_id``.
        ConfigError (one line) for a click outside the image or a negative click with no object."""
        from instaseg.ops.clicks import first_click
        from instaseg.predict.interactive import check_points

        with self._lock:
            st = self._state(index)
            image = self._image(st)
            h, w = image.shape[:2]
            check_points(np.array([[x, y]], np.float64), np.array([1]), h, w)
            if self.interactive is None:
                raise ConfigError("no click backend is loaded")
            if object_id is None:
                if not positive:
                    raise ConfigError("a negative click needs a selected object (select one, then click "
                                      "where it should not be)")
                obj = {"id": None, "category_id": self._category(category_id), "clicks": [],
                       "source": "clicks"}
                prev = None
            else:
                obj = self._object(st, object_id)
                prev = mask_of(obj)
            clicks = [list(c) for c in obj.get("clicks", [])]
            if prev is not None and not any(c[2] for c in clicks) and prev.any():
                fx, fy, _ = first_click(prev)  # a pre-label: its middle stands in for a positive click
                clicks.append([fx, fy, 1])
            clicks.append([round(float(x), 1), round(float(y), 1), int(bool(positive))])
            pts = np.array([c[:2] for c in clicks], np.float64)
            labels = np.array([c[2] for c in clicks], np.int64)
            (mask, score), *_ = self.interactive.segment(image, pts, labels, prev_mask=prev)
            if not mask.any():
                return self.view(index, object_id, empty_mask_message("the click"))
            new = {**obj, "rle": rle_encode(mask), "clicks": clicks, "score": None,
                   "source": "clicks" if obj["source"] == "clicks" else "edited"}
            if object_id is None:
                new["id"] = self._new_id()
                objects = [*st.objects, new]
            else:
                objects = [new if o["id"] == object_id else o for o in st.objects]
            self._commit(st, objects)
            return self.view(index, new["id"])

    def delete(self, index: int, object_id: int) -> dict[str, Any]:
        """Remove object ``object_id`` of image ``index``."""
        with self._lock:
            st = self._state(index)
            self._object(st, object_id)
            self._commit(st, [o for o in st.objects if o["id"] != object_id])
            return self.view(index)

    def set_class(self, index: int, object_id: int, category_id: int) -> dict[str, Any]:
        """Give object ``object_id`` of image ``index`` the category ``category_id``."""
        with self._lock:
            st = self._state(index)
            self._object(st, object_id)
            cid = self._category(category_id)
            self._commit(st, [{**o, "category_id": cid} if o["id"] == object_id else o for o in st.objects])
            return self.view(index, object_id)

    def undo(self, index: int) -> dict[str, Any]:
        """Take back the last edit of image ``index`` (nothing to undo: unchanged, with a message)."""
        return self._step(index, self._undo, self._redo, "undo")

    def redo(self, index: int) -> dict[str, Any]:
        """Do again the last undone edit of image ``index``."""
        return self._step(index, self._redo, self._undo, "redo")

    def _step(self, index: int, source: dict, target: dict, what: str) -> dict[str, Any]:
        with self._lock:
            st = self._state(index)
            stack = source.get(st.file_name)
            if not stack:
                return self.view(index, message=f"nothing to {what}")
            target.setdefault(st.file_name, []).append(st.objects)
            st.objects = stack.pop()
            self._save(coco=st.done)
            return self.view(index)

    def set_done(self, index: int, done: bool = True) -> dict[str, Any]:
        """Mark image ``index`` done (it joins the COCO file) or not done (it leaves it)."""
        with self._lock:
            st = self._state(index)
            if st.error:
                raise DataError(self.images_dir / st.file_name, st.error)
            st.done = bool(done)
            self._save()
            return self.view(index)

    def _object(self, st: ImageState, object_id: int) -> dict[str, Any]:
        for o in st.objects:
            if o["id"] == object_id:
                return o
        raise ConfigError(f"{st.file_name} has no object {object_id}")

    def _category(self, category_id: int | None) -> int:
        ids = [c["id"] for c in self.categories]
        if category_id is None:
            return ids[0]
        if category_id not in ids:
            raise ConfigError(f"unknown category id {category_id} (known: {', '.join(map(str, ids))})")
        return int(category_id)




# ---------------------------------------------------------------- HTTP


class Click(BaseModel):
    """``POST .../click``: pixel ``(x, y)``; no ``object_id``: a new object of ``category_id``."""

    x: float
    y: float
    positive: bool = True
    object_id: int | None = None
    category_id: int | None = None


class ObjectRef(BaseModel):
    object_id: int


class ClassChange(BaseModel):
    object_id: int
    category_id: int


class Done(BaseModel):
    done: bool = True


def build_annotate_app(session: AnnotationSession) -> Any:
    """The FastAPI app of the annotation page: ``GET /`` (the page), ``/static/*``, and a JSON API on
    ``session``: ``GET /api/summary``, ``GET /api/images/{i}`` (opens it), ``GET /api/images/{i}/image.jpg``,
    ``POST /api/images/{i}/click`` ``{x, y, positive, object_id, category_id}``, ``.../delete``
    ``{object_id}``, ``.../class`` ``{object_id, category_id}``, ``.../undo``, ``.../redo``, ``.../done``
    ``{done}``. User errors (a click outside the image, an unknown object) answer 422 with one line."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles

    from instaseg.errors import InstasegError

    app = FastAPI(title="instaseg annotate", version="0.1.0", docs_url="/docs")
    app.state.session = session

    @app.exception_handler(InstasegError)
    async def _user_error(request: Request, exc: InstasegError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "annotate.html")

    @app.get("/api/summary")
    def summary() -> dict[str, Any]:
        return session.summary()

    @app.get("/api/images/{index}")
    def open_image(index: int) -> dict[str, Any]:
        return session.open(index)

    @app.get("/api/images/{index}/image.jpg")
    def image(index: int) -> Response:
        return Response(session.image_jpeg(index), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/images/{index}/click")
    def click(index: int, body: Click) -> dict[str, Any]:
        return session.click(index, body.x, body.y, body.positive, body.object_id, body.category_id)

    @app.post("/api/images/{index}/delete")
    def delete(index: int, body: ObjectRef) -> dict[str, Any]:
        return session.delete(index, body.object_id)

    @app.post("/api/images/{index}/class")
    def set_class(index: int, body: ClassChange) -> dict[str, Any]:
        return session.set_class(index, body.object_id, body.category_id)

    @app.post("/api/images/{index}/undo")
    def undo(index: int) -> dict[str, Any]:
        return session.undo(index)

    @app.post("/api/images/{index}/redo")
    def redo(index: int) -> dict[str, Any]:
        return session.redo(index)

    @app.post("/api/images/{index}/done")
    def done(index: int, body: Done) -> dict[str, Any]:
        return session.set_done(index, body.done)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
