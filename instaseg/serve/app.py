"""The HTTP service: FastAPI app factory (tests use it through TestClient, no socket needed).

Endpoints: ``POST /segment`` (automatic instances), ``POST /segment_interactive`` (clicks/box ->
masks), ``GET /health``, ``GET /models``, the browser demo at ``/`` (static files, no CDN), and
FastAPI's OpenAPI docs at ``/docs``. Each request's CPU work (decoding, inference, mask encoding) runs
on one dedicated worker thread, never on the event loop, so ``/health`` stays responsive during long
requests; one worker (rather than a pool) keeps concurrent requests from fighting over the GIL and the
cores that the model's forward needs, so the service keeps up with calling the predictor directly.

Limits (:class:`ServiceLimits`): upload bytes (413, checked from Content-Length before the body is
read and again on the bytes received, so a chunked body without Content-Length is cut off at the limit
too), pixel count (413, read from the image header before decoding), non-image or corrupt uploads (400),
bad parameters and points outside the image (422).

Bounded queue: at most ``1 + max_queue`` POST requests are admitted at once (the one on the worker plus
those uploading or waiting for it). Beyond that the service answers 503 with a ``Retry-After`` header at
once, before the body is read, so memory stays bounded by ``(1 + max_queue) x max_upload_bytes`` however
many clients connect. GET endpoints (``/health``, ``/models``, the demo page) are never queued.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
import warnings
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instaseg.errors import ConfigError, InstasegError
from instaseg.serve.video_jobs import add_video_routes
from instaseg.structures.masks import rle_decode, rle_encode
from instaseg.structures.panoptic import segments_info
from instaseg.structures.paste import dense_masks_to_rles

STATIC_DIR = Path(__file__).parent / "static"


# Multipart framing around the file (boundaries, part headers, form fields) allowed on top of the
# upload limit when counting the bytes of a whole request body.
MULTIPART_SLACK = 64 * 1024
# A refused request with a body up to this size keeps its connection (the server drops the few bytes);
# a larger body, or one of unknown length, is refused with ``Connection: close`` instead of being read.
KEEP_ALIVE_BODY = 64 * 1024


@dataclass
class ServiceLimits:
    """Request limits: upload size in bytes, decoded pixel count, clicks per request, detections, and
    ``max_queue``: how many POST requests may wait (uploading or queued) behind the one being processed
    before new ones are answered 503 with ``Retry-After``."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_points: int = 64
    max_detections: int = 300
    max_queue: int = 8

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_points", "max_detections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ServiceLimits.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ConfigError(f"ServiceLimits.max_queue must be >= 0, got {self.max_queue}")


class WorkQueue:
    """Admission state shared by :class:`AdmissionControl` and the worker: how many POST requests are
    admitted (``active``, event-loop thread only) and a running mean of the worker's seconds per job,
    from which ``Retry-After`` is estimated."""

    def __init__(self, limits: ServiceLimits) -> None:
        self.limits = limits
        self.active = 0
        self.seconds_per_job = 1.0  # until the first job is measured

    def full(self) -> bool:
        return self.active >= 1 + self.limits.max_queue

    def record(self, seconds: float) -> None:
        """Fold one worker job's duration into the running mean (exponential, weight 0.2)."""
        self.seconds_per_job = 0.8 * self.seconds_per_job + 0.2 * seconds

    def retry_after(self) -> int:
        """Whole seconds until the queue has likely drained (1..120)."""
        return min(120, max(1, math.ceil(self.active * self.seconds_per_job)))


async def _send_json(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class AdmissionControl:
    """ASGI middleware in front of every POST: refuses an over-long Content-Length (413), refuses new
    work when the queue is full (503 + ``Retry-After``), both before any of the body is read, and cuts
    off a body (chunked or mis-declared) as soon as it passes the upload limit (413), dropping the rest.

    Refusals of bodies whose size is unknown or over ``KEEP_ALIVE_BODY`` carry ``Connection: close``
    so the server does not go on reading them."""

    def __init__(self, app: ASGIApp, queue: WorkQueue) -> None:
        self.app = app
        self.queue = queue

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        limit = self.queue.limits.max_upload_bytes
        cap = limit + MULTIPART_SLACK
        length = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > cap:
            detail = f"upload of {int(length)} bytes is over the {limit} byte limit"
            await _send_json(send, 413, detail, {"Connection": "close"})
            return
        if self.queue.full():
            waiting, retry = self.queue.active - 1, self.queue.retry_after()
            headers = {"Retry-After": str(retry)}
            if not length.isdigit() or int(length) > KEEP_ALIVE_BODY:
                headers["Connection"] = "close"  # don't read a large body just to drop it
            detail = (f"busy: {waiting} requests waiting behind the one in progress (queue limit "
                      f"{self.queue.limits.max_queue}); retry in {retry} s")
            await _send_json(send, 503, detail, headers)
            return

        received = 0
        too_large = False
        started = False

        async def guarded_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    too_large = True  # stop here: the app sees a disconnect, the client gets 413
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large and not started:
                return  # the app's answer to the cut-off body is replaced by the 413 below
            started = True
            await send(message)

        self.queue.active += 1
        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not too_large or started:
                raise
        finally:
            self.queue.active -= 1
        if too_large and not started:
            detail = f"upload body passed {cap} bytes, over the {limit} byte limit; the rest was not read"
            await _send_json(send, 413, detail, {"Connection": "close"})


def decode_upload(data: bytes, filename: str, max_pixels: int) -> np.ndarray:
    """Decode uploaded image bytes to ``(H, W, 3)`` uint8 RGB (EXIF orientation applied).

    Raises HTTPException 400 for empty/non-image/corrupt data and 413 for images over ``max_pixels``
    (checked from the header, before the pixels are decoded)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise HTTPException(400, f"upload {filename!r} is empty (0 bytes), expected an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise HTTPException(413, f"upload {filename!r} refused: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise HTTPException(
            400, f"upload {filename!r} is not a recognised image (JPEG, PNG, BMP, TIFF, WebP...)"
        ) from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise HTTPException(
                413, f"upload {filename!r} is {w}x{h} = {w * h / 1e6:.1f} MP, over the "
                f"{max_pixels / 1e6:g} MP limit",
            )
        try:
            im.load()
            im = ImageOps.exif_transpose(im) or im
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise HTTPException(400, f"upload {filename!r} is a corrupt or truncated image ({exc})") from None
    return np.ascontiguousarray(arr)


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a bool ``(H, W)`` mask as COCO polygons (flat ``[x1, y1, x2, y2, ...]``)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= 3:
            polys.append([float(v) for v in c.reshape(-1)])
    return polys


def _encode_mask(rle: dict[str, Any], fmt: str) -> dict[str, Any]:
    if fmt == "polygon":
        return {"polygons": mask_to_polygons(rle_decode(rle))}
    return {"rle": rle}


def _panoptic_response(predictor: Any, image: np.ndarray, score_thresh: float | None, fmt: str) -> dict:
    """``/segment?task=panoptic``: every segment (things and stuff) with its category, ``isthing``,
    ``score`` (things), ``area``, ``bbox`` XYWH and its mask (RLE or polygons); uncovered pixels are VOID."""
    start = time.perf_counter()
    result = predictor.predict_panoptic(image, score_thresh=score_thresh)
    names = predictor.category_names()
    segments = []
    for info in segments_info(result):
        rle = rle_encode(result.id_map == info["id"])
        segments.append({
            "id": info["id"], "category_id": info["category_id"],
            "category_name": names.get(info["category_id"], str(info["category_id"])),
            "isthing": bool(info["isthing"]), "score": round(info["score"], 5) if "score" in info else None,
            "area": info["area"], "bbox": info["bbox"], **_encode_mask(rle, fmt),
        })
    h, w = image.shape[:2]
    return {"image": {"width": w, "height": h}, "task": "panoptic", "segments": segments,
            "num_segments": len(segments), "num_things": sum(s["isthing"] for s in segments),
            "time_ms": round((time.perf_counter() - start) * 1000, 1)}


def _parse_points(text: str | None, field: str, w: int, h: int, limit: int) -> np.ndarray:
    """JSON ``[[x, y], ...]`` -> float ``(P, 2)``; 422 for bad JSON, bad shape or points off the image."""
    if text is None or not text.strip():
        return np.zeros((0, 2), dtype=np.float64)
    try:
        pts = np.asarray(json.loads(text), dtype=np.float64)
    except (ValueError, TypeError):
        raise HTTPException(422, f"{field}: expected JSON like [[x, y], ...], got {text[:80]!r}") from None
    if pts.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if pts.ndim == 1 and pts.shape[0] == 2:
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
        raise HTTPException(422, f"{field}: expected a list of [x, y] pairs, got {text[:80]!r}")
    if len(pts) > limit:
        raise HTTPException(422, f"{field}: at most {limit} points per request, got {len(pts)}")
    bad = (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
    if bad.any():
        x, y = pts[np.argmax(bad)]
        raise HTTPException(422, f"{field}: point ({x:g}, {y:g}) is outside the {w}x{h} image")
    return pts


def _parse_labelled_points(
    points: str | None, labels: str | None, w: int, h: int, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """SAM's ``point_coords``/``point_labels`` form: JSON ``[[x, y], ...]`` and ``[1, 0, ...]`` (1 =
    foreground, 0 = background) -> float ``(P, 2)`` and int64 ``(P,)``; 422 when they do not pair up."""
    pts = _parse_points(points, "points", w, h, limit)
    if labels is None or not labels.strip():
        if len(pts):
            raise HTTPException(422, "points: give labels too, e.g. [1, 0] (1 foreground, 0 background)")
        return pts, np.zeros(0, dtype=np.int64)
    try:
        lab = np.asarray(json.loads(labels))
    except (ValueError, TypeError):
        raise HTTPException(422, f"labels: expected JSON like [1, 0], got {labels[:80]!r}") from None
    lab = lab.reshape(-1)
    if len(lab) != len(pts):
        raise HTTPException(422, f"labels: {len(lab)} labels for {len(pts)} points")
    if not np.isin(lab, (0, 1)).all():
        raise HTTPException(422, f"labels: each must be 1 (foreground) or 0 (background): {labels[:80]!r}")
    return pts, lab.astype(np.int64)


def _parse_box(text: str | None, w: int, h: int) -> np.ndarray | None:
    if text is None or not text.strip():
        return None
    try:
        box = np.asarray(json.loads(text), dtype=np.float64).reshape(-1)
    except (ValueError, TypeError):
        raise HTTPException(422, f"box: expected JSON [x1, y1, x2, y2], got {text[:80]!r}") from None
    if box.shape != (4,) or not np.isfinite(box).all():
        raise HTTPException(422, f"box: expected [x1, y1, x2, y2], got {text[:80]!r}")
    if not (0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h):
        raise HTTPException(422, f"box: {box.tolist()} is not a non-empty box inside the {w}x{h} image")
    return box


def create_app(
    predictor: Any | None, interactive: Any | None = None, limits: ServiceLimits | None = None
) -> FastAPI:
    """The service app. ``predictor`` (a :class:`~instaseg.predict.predictor.Predictor`) serves
    ``/segment``; ``interactive`` (an :class:`~instaseg.serve.interactive.InteractiveSegmenter`) serves
    ``/segment_interactive``. Either may be ``None`` (its endpoint then answers 503)."""
    limits = limits or ServiceLimits()
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="instaseg-worker")
    queue = WorkQueue(limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        worker.shutdown(wait=False, cancel_futures=True)

    def timed(fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            queue.record(time.perf_counter() - start)

    async def on_worker(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(worker, timed, fn, *args)

    app = FastAPI(
        title="instaseg",
        description="Instance segmentation service: automatic instances and click-prompted masks.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.predictor = predictor
    app.state.interactive = interactive
    app.state.limits = limits
    app.state.queue = queue
    app.add_middleware(AdmissionControl, queue=queue)

    @app.exception_handler(InstasegError)
    async def _user_error(request: Request, exc: InstasegError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    async def _read_upload(file: UploadFile) -> tuple[bytes, str]:
        data = await file.read(limits.max_upload_bytes + 1)
        name = file.filename or "upload"
        if len(data) > limits.max_upload_bytes:
            raise HTTPException(413, f"upload {name!r} is over the {limits.max_upload_bytes} byte limit")
        return data, name

    @app.get("/health", summary="Liveness check")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queued": max(queue.active - 1, 0), "max_queue": limits.max_queue}

    @app.get("/models", summary="The loaded models, their classes and the service limits")
    async def models() -> dict[str, Any]:
        info: dict[str, Any] = {"limits": asdict(limits), "interactive": getattr(interactive, "name", None)}
        if predictor is not None:
            info["model"] = {
                "name": predictor.name,
                "class_names": predictor.class_names,
                "score_thresh": predictor.score_thresh,
                "max_detections": predictor.max_detections,
                "source": predictor.meta.get("path"),
                "task": "panoptic" if predictor.is_panoptic else "instance",
            }
        return info

    @app.post("/segment", summary="Detect and segment every instance in an image")
    async def segment(
        file: UploadFile = File(..., description="the image (JPEG, PNG, ...)"),
        score_thresh: float | None = Query(None, ge=0.0, le=1.0, description="keep score >= this"),
        max_detections: int | None = Query(None, ge=1, le=limits.max_detections),
        classes: str | None = Query(None, description="comma-separated class names or label ids"),
        format: Literal["rle", "polygon"] = Query("rle", description="mask encoding"),
        task: Literal["instance", "panoptic"] = Query("instance", description="instances, or every pixel"),
    ) -> JSONResponse:
        if predictor is None:
            raise HTTPException(503, "no instance-segmentation model is loaded (start with --checkpoint)")
        if task == "panoptic" and not predictor.is_panoptic:
            raise HTTPException(400, f"task=panoptic needs a panoptic model; {predictor.name} is not one")
        data, name = await _read_upload(file)
        if task == "panoptic":
            return JSONResponse(await on_worker(lambda: _panoptic_response(
                predictor, decode_upload(data, name, limits.max_pixels), score_thresh, format)))

        def work() -> dict[str, Any]:
            image = decode_upload(data, name, limits.max_pixels)
            start = time.perf_counter()
            out = predictor.predict(
                image, score_thresh=score_thresh, max_detections=max_detections, classes=classes
            )
            names = predictor.class_names_of(out)
            instances = []
            for k, rle in enumerate(out.to_rles(predictor.mask_thresh)):
                x1, y1, x2, y2 = (round(float(v), 2) for v in out.boxes[k])
                instances.append(
                    {
                        "id": k,
                        "label": int(out.labels[k]),
                        "class_name": names[k],
                        "score": round(float(out.scores[k]), 5),
                        "box": [x1, y1, x2, y2],
                        **_encode_mask(rle, format),
                    }
                )
            h, w = image.shape[:2]
            return {
                "image": {"width": w, "height": h},
                "instances": instances,
                "num_instances": len(instances),
                "time_ms": round((time.perf_counter() - start) * 1000, 1),
            }

        return JSONResponse(await on_worker(work))

    @app.post("/segment_interactive", summary="Segment the object indicated by clicks and/or a box")
    async def segment_interactive(
        file: UploadFile = File(..., description="the image"),
        foreground: str | None = Form(None, description="JSON [[x, y], ...] foreground clicks (pixels)"),
        background: str | None = Form(None, description="JSON [[x, y], ...] background clicks (pixels)"),
        points: str | None = Form(
            None, description="SAM's convention: JSON [[x, y], ...] clicks, with `labels`"
        ),
        labels: str | None = Form(None, description="JSON [1, 0, ...]: 1 foreground, 0 background"),
        box: str | None = Form(None, description="JSON [x1, y1, x2, y2] box around the object"),
        multimask: bool = Form(False, description="return several candidate masks"),
        format: Literal["rle", "polygon"] = Query("rle", description="mask encoding"),
    ) -> JSONResponse:
        if interactive is None:
            raise HTTPException(503, "interactive segmentation is not enabled on this server")
        data, name = await _read_upload(file)

        def work() -> dict[str, Any]:
            image = decode_upload(data, name, limits.max_pixels)
            h, w = image.shape[:2]
            fg = _parse_points(foreground, "foreground", w, h, limits.max_points)
            bg = _parse_points(background, "background", w, h, limits.max_points)
            sam_pts, sam_labels = _parse_labelled_points(points, labels, w, h, limits.max_points)
            fg = np.concatenate([fg, sam_pts[sam_labels == 1]])
            bg = np.concatenate([bg, sam_pts[sam_labels == 0]])
            prompt_box = _parse_box(box, w, h)
            if len(fg) == 0 and prompt_box is None:
                raise HTTPException(422, "give at least one foreground point or a box")
            clicks = np.concatenate([fg, bg])
            click_labels = np.concatenate([np.ones(len(fg), np.int64), np.zeros(len(bg), np.int64)])
            start = time.perf_counter()
            masks = []
            for mask, score in interactive.segment(image, clicks, click_labels, prompt_box, multimask):
                rle = dense_masks_to_rles(mask[None])[0]
                ys, xs = np.nonzero(mask)
                bbox = [0.0] * 4
                if len(xs):
                    bbox = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
                masks.append(
                    {"score": float(score), "area": int(len(xs)), "box": bbox, **_encode_mask(rle, format)}
                )
            return {
                "image": {"width": w, "height": h},
                "backend": interactive.name,
                "masks": masks,
                "time_ms": round((time.perf_counter() - start) * 1000, 1),
            }

        return JSONResponse(await on_worker(work))

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    add_video_routes(app, predictor, limits, lambda fn: worker.submit(timed, fn))  # /segment_video

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
