"""The Gradio app (``instaseg gradio``): upload an image, see its instances, click to segment one more
object, download the image's instances as a COCO JSON.

The work is done by the project's one predictor path and its interactive backends; this module only
keeps each browser session's state and turns it into the app's outputs:

- automatic instances: :meth:`Predictor.predict` -> :func:`instances_to_results` (COCO rows, RLE masks);
- clicks: an :class:`~instaseg.predict.interactive.InteractiveSegmenter` (the trained click model or the
  offline GrabCut :class:`~instaseg.predict.interactive.ClickSegmenter`, see ``build_interactive``);
  clicks outside the image are ignored with a message (:func:`check_points`);
- the overlay: :func:`instaseg.predict.files.draw_overlay` (the ``predict`` command's drawing), with the
  object being clicked and its clicks on top;
- the download: one COCO instances file (``images``/``annotations``/``categories``, compressed RLE with
  ``str`` counts, plus ``score`` and ``source``: ``auto`` or ``click``), written atomically.

:class:`AppLogic` holds everything but the widgets, so it can be used and tested without a browser;
:func:`build_app` wires it to a ``gr.Blocks`` (gradio is imported there only: it is the ``app`` extra).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from instaseg.data.io import read_image
from instaseg.errors import CheckpointError, ConfigError, DataError
from instaseg.fileio import atomic_open
from instaseg.predict.dataset import instances_to_results
from instaseg.predict.files import draw_overlay
from instaseg.predict.interactive import InteractiveSegmenter, check_points
from instaseg.predict.predictor import Predictor
from instaseg.structures.instances import Instances
from instaseg.structures.masks import polygons_to_rle, rle_areas, rle_boxes, rle_encode, xywh_to_polygon

CLICK_MODES = ("positive (object)", "negative (background)")
TABLE_HEADERS = ["id", "class", "score", "area", "box (x1, y1, x2, y2)", "source"]
IMAGE_TASKS = ("instance", "panoptic", "video")  # models whose Predictor gives instances of an image
CURRENT_COLOR = np.array([0, 255, 255], np.uint8)  # the object being clicked: cyan fill and outline
CLICK_COLORS = {1: (40, 220, 40), 0: (230, 40, 40)}  # positive green, negative red (RGB)


@dataclass
class AppObject:
    """One instance of the image: ``rle`` compressed COCO RLE (``str`` counts), ``label`` index into the
    predictor's class names, ``score`` in [0, 1], ``box`` XYXY pixels, ``source`` ``auto`` | ``click``."""

    rle: dict[str, Any]
    label: int
    score: float
    box: list[float]
    source: str


@dataclass
class AppSession:
    """A browser session's state: the image ``(H, W, 3)`` uint8 RGB and its file name, the instances,
    the clicks ``(x, y, 1|0)`` of the object being segmented and its current mask ``(H, W)`` bool."""

    image: np.ndarray | None = None
    file_name: str = ""
    objects: list[AppObject] = field(default_factory=list)
    clicks: list[tuple[float, float, int]] = field(default_factory=list)
    mask: np.ndarray | None = None
    mask_score: float = 0.0
    json_path: str | None = None


def load_image_predictor(source: str | Path, *, device: str = "cpu", **kwargs: Any) -> Predictor:
    """A :class:`Predictor` for an image model's run directory, checkpoint or ``.onnx`` file.

    Raises :class:`CheckpointError` (one line naming ``source``) for a missing or unreadable file and
    for a model that does not segment images (a click model, a point-cloud model)."""
    from instaseg.models.checkpoint import load_model
    from instaseg.models.registry import model_task
    from instaseg.predict.predictor import check_device

    if Path(source).suffix.lower() == ".onnx":
        return Predictor.load(backend="onnxruntime", model=source, device=device, **kwargs)
    check_device(device)
    model, meta = load_model(source, device=device)
    name = str((meta.get("model_spec") or {}).get("name"))
    try:
        task = model_task(name)
    except ConfigError:
        task = "an unknown task"
    if task not in IMAGE_TASKS:
        raise CheckpointError(
            f"{source}: not an image segmentation model (model {name!r} does {task}); "
            "pass a run of an instance or panoptic config"
        )
    return Predictor.from_model(model, meta, device=device, **kwargs)


class AppLogic:
    """The app without its widgets: every method takes a session and returns a message for the user.

    Args:
        predictor: the automatic-instances model.
        segmenter: the click backend (``build_interactive(...)``).
        max_pixels: larger uploads are refused (None: :func:`read_image`'s default cap).
    """

    def __init__(self, predictor: Predictor, segmenter: InteractiveSegmenter, *,
                 max_pixels: int | None = None) -> None:
        self.predictor = predictor
        self.segmenter = segmenter
        self.max_pixels = max_pixels
        self.out_dir = Path(tempfile.mkdtemp(prefix="instaseg-gradio-"))
        weakref.finalize(self, shutil.rmtree, self.out_dir, True)  # at exit at the latest

    # ------------------------------------------------------------------ classes
    @property
    def class_choices(self) -> list[str]:
        """Names a clicked object can get (labels 1.. that map to a dataset category)."""
        return [n for i, n in enumerate(self.predictor.class_names)
                if i and self.predictor.category_id(i) >= 0]

    def class_name(self, label: int) -> str:
        """The predictor's name of ``label`` (the number when it has none)."""
        names = self.predictor.class_names
        return names[label] if 0 <= label < len(names) else str(label)

    def _label(self, name: str | None) -> int:
        names = self.predictor.class_names
        if name in names[1:]:
            return names.index(name, 1)
        return names.index(self.class_choices[0], 1) if self.class_choices else 1

    # ------------------------------------------------------------------ actions
    def load(self, session: AppSession, path: str | Path | None) -> str:
        """Read the image at ``path`` and find its instances; an unreadable file leaves the session
        empty and says why."""
        session.__dict__.update(AppSession(json_path=session.json_path).__dict__)
        if not path:
            return "Upload an image (JPEG, PNG, BMP, TIFF, WebP...)."
        name = Path(path).name
        try:
            image = read_image(path, max_pixels=self.max_pixels)
        except DataError as exc:
            return f"**{name}**: {exc.problem}. Upload another image."
        inst = self.predictor.predict(image)
        session.image, session.file_name = image, name
        session.objects = self._auto_objects(inst)
        n = len(session.objects)
        return (f"**{name}** ({image.shape[1]}x{image.shape[0]}): {n} instance{'s' * (n != 1)} found. "
                "Click the image to segment another object.")

    def _auto_objects(self, inst: Instances) -> list[AppObject]:
        h, w = inst.image_size
        label_of = {cid: label for label, cid in enumerate(self.predictor.category_ids)}
        out = []
        for row in instances_to_results(inst, 1, self.predictor.category_ids, self.predictor.mask_thresh):
            x, y, bw, bh = row["bbox"]
            rle = row.get("segmentation") or polygons_to_rle(xywh_to_polygon(row["bbox"]), h, w)
            out.append(AppObject(rle=rle, label=label_of[row["category_id"]], score=float(row["score"]),
                                 box=[x, y, x + bw, y + bh], source="auto"))
        return out

    def click(self, session: AppSession, x: float | None, y: float | None, positive: bool) -> str:
        """Add a click at pixel ``(x, y)`` and segment the object from all clicks so far; a click
        outside the image, or before an image, changes nothing."""
        if session.image is None:
            return "Upload an image first."
        h, w = session.image.shape[:2]
        label = 1 if positive else 0
        try:
            if x is None or y is None:
                raise ConfigError("clicks: a click needs both x and y")
            check_points(np.array([[x, y]], np.float64), np.array([label]), h, w)
        except ConfigError as exc:
            return f"{exc}; click ignored."
        clicks = [*session.clicks, (float(x), float(y), label)]
        points = np.array([c[:2] for c in clicks], np.float64)
        labels = np.array([c[2] for c in clicks], np.int64)
        mask, score = self.segmenter.segment(session.image, points, labels, prev_mask=session.mask)[0]
        session.clicks, session.mask, session.mask_score = clicks, np.asarray(mask, bool), float(score)
        area = int(session.mask.sum())
        kind = "positive" if positive else "negative"
        n = len(clicks)
        if not area:
            return f"{kind} click at ({x:g}, {y:g}): no object there yet; add a positive click on it."
        return (f"{kind} click at ({x:g}, {y:g}), {n} click{'s' * (n != 1)}: object of {area} pixels "
                f"(score {score:.2f}). **Add object** keeps it.")

    def reset(self, session: AppSession) -> str:
        """Forget the clicks and the object being segmented."""
        session.clicks, session.mask, session.mask_score = [], None, 0.0
        return "Clicks cleared." if session.image is not None else "Upload an image first."

    def add(self, session: AppSession, class_name: str | None) -> str:
        """Keep the object being segmented as an instance of ``class_name`` and start a new one."""
        if session.image is None:
            return "Upload an image first."
        if session.mask is None or not session.mask.any():
            return "No object to add: click on an object first."
        rle = rle_encode(session.mask)
        x, y, bw, bh = rle_boxes([rle])[0].tolist()
        label = self._label(class_name)
        session.objects.append(AppObject(rle=rle, label=label, score=round(session.mask_score, 4),
                                         box=[x, y, x + bw, y + bh], source="click"))
        self.reset(session)
        return (f"Added object {len(session.objects)} ({self.class_name(label)}); "
                "click to segment the next one.")

    # ------------------------------------------------------------------ outputs
    def overlay(self, session: AppSession) -> np.ndarray | None:
        """The image with its instances, the object being segmented (cyan) and its clicks (green
        positive, red negative): uint8 ``(H, W, 3)`` RGB, or None without an image."""
        if session.image is None:
            return None
        h, w = session.image.shape[:2]
        objs = session.objects
        names = [f"{k} {self.class_name(o.label)}" for k, o in enumerate(objs, start=1)]
        inst = Instances((h, w), boxes=torch.tensor([o.box for o in objs]).reshape(-1, 4),
                         labels=torch.zeros(len(objs), dtype=torch.int64),
                         scores=torch.tensor([o.score for o in objs]), rles=[o.rle for o in objs])
        out = draw_overlay(session.image, inst, names) if objs else session.image.copy()
        if session.mask is not None and session.mask.any():
            m = session.mask
            out[m] = (out[m] * 0.4 + CURRENT_COLOR * 0.6).astype(np.uint8)
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in CURRENT_COLOR), 2)
        radius = max(3, round(max(h, w) / 120))
        for x, y, label in session.clicks:
            cv2.circle(out, (round(x), round(y)), radius + 1, (255, 255, 255), -1)
            cv2.circle(out, (round(x), round(y)), radius, CLICK_COLORS[label], -1)
        return out

    def table(self, session: AppSession) -> list[list[Any]]:
        """One row per instance: id (1..), class, score, area (pixels), box, source."""
        areas = rle_areas([o.rle for o in session.objects]).tolist() if session.objects else []
        return [[k, self.class_name(o.label), round(o.score, 3), int(a),
                 ", ".join(f"{v:.0f}" for v in o.box), o.source]
                for k, (o, a) in enumerate(zip(session.objects, areas, strict=True), start=1)]

    def coco(self, session: AppSession) -> dict[str, Any]:
        """The session's instances as a COCO instances dict of one image (id 1)."""
        pred = self.predictor
        images, anns = [], []
        if session.image is not None:
            h, w = session.image.shape[:2]
            images.append({"id": 1, "file_name": session.file_name, "height": int(h), "width": int(w)})
        areas = rle_areas([o.rle for o in session.objects]).tolist() if session.objects else []
        for k, (o, area) in enumerate(zip(session.objects, areas, strict=True), start=1):
            x1, y1, x2, y2 = o.box
            anns.append({"id": k, "image_id": 1, "category_id": pred.category_id(o.label),
                         "segmentation": o.rle, "area": float(area),
                         "bbox": [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)], "iscrowd": 0,
                         "score": round(o.score, 5), "source": o.source})
        cats = [{"id": pred.category_id(i), "name": n, "supercategory": ""}
                for i, n in enumerate(pred.class_names) if i and pred.category_id(i) >= 0]
        info = {"description": f"instaseg gradio: model {pred.name}, clicks {self.segmenter.name}"}
        return {"info": info, "images": images, "annotations": anns, "categories": cats}

    def forget(self, session: AppSession) -> None:
        """Remove the session's files (gradio calls this when a browser session ends)."""
        if session.json_path:
            shutil.rmtree(Path(session.json_path).parent, ignore_errors=True)
            session.json_path = None

    def write_coco(self, session: AppSession) -> str | None:
        """Write :meth:`coco` to a fresh file (``<image stem>_coco.json``) and return its path; the
        session's previous file is removed. None without an image."""
        self.forget(session)
        if session.image is None:
            return None
        # A folder per file: the download keeps the image's name and sessions never share a file.
        path = Path(tempfile.mkdtemp(dir=self.out_dir)) / f"{Path(session.file_name).stem}_coco.json"
        with atomic_open(path, "w") as f:
            json.dump(self.coco(session), f)
        session.json_path = str(path)
        return session.json_path


def build_app(predictor: Predictor, segmenter: InteractiveSegmenter, *, title: str = "instaseg",
              max_pixels: int | None = None) -> Any:
    """The app as a ``gr.Blocks`` (call ``.launch()``; analytics are off and nothing is loaded from
    outside the page).

    API endpoints (for ``gradio_client``; a client keeps its session between calls):
    ``/instances`` (image file) -> (overlay, table, COCO JSON file, message);
    ``/click`` (x, y, mode in :data:`CLICK_MODES`) -> (overlay, current object, message), the current
    object being ``{"clicks", "score", "area", "segmentation"}`` (RLE) or None;
    ``/add_object`` (class name) and ``/reset_clicks`` () -> (overlay, table, COCO JSON file, current
    object, message).
    """
    import gradio as gr

    logic = AppLogic(predictor, segmenter, max_pixels=max_pixels)

    def current(session: AppSession) -> dict[str, Any] | None:
        if session.mask is None:
            return None
        return {"clicks": [list(c) for c in session.clicks], "score": round(session.mask_score, 4),
                "area": int(session.mask.sum()), "segmentation": rle_encode(session.mask)}

    def everything(session: AppSession, message: str) -> tuple[Any, ...]:
        return (logic.overlay(session), logic.table(session), logic.write_coco(session), current(session),
                message, session)

    def on_upload(path: str | None, session: AppSession) -> tuple[Any, ...]:
        message = logic.load(session, path)
        return everything(session, message)[:3] + (message, session)

    def on_click(x: float | None, y: float | None, mode: str, session: AppSession) -> tuple[Any, ...]:
        message = logic.click(session, x, y, mode != CLICK_MODES[1])
        return logic.overlay(session), current(session), message, session

    def on_select(mode: str, session: AppSession, evt: gr.SelectData) -> tuple[Any, ...]:
        x, y = (evt.index if isinstance(evt.index, list | tuple) else (None, None))[:2]
        return (x, y, *on_click(x, y, mode, session))

    # gradio finds the event-data argument by its annotation, which this module's postponed
    # annotations leave as a string it cannot resolve (gradio is imported here, not at module level).
    on_select.__annotations__["evt"] = gr.SelectData

    def on_add(class_name: str, session: AppSession) -> tuple[Any, ...]:
        return everything(session, logic.add(session, class_name))

    def on_reset(session: AppSession) -> tuple[Any, ...]:
        return everything(session, logic.reset(session))

    # Gradio's copies of uploads and outputs older than a day are removed every hour.
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        session = gr.State(AppSession(), delete_callback=logic.forget)
        gr.Markdown(f"## {title}: instance segmentation\nModel **{predictor.name}**, clicks by "
                    f"**{segmenter.name}**. Upload an image; click on the picture to segment one more "
                    "object.")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="upload")
                mode = gr.Radio(list(CLICK_MODES), value=CLICK_MODES[0], label="Click adds",
                                elem_id="click-mode")
                choices = logic.class_choices
                cls = gr.Dropdown(choices, value=choices[0] if choices else None,
                                  label="Class of an added object", elem_id="click-class")
                with gr.Row():
                    add = gr.Button("Add object", variant="primary", elem_id="add-object")
                    reset = gr.Button("Reset clicks", elem_id="reset-clicks")
                with gr.Accordion("Click by coordinates", open=False):
                    x_in = gr.Number(label="x (pixels)", precision=1, elem_id="click-x")
                    y_in = gr.Number(label="y (pixels)", precision=1, elem_id="click-y")
                    click_btn = gr.Button("Click here", elem_id="click-at")
                download = gr.DownloadButton("Download COCO JSON", elem_id="download-coco")
            with gr.Column(scale=2):
                message = gr.Markdown("Upload an image (JPEG, PNG, BMP, TIFF, WebP...).", elem_id="message")
                view = gr.Image(label="Instances (click to segment)", type="numpy", interactive=False,
                                format="png", elem_id="overlay")
        table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, label="Instances",
                             elem_id="instances")
        with gr.Accordion("Object being segmented (COCO RLE)", open=False):
            obj = gr.JSON(label="Current object", elem_id="current-object")

        # A new image (or none) also empties the panel of the object being clicked.
        upload.upload(on_upload, [upload, session], [view, table, download, message, session],
                      api_name="instances").then(lambda: None, None, obj, api_visibility="private")
        upload.clear(on_upload, [upload, session], [view, table, download, message, session],
                     api_visibility="private").then(lambda: None, None, obj, api_visibility="private")
        click_btn.click(on_click, [x_in, y_in, mode, session], [view, obj, message, session],
                        api_name="click")
        view.select(on_select, [mode, session], [x_in, y_in, view, obj, message, session],
                    api_visibility="private")
        everything_out = [view, table, download, obj, message, session]
        add.click(on_add, [cls, session], everything_out, api_name="add_object")
        reset.click(on_reset, [session], everything_out, api_name="reset_clicks")
    return app
