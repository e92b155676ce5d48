"""``/segment?task=panoptic`` of the HTTP service with a panoptic checkpoint."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from instaseg.data.build import build_dataset
from instaseg.predict.predictor import Predictor
from instaseg.serve.app import create_app
from instaseg.structures.masks import polygons_to_mask, rle_decode
from tests.predict.test_panoptic_predict import SPEC, save_panoptic_checkpoint
from tests.serve.fakes import CLASS_NAMES, BlobModel


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_segment_panoptic_returns_every_segment(tmp_path: Path) -> None:
    save_panoptic_checkpoint(tmp_path / "pan.pt")
    predictor = Predictor.from_checkpoint(tmp_path / "pan.pt")
    image = build_dataset(SPEC, split="test").load_record(1).image
    expected = predictor.predict_panoptic(image)
    with TestClient(create_app(predictor, None)) as client:
        assert client.get("/models").json()["model"]["task"] == "panoptic"
        r = client.post("/segment?task=panoptic", files={"file": ("a.png", _png(image), "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        poly = client.post("/segment?task=panoptic&format=polygon",
                           files={"file": ("a.png", _png(image), "image/png")}).json()
        none = client.post("/segment?task=panoptic&score_thresh=1.0",
                           files={"file": ("a.png", _png(image), "image/png")}).json()
    assert body["task"] == "panoptic" and body["image"] == {"width": 96, "height": 96}
    segs = body["segments"]
    assert body["num_segments"] == len(segs) == len(expected.segments)
    assert {s["isthing"] for s in segs} == {True, False}
    names = {1: "circle", 2: "square", 3: "triangle", 4: "sky", 5: "grass", 6: "wall"}
    union = np.zeros((96, 96), int)
    for s, want in zip(segs, expected.segments, strict=True):
        mask = rle_decode(s["rle"])
        assert np.array_equal(mask, expected.id_map == want.id)
        assert s["category_id"] == want.category_id and s["category_name"] == names[want.category_id]
        assert s["isthing"] == want.isthing and (s["score"] is None) == (not want.isthing)
        assert s["area"] == int(mask.sum())
        union += mask
    assert union.max() == 1  # segments never overlap
    assert np.array_equal(union == 0, expected.id_map == 0)  # the rest is VOID
    big = max(poly["segments"], key=lambda s: s["area"])  # tiny fragments may have no polygon
    assert polygons_to_mask(big["polygons"], 96, 96).sum() > 0.5 * big["area"]
    assert none["num_things"] == 0 and none["num_segments"] >= 1


def test_segment_panoptic_needs_a_panoptic_model() -> None:
    with TestClient(create_app(Predictor(BlobModel(), CLASS_NAMES), None)) as client:
        r = client.post("/segment?task=panoptic",
                        files={"file": ("a.png", _png(np.zeros((32, 32, 3), np.uint8)), "image/png")})
        assert r.status_code == 400 and "needs a panoptic model" in r.json()["detail"]
        assert client.get("/models").json()["model"]["task"] == "instance"
