"""The HTTP service through TestClient: endpoints, formats, limits, errors, responsiveness."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from instaseg.errors import ConfigError
from instaseg.predict.predictor import Predictor
from instaseg.serve.app import ServiceLimits, create_app
from instaseg.serve.interactive import ClickSegmenter
from instaseg.structures.masks import polygons_to_mask, rle_decode
from tests.serve.fakes import CLASS_NAMES, BlobModel, blob_image, disk_mask


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture()
def client() -> TestClient:
    app = create_app(Predictor(BlobModel(), CLASS_NAMES), ClickSegmenter(),
                     ServiceLimits(max_upload_bytes=200_000, max_pixels=300 * 300))
    with TestClient(app) as c:
        yield c


def test_health_models_and_docs(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "queued": 0, "max_queue": 8}
    info = client.get("/models").json()
    assert info["model"]["class_names"] == CLASS_NAMES and info["interactive"] == "grabcut"
    assert info["limits"]["max_pixels"] == 90_000
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/segment", "/segment_interactive", "/health", "/models"} <= set(paths)
    assert client.get("/docs").status_code == 200


def test_segment_rle_and_polygons(client: TestClient) -> None:
    files = {"file": ("blobs.png", _png(blob_image()), "image/png")}
    body = client.post("/segment", files=files).json()
    assert body["image"] == {"width": 160, "height": 120} and body["num_instances"] == 2
    first = body["instances"][0]
    assert first["class_name"] == "blob" and first["label"] == 1 and first["score"] == pytest.approx(0.9)
    assert _iou(rle_decode(first["rle"]), disk_mask(120, 160, 40, 50, 18)) > 0.85
    x1, y1, x2, y2 = first["box"]
    assert 20 <= x1 < x2 <= 60 and 30 <= y1 < y2 <= 70

    body = client.post("/segment", files=files, params={"format": "polygon", "classes": "other"}).json()
    (inst,) = body["instances"]
    assert "rle" not in inst and inst["class_name"] == "other"
    assert _iou(polygons_to_mask(inst["polygons"], 120, 160), disk_mask(120, 160, 115, 60, 12)) > 0.8

    body = client.post("/segment", files=files, params={"score_thresh": 0.8}).json()
    assert body["num_instances"] == 1


@pytest.mark.parametrize(
    ("params", "fragment"),
    [({"score_thresh": 3}, "score_thresh"), ({"format": "mask"}, "format"),
     ({"max_detections": 0}, "max_detections"), ({"classes": "cat"}, "unknown class 'cat'")],
)
def test_segment_bad_query_is_422(client: TestClient, params: dict, fragment: str) -> None:
    files = {"file": ("blobs.png", _png(blob_image()), "image/png")}
    r = client.post("/segment", files=files, params=params)
    assert r.status_code == 422 and fragment in json.dumps(r.json())


def test_upload_limits_and_bad_images(client: TestClient) -> None:
    big = np.random.default_rng(0).integers(0, 255, (250, 250, 3)).astype(np.uint8)  # ~190 kB PNG noise
    r = client.post("/segment", files={"file": ("big.png", _png(np.tile(big, (2, 2, 1))), "image/png")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    wide = np.zeros((10, 10_000, 3), np.uint8)  # small file, too many pixels
    r = client.post("/segment", files={"file": ("wide.png", _png(wide), "image/png")})
    assert r.status_code == 413 and "10000x10" in r.json()["detail"] and "MP limit" in r.json()["detail"]
    r = client.post("/segment", files={"file": ("notes.txt", b"hello, not an image", "text/plain")})
    assert r.status_code == 400 and "'notes.txt' is not a recognised image" in r.json()["detail"]
    r = client.post("/segment", files={"file": ("cut.png", _png(blob_image())[:300], "image/png")})
    assert r.status_code == 400 and "cut.png" in r.json()["detail"]
    r = client.post("/segment", files={"file": ("empty.png", b"", "image/png")})
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    assert client.post("/segment").status_code == 422  # no file at all


def test_segment_interactive_click_finds_the_object(client: TestClient) -> None:
    image = blob_image(blobs=((70, 60, 30),))
    files = {"file": ("one.png", _png(image), "image/png")}
    r = client.post("/segment_interactive", files=files, data={"foreground": "[[70, 60]]"})
    assert r.status_code == 200, r.text
    body = r.json()
    (mask,) = body["masks"]
    assert body["backend"] == "grabcut" and 0.0 <= mask["score"] <= 1.0
    assert _iou(rle_decode(mask["rle"]), disk_mask(120, 160, 70, 60, 30)) > 0.8
    r = client.post(
        "/segment_interactive", files=files, params={"format": "polygon"},
        data={"foreground": "[[70, 60]]", "background": "[[5, 5]]", "box": "[30, 20, 110, 100]",
              "multimask": "true"},
    )
    masks = r.json()["masks"]
    assert len(masks) >= 2 and masks[0]["score"] >= masks[-1]["score"]
    assert _iou(polygons_to_mask(masks[0]["polygons"], 120, 160), disk_mask(120, 160, 70, 60, 30)) > 0.8
    # SAM's convention (points + labels) gives the same answer as foreground/background.
    sam = client.post(
        "/segment_interactive", files=files, data={"points": "[[70, 60], [5, 5]]", "labels": "[1, 0]"}
    )
    ours = client.post(
        "/segment_interactive", files=files, data={"foreground": "[[70, 60]]", "background": "[[5, 5]]"}
    )
    assert sam.status_code == 200, sam.text
    assert sam.json()["masks"][0]["rle"] == ours.json()["masks"][0]["rle"]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [({"foreground": "[[170, 10]]"}, "outside the 160x120 image"),
     ({"foreground": "[[10, -1]]"}, "outside"),
     ({"foreground": "[[10, 10]]", "background": "[[0, 120]]"}, "background: point (0, 120) is outside"),
     ({"foreground": "[[1, 2, 3]]"}, "pairs"),
     ({"foreground": "not json"}, "expected JSON"),
     ({"background": "[[5, 5]]"}, "at least one foreground point or a box"),
     ({"box": "[50, 50, 40, 60]"}, "not a non-empty box"),
     ({"points": "[[10, 10]]"}, "give labels too"),
     ({"points": "[[10, 10], [20, 20]]", "labels": "[1]"}, "1 labels for 2 points"),
     ({"points": "[[10, 10]]", "labels": "[2]"}, "must be 1 (foreground) or 0"),
     ({"points": "[[10, 10]]", "labels": "[0]"}, "at least one foreground point")],
)
def test_segment_interactive_bad_prompts_are_422(client: TestClient, data: dict, fragment: str) -> None:
    files = {"file": ("blobs.png", _png(blob_image()), "image/png")}
    r = client.post("/segment_interactive", files=files, data=data)
    assert r.status_code == 422 and fragment in r.json()["detail"]


def test_missing_backends_answer_503() -> None:
    with TestClient(create_app(None, None)) as c:
        files = {"file": ("blobs.png", _png(blob_image()), "image/png")}
        assert c.post("/segment", files=files).status_code == 503
        assert c.post("/segment_interactive", files=files, data={"foreground": "[[1, 1]]"}).status_code == 503
        assert c.get("/models").json()["interactive"] is None


def test_health_stays_responsive_during_a_slow_inference() -> None:
    model = BlobModel(delay=1.5)
    app = create_app(Predictor(model, CLASS_NAMES), None)
    files = {"file": ("blobs.png", _png(blob_image()), "image/png")}
    with TestClient(app) as c:  # one event loop shared by both requests
        done = threading.Event()
        slow = threading.Thread(target=lambda: (c.post("/segment", files=files), done.set()))
        slow.start()
        assert model.started.wait(10), "the slow request never reached the model"
        t0 = time.perf_counter()
        assert c.get("/health").status_code == 200
        elapsed = time.perf_counter() - t0
        assert not done.is_set(), "health answered only after the inference finished"
        assert elapsed < 1.0
        slow.join(10)
        assert done.is_set()


def test_demo_page_is_served_without_external_resources(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    for asset in ("/static/demo.js", "/static/demo.css"):
        text = client.get(asset).text
        assert client.get(asset).status_code == 200
        assert "http://" not in text and "https://" not in text
    assert "https://" not in page.text and "http://" not in page.text


def test_jpeg_with_exif_rotation_is_upright(client: TestClient) -> None:
    image = blob_image(blobs=((40, 50, 18),))
    rotated = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)  # stored sideways, EXIF says rotate back
    im = Image.fromarray(rotated)
    exif = im.getexif()
    exif[0x0112] = 8  # "rotate 90 CW to view" -> Pillow's exif_transpose undoes our rotation
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif, quality=95)
    body = client.post("/segment", files={"file": ("r.jpg", buf.getvalue(), "image/jpeg")}).json()
    assert body["image"] == {"width": 160, "height": 120}


def test_full_queue_answers_503_with_retry_after_without_reading_the_body() -> None:
    model = BlobModel(delay=1.0)
    app = create_app(Predictor(model, CLASS_NAMES), None, ServiceLimits(max_queue=0))
    png = _png(blob_image())
    consumed: list[int] = []

    def body() -> Iterator[bytes]:
        consumed.append(1)
        yield b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.png\"\r\n\r\n"
        yield png + b"\r\n--xx--\r\n"

    with TestClient(app) as c:
        first: list[int] = []
        files = {"file": ("b.png", png, "image/png")}
        busy = threading.Thread(target=lambda: first.append(c.post("/segment", files=files).status_code))
        busy.start()
        assert model.started.wait(10), "the first request never reached the model"
        r = c.post("/segment", content=body(), headers={"content-type": "multipart/form-data; boundary=xx"})
        retry = r.headers["retry-after"]
        assert r.status_code == 503
        expected = f"busy: 0 requests waiting behind the one in progress (queue limit 0); retry in {retry} s"
        assert r.json()["detail"] == expected
        assert int(retry) >= 1 and r.headers["connection"] == "close"
        assert consumed == [], "the refused request's body was read"
        assert c.get("/health").json() == {"status": "ok", "queued": 0, "max_queue": 0}
        busy.join(10)
        assert first == [200]
        # The slot is free again: the same chunked request is now admitted and served.
        r = c.post("/segment", content=body(), headers={"content-type": "multipart/form-data; boundary=xx"})
        assert r.status_code == 200 and r.json()["num_instances"] == 2 and consumed == [1]


def test_chunked_body_over_the_upload_limit_is_413(client: TestClient) -> None:
    def body() -> Iterator[bytes]:
        yield b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.png\"\r\n\r\n"
        for _ in range(5):
            yield b"\0" * 65536  # 320 kB > 200 kB + multipart slack

    r = client.post("/segment", content=body(), headers={"content-type": "multipart/form-data; boundary=xx"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and "over the 200000 byte limit" in r.json()["detail"]
    assert r.headers["connection"] == "close"
    assert client.get("/health").json()["queued"] == 0
    files = {"file": ("blobs.png", _png(blob_image()), "image/png")}
    assert client.post("/segment", files=files).status_code == 200  # the admission slot was released


@pytest.mark.parametrize("field", ["max_queue", "max_upload_bytes", "max_pixels"])
def test_service_limits_reject_bad_values(field: str) -> None:
    with pytest.raises(ConfigError, match=f"ServiceLimits.{field} must be >= "):
        ServiceLimits(**{field: -1})
