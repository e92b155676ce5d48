"""``instaseg gradio``: the app through ``gradio_client`` and in headless Chromium (Playwright), its
session logic without a server, and the command's bad inputs.

Needs the ``app`` extra (gradio, gradio_client; Playwright and Debian's ``chromium`` for the browser
test); real-image tests need INSTASEG_DATA (Penn-Fudan). The model is a randomly initialised
``maskrcnn_r18_slim`` with the score threshold at 0, so every image gets instances to show.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("gradio", reason="gradio is not installed (pip install 'instaseg[app]')")
pytest.importorskip("gradio_client", reason="gradio_client is not installed (pip install 'instaseg[app]')")

from instaseg.cli import main  # noqa: E402
from instaseg.ops.clicks import first_click  # noqa: E402
from instaseg.predict.interactive import ClickSegmenter  # noqa: E402
from instaseg.serve.gradio_app import (  # noqa: E402
    CLICK_MODES,
    TABLE_HEADERS,
    AppLogic,
    AppSession,
    build_app,
    load_image_predictor,
)
from instaseg.structures.masks import rle_decode  # noqa: E402
from tests.predict.test_predictor import _save_slim  # noqa: E402

IMAGE = "FudanPed00001"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gradio") / "slim.pt"
    _save_slim(path)
    return path


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return load_image_predictor(checkpoint, score_thresh=0.0, max_detections=5)


@pytest.fixture(scope="module")
def app_url(predictor):
    app = build_app(predictor, ClickSegmenter())
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False,
               ssr_mode=False, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def pedestrian(shared_data) -> tuple[Path, np.ndarray]:
    """A real Penn-Fudan image and the ground-truth mask of its first pedestrian."""
    root = shared_data
    ids = cv2.imread(str(root / "pennfudan" / "PedMasks" / f"{IMAGE}_mask.png"), cv2.IMREAD_UNCHANGED)
    return root / "pennfudan" / "PNGImages" / f"{IMAGE}.png", ids == 1


def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def test_instances_endpoint_on_a_real_image(app_url, pedestrian, predictor) -> None:
    from gradio_client import handle_file
    from pycocotools.coco import COCO

    image_path, _ = pedestrian
    image = cv2.imread(str(image_path))
    overlay, table, coco_path, message = _client(app_url).predict(handle_file(str(image_path)),
                                                                  api_name="/instances")
    assert f"{IMAGE}.png" in message and "5 instances found" in message
    drawn = cv2.imread(overlay)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)  # the instances are drawn
    assert table["headers"] == TABLE_HEADERS
    rows = table["data"]
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5] and {r[5] for r in rows} == {"auto"}
    assert all(r[1] in predictor.class_names[1:] for r in rows)
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)  # best first
    coco = COCO(coco_path)
    assert coco.getImgIds() == [1] and coco.imgs[1]["file_name"] == f"{IMAGE}.png"
    assert (coco.imgs[1]["height"], coco.imgs[1]["width"]) == image.shape[:2]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert len(anns) == len(rows)
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    for ann, row in zip(anns, rows, strict=True):
        mask = coco.annToMask(ann)
        assert mask.shape == image.shape[:2] and int(mask.sum()) == row[3] == ann["area"]
        assert names[ann["category_id"]] == row[1] and ann["score"] == pytest.approx(row[2], abs=1e-3)
        x, y, w, h = ann["bbox"]
        assert [float(v) for v in row[4].split(",")] == pytest.approx([x, y, x + w, y + h], abs=0.52)


def test_click_endpoint_segments_the_clicked_object(app_url, pedestrian) -> None:
    from gradio_client import handle_file

    image_path, gt = pedestrian
    client = _client(app_url)
    _, table, _, _ = client.predict(handle_file(str(image_path)), api_name="/instances")
    x, y, _ = first_click(gt)
    overlay, obj, message = client.predict(x, y, CLICK_MODES[0], api_name="/click")
    mask = rle_decode(obj["segmentation"])
    assert mask.shape == gt.shape and mask[y, x]  # the clicked pixel is in the object
    assert obj["area"] == int(mask.sum()) < mask.size // 2 and obj["clicks"] == [[x, y, 1]]
    assert "positive click" in message and f"{obj['area']} pixels" in message
    # A click outside the image changes nothing and says so.
    _, same, message = client.predict(gt.shape[1] + 5, 10, CLICK_MODES[0], api_name="/click")
    assert "outside" in message and "ignored" in message and same == obj
    # A negative click inside the object removes pixels around it.
    ys, xs = np.nonzero(mask)
    far = int(np.argmax((xs - x) ** 2 + (ys - y) ** 2))  # the object's pixel farthest from the click
    _, neg, message = client.predict(int(xs[far]), int(ys[far]), CLICK_MODES[1], api_name="/click")
    assert "negative click" in message and len(neg["clicks"]) == 2
    assert neg["clicks"][1][2] == 0 and not rle_decode(neg["segmentation"])[ys[far], xs[far]]
    # Reset forgets the clicks: the next click starts a new object.
    _, _, _, cleared, message = client.predict(api_name="/reset_clicks")
    assert cleared is None and message == "Clicks cleared."
    _, again, _ = client.predict(x, y, CLICK_MODES[0], api_name="/click")
    assert again["clicks"] == [[x, y, 1]] and rle_decode(again["segmentation"])[y, x]
    # Adding keeps the object: one more row and one more COCO annotation, with the clicked mask.
    _, table2, coco_path, cleared, message = client.predict("person", api_name="/add_object")
    assert cleared is None and "Added object 6" in message
    assert len(table2["data"]) == len(table["data"]) + 1 and table2["data"][-1][5] == "click"
    ann = json.loads(Path(coco_path).read_text())["annotations"][-1]
    assert ann["source"] == "click" and np.array_equal(rle_decode(ann["segmentation"]),
                                                       rle_decode(again["segmentation"]))


def test_bad_uploads_and_early_clicks_get_messages(app_url, tmp_path) -> None:
    from gradio_client import handle_file

    client = _client(app_url)
    _, obj, message = client.predict(10, 10, CLICK_MODES[0], api_name="/click")
    assert obj is None and message == "Upload an image first."
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    overlay, table, coco_path, message = client.predict(handle_file(str(broken)), api_name="/instances")
    assert overlay is None and coco_path is None and table["data"] in ([], [[]])
    assert message.startswith("**broken.jpg**") and "Upload another image" in message
    assert "Traceback" not in message


def test_logic_with_the_trained_click_backend(predictor, tmp_path) -> None:
    """The click model (here randomly initialised) gets its previous answer back on the next click."""
    from instaseg.engine.checkpoint import save_checkpoint
    from instaseg.models import get_model
    from instaseg.predict.interactive import build_interactive

    model = get_model("click_lite0", crop_size=64)
    ckpt = tmp_path / "click.pt"
    save_checkpoint({"model": model.state_dict(), "model_spec": {"name": "click_lite0",
                     "kwargs": {"crop_size": 64}}, "class_names": ["background", "object"]}, ckpt)
    segmenter = build_interactive(model_checkpoint=ckpt)
    calls = []
    real = segmenter.segment
    segmenter.segment = lambda *a, **kw: calls.append(kw.get("prev_mask")) or real(*a, **kw)
    logic = AppLogic(predictor, segmenter)
    session = AppSession()
    image = np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    cv2.imwrite(str(path), image)
    assert "**noise.png** (96x80)" in logic.load(session, path)
    logic.click(session, 40, 30, True)
    logic.click(session, 5, 5, False)
    assert calls[0] is None and calls[1] is not None and calls[1].shape == (80, 96)
    assert session.mask.shape == (80, 96) and len(session.clicks) == 2
    assert logic.reset(session) == "Clicks cleared." and session.mask is None and not session.clicks


def test_command_bad_checkpoints_are_one_line_errors(tmp_path, capsys, checkpoint) -> None:
    missing = tmp_path / "nope.pt"
    assert main(["gradio", "--checkpoint", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("instaseg: error:") and "nope.pt" in err and len(err.splitlines()) == 1
    from instaseg.engine.checkpoint import save_checkpoint
    from instaseg.models import get_model

    click = tmp_path / "click.pt"
    save_checkpoint({"model": get_model("click_lite0", crop_size=64).state_dict(),
                     "model_spec": {"name": "click_lite0", "kwargs": {"crop_size": 64}}}, click)
    assert main(["gradio", "--checkpoint", str(click)]) == 2
    err = capsys.readouterr().err.strip()
    assert "click.pt: not an image segmentation model" in err and len(err.splitlines()) == 1
    # An image model given as the click model is refused the same way.
    assert main(["gradio", "--checkpoint", str(checkpoint), "--click-checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not an interactive model" in err and len(err.splitlines()) == 1


def test_command_without_gradio_names_the_extra(monkeypatch, capsys, checkpoint) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["gradio", "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'instaseg[app]'" in err and len(err.splitlines()) == 1


def test_command_launches_offline(monkeypatch, capsys, checkpoint) -> None:
    import gradio as gr

    launched = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.append((self, kw)))
    assert main(["gradio", "--checkpoint", str(checkpoint), "--port", "7999", "--threads", "1"]) == 0
    (app, kw), = launched
    assert kw["share"] is False and kw["server_name"] == "127.0.0.1" and kw["server_port"] == 7999
    assert app.analytics_enabled is False
    assert "Gradio app at http://127.0.0.1:7999/" in capsys.readouterr().out


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_browser_upload_click_add_and_download(app_url, pedestrian, tmp_path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    image_path, gt = pedestrian
    x, y, _ = first_click(gt)
    outside: list[str] = []

    def only_local(route) -> None:  # the app must work with nothing but the local server
        if route.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
            page.route("**/*", only_local)
            page.goto(app_url)
            page.locator("#upload input[type=file]").set_input_files(str(image_path))
            message = page.locator("#message")
            message.get_by_text("instances found").wait_for(timeout=20_000)
            img = page.locator("#overlay img")
            img.wait_for()
            rows = page.locator("#instances [role=row]")  # the table's rows (not its hidden sizing row)
            assert rows.filter(has_text="auto").count() == 5
            before = img.get_attribute("src")
            box = img.bounding_box()
            nat_w, nat_h = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
            assert (nat_h, nat_w) == gt.shape
            img.click(position={"x": (x + 0.5) * box["width"] / nat_w,
                                "y": (y + 0.5) * box["height"] / nat_h})
            message.get_by_text("positive click").wait_for(timeout=20_000)
            # The page's click maps to the image's pixel (within the rounding of a scaled display).
            cx, cy = (int(v) for v in re.search(r"at \((\d+), (\d+)\)", message.inner_text()).groups())
            assert abs(cx - x) <= 1 and abs(cy - y) <= 1
            assert img.get_attribute("src") != before  # the object is drawn
            # Negative clicks: toggle the mode, click the background near the image's corner.
            page.locator("#click-mode").get_by_text("negative").click()
            img.click(position={"x": 4 * box["width"] / nat_w, "y": 4 * box["height"] / nat_h})
            message.get_by_text("negative click").wait_for(timeout=20_000)
            assert "2 clicks" in message.inner_text()
            page.locator("#add-object").click()
            message.get_by_text("Added object 6").wait_for(timeout=20_000)
            rows.filter(has_text="click").first.wait_for()
            assert rows.filter(has_text="auto").count() == 5 and rows.filter(has_text="click").count() == 1
            with page.expect_download() as info:
                page.locator("#download-coco").click()
            saved = tmp_path / "download.json"
            info.value.save_as(saved)
        finally:
            browser.close()
    coco = json.loads(saved.read_text())
    assert [a["source"] for a in coco["annotations"]] == ["auto"] * 5 + ["click"]
    assert rle_decode(coco["annotations"][-1]["segmentation"])[cy, cx]
    assert outside == []
