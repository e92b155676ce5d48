"""``instaseg annotate``: the session (edits, atomic saves, resume, lock, bad images), its HTTP API, the
command's one-line errors, and one end-to-end run in headless Chromium on real Penn-Fudan images."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from instaseg.cli import main
from instaseg.data.build import build_dataset
from instaseg.errors import ConfigError, DataError
from instaseg.predict.interactive import ClickSegmenter
from instaseg.predict.predictor import Predictor
from instaseg.serve.annotate import AnnotationSession, build_annotate_app
from instaseg.serve.annotate_store import lock_path, state_path
from instaseg.structures.masks import rle_decode
from tests.serve.fakes import CLASS_NAMES, BlobModel, blob_image

BOX = (60, 80, 100, 110)  # a blue box the (red-blob) model misses: x1, y1, x2, y2


def _image() -> np.ndarray:
    """blob_image's two red disks (the model's pre-labels) and a blue box to add by clicking."""
    img = blob_image()
    cv2.rectangle(img, BOX[:2], BOX[2:], (40, 60, 200), -1)
    return img


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Three blob images and one corrupt JPEG (sorted first, so the session must step over it)."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for k in range(3):
        cv2.imwrite(str(imgs / f"im{k}.png"), cv2.cvtColor(_image(), cv2.COLOR_RGB2BGR))
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return imgs


def _session(folder: Path, output: Path, model: BlobModel | None = None, **kw) -> AnnotationSession:
    predictor = Predictor(model or BlobModel(), CLASS_NAMES)
    return AnnotationSession(folder, output, predictor=predictor, interactive=ClickSegmenter(), **kw)


def _state(output: Path) -> dict:
    return json.loads(state_path(output).read_text())


def _mask(obj: dict) -> np.ndarray:
    return rle_decode(obj["rle"])


def test_prelabels_clicks_class_delete_undo_redo_each_saved(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ann.json"
    logged: list[str] = []
    s = _session(folder, out, log=logged.append)
    try:
        summary = s.summary()
        assert summary["progress"] == "0 of 3 done (1 skipped)" and summary["images"][0]["error"]
        assert logged == [m for m in s.messages if "broken.jpg" in m] and len(logged) == 1
        assert s.current == 1  # the first readable image
        view = s.open(1)
        assert sorted(o["category_id"] for o in view["objects"]) == [1, 2]  # the model's two blobs
        assert len(_state(out)["images"]["im0.png"]["objects"]) == 2  # pre-labels saved at once

        # a positive click with nothing selected adds an object covering the click
        view = s.click(1, 80.0, 95.0, category_id=2)
        new = next(o for o in view["objects"] if o["id"] == view["selected"])
        box = np.zeros((120, 160), bool)
        box[BOX[1] : BOX[3] + 1, BOX[0] : BOX[2] + 1] = True
        assert (_mask(new) == box).mean() > 0.99 and new["category_id"] == 2 and len(view["objects"]) == 3
        on_disk = _state(out)["images"]["im0.png"]["objects"]
        assert [o["id"] for o in on_disk] == [o["id"] for o in view["objects"]]
        # a negative click inside it corrects it: that pixel leaves the mask, the click stays
        nx, ny = 95, 105
        assert _mask(new)[ny, nx]
        view = s.click(1, float(nx), float(ny), positive=False, object_id=new["id"])
        fixed = next(o for o in view["objects"] if o["id"] == new["id"])
        assert not _mask(fixed)[ny, nx] and fixed["clicks"][-1] == [float(nx), float(ny), 0]
        # correcting a pre-label (no clicks of its own): its middle stands in for a positive click
        blob = next(o for o in view["objects"] if o["source"] == "model" and o["category_id"] == 1)
        view = s.click(1, 40.0, 50.0, object_id=blob["id"])
        edited = next(o for o in view["objects"] if o["id"] == blob["id"])
        assert edited["source"] == "edited" and len(edited["clicks"]) == 2 and _mask(edited)[50, 40]

        view = s.set_class(1, blob["id"], 2)
        assert next(o for o in view["objects"] if o["id"] == blob["id"])["category_id"] == 2
        view = s.delete(1, blob["id"])
        assert blob["id"] not in [o["id"] for o in view["objects"]]
        assert blob["id"] not in [o["id"] for o in _state(out)["images"]["im0.png"]["objects"]]
        view = s.undo(1)
        assert blob["id"] in [o["id"] for o in view["objects"]] and view["can_redo"]
        assert blob["id"] in [o["id"] for o in _state(out)["images"]["im0.png"]["objects"]]
        view = s.redo(1)
        assert blob["id"] not in [o["id"] for o in view["objects"]]
        for _ in range(5):
            view = s.undo(1)
        assert len(view["objects"]) == 2 and not view["can_undo"]  # back to the two pre-labels
        assert s.undo(1)["message"] == "nothing to undo"
    finally:
        s.close()


class _Recorder:
    """A click backend that answers a disk around the last positive click and records its inputs."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []

    def segment(self, image, points, point_labels, box=None, multimask=False, prev_mask=None):
        self.calls.append((np.asarray(points), np.asarray(point_labels), prev_mask))
        x, y = np.asarray(points)[np.asarray(point_labels) == 1][-1]
        mask = np.zeros(image.shape[:2], np.uint8)
        cv2.circle(mask, (int(x), int(y)), 6, 1, -1)
        return [(mask.astype(bool), 1.0)]


def test_the_backend_gets_every_click_and_the_previous_mask(folder: Path, tmp_path: Path) -> None:
    """What a click model (--click-checkpoint) needs to refine: all the object's clicks and its mask."""
    backend = _Recorder()
    s = AnnotationSession(folder, tmp_path / "a.json", predictor=Predictor(BlobModel(), CLASS_NAMES),
                          interactive=backend)
    try:
        view = s.open(1)
        blob = next(o for o in view["objects"] if o["category_id"] == 1)  # the big disk at (40, 50)
        view = s.click(1, 30.0, 50.0, positive=False, object_id=blob["id"])
        points, labels, prev = backend.calls[-1]
        assert (prev == _mask(blob)).all()
        assert labels.tolist() == [1, 0] and points[1].tolist() == [30.0, 50.0]
        assert np.hypot(*(points[0] - (40, 50))) <= 2  # the pre-label's middle as its positive click
        edited = next(o for o in view["objects"] if o["id"] == blob["id"])
        view = s.click(1, 100.0, 100.0, object_id=blob["id"])
        points, labels, prev = backend.calls[-1]
        assert labels.tolist() == [1, 0, 1] and (prev == _mask(edited)).all()
        assert s.click(1, 150.0, 10.0)["selected"] not in (blob["id"], None)  # nothing selected: new
        assert backend.calls[-1][2] is None and backend.calls[-1][1].tolist() == [1]
    finally:
        s.close()


def test_done_images_form_a_coco_file_the_dataset_code_reads(folder: Path, tmp_path: Path) -> None:
    for fmt in ("rle", "polygon"):
        out = tmp_path / f"ann_{fmt}.json"
        s = _session(folder, out, mask_format=fmt)
        view = s.open(2)
        s.click(2, 80.0, 95.0)
        s.open(1)  # opened, not done: stays out of the COCO file
        assert json.loads(out.read_text())["images"] == []
        view = s.set_done(2)
        s.close()
        coco = json.loads(out.read_text())
        assert [im["file_name"] for im in coco["images"]] == ["im1.png"]
        assert coco["info"]["images_done"] == 1 and coco["info"]["images_total"] == 3
        ds = build_dataset(f"coco:{out}:{folder}")
        rec = ds.load_record(0)
        assert rec.image.shape == (120, 160, 3) and len(rec.masks) == len(view["objects"]) == 3
        for got, obj in zip(rec.masks, view["objects"], strict=True):
            want = _mask(obj)
            iou = (got & want).sum() / (got | want).sum()
            assert iou == 1.0 if fmt == "rle" else iou > 0.8  # polygons are outlines of the mask
        assert ds.class_names == ["background", "blob", "other"]


def test_restart_resumes_where_the_user_stopped(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ann.json"
    model = BlobModel()
    s = _session(folder, out, model=model)
    view = s.open(2)
    s.delete(2, view["objects"][0]["id"])  # a deleted pre-label must not come back on restart
    s.set_done(2)
    s.open(3)
    s.click(3, 80.0, 95.0)
    before = _state(out)
    s.close()
    assert not lock_path(out).exists()

    (folder / "im2.png").rename(tmp_path / "im2.png")  # an image leaves the folder: its work is kept
    again = _session(folder, out, model=model, classes="blob,person")
    try:
        assert again.current == 1 and again.summary()["progress"] == "1 of 2 done (1 skipped)"
        assert any("1 annotated images are no longer in" in m for m in again.messages)
        calls = model.calls
        v2 = again.open(2)
        assert model.calls == calls  # already pre-labelled: the model is not run again
        assert [o["id"] for o in v2["objects"]] == [o["id"] for o in before["images"]["im1.png"]["objects"]]
        assert v2["done"] and [c["name"] for c in again.categories] == ["blob", "other", "person"]
        new = again.click(2, 80.0, 95.0)["selected"]
        assert new > max(o["id"] for o in before["images"]["im2.png"]["objects"])  # ids never repeat
        assert _state(out)["images"]["im2.png"] == before["images"]["im2.png"]  # lost image kept
    finally:
        again.close()
    (tmp_path / "im2.png").rename(folder / "im2.png")
    back = _session(folder, out, model=model)
    try:
        assert back.current == 2  # resumes on the image the user was on last (im1.png)
        assert all("broken.jpg" in m for m in back.messages)
        v3 = back.open(3)
        assert len(v3["objects"]) == 3 and not v3["done"] and model.calls == calls
    finally:
        back.close()
    # a state file edited into nonsense is refused with one line, not half-loaded
    good = state_path(out).read_text()
    broken = json.loads(good)
    broken["images"]["im1.png"]["objects"][0]["category_id"] = 99
    state_path(out).write_text(json.dumps(broken))
    bad = "ann.annotate.json: not an instaseg annotate state file: bad object in image 'im1.png'"
    with pytest.raises(DataError, match=bad):
        _session(folder, out, model=model)
    state_path(out).write_text(good)
    # without the state file, the COCO file is read back: its images count as done
    state_path(out).unlink()
    third = _session(folder, out, model=model)
    try:
        assert third.summary()["progress"] == "1 of 3 done (1 skipped)"
        assert len(third.open(2)["objects"]) == 2  # the pre-label kept and the object added after restart
    finally:
        third.close()


def test_a_failed_save_leaves_the_previous_files_whole(folder: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ann.json"
    s = _session(folder, out)
    try:
        s.open(1)
        s.set_done(1)
        saved_state, saved_coco = state_path(out).read_bytes(), out.read_bytes()

        def disk_full(fd: int) -> None:  # the new file is written, but cannot be flushed to disk
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("instaseg.fileio.os.fsync", disk_full)
        with pytest.raises(DataError, match="ann.annotate.json: cannot save .No space left on device.; the "
                           "last saved version is intact"):
            s.click(1, 80.0, 95.0)
        assert state_path(out).read_bytes() == saved_state and out.read_bytes() == saved_coco
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["imgs", "ann.json", "ann.annotate.json",
                                                                    "ann.json.lock"])
    finally:
        s.close()


def test_second_session_is_refused_and_a_stale_lock_taken_over(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ann.json"
    first = _session(folder, out)
    try:
        busy = rf"already open in another instaseg annotate \(PID {os.getpid()}\)"
        with pytest.raises(DataError, match=busy):
            _session(folder, out)
    finally:
        first.close()
    dead = _dead_pid()
    lock_path(out).write_text(f"{dead} {socket.gethostname()}\n")
    logged: list[str] = []
    s = _session(folder, out, log=logged.append)
    try:
        assert logged[0] == f"ann.json.lock: took over a stale lock of PID {dead}, which is not running"
        assert lock_path(out).read_text().split()[0] == str(os.getpid())
    finally:
        s.close()


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_bad_input_is_one_line(folder: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files"):
        _session(empty, tmp_path / "a.json")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_text("not a png")
    with pytest.raises(DataError, match=r"none of its 1 images can be read \(a.png: cannot read image"):
        _session(bad, tmp_path / "b.json")
    assert not lock_path(tmp_path / "b.json").exists()  # a refused start leaves no lock behind
    with pytest.raises(ConfigError, match="--format must be rle or polygon, got 'svg'"):
        _session(folder, tmp_path / "d.json", mask_format="svg")
    with pytest.raises(ConfigError, match="--output must be a .json file"):
        _session(folder, tmp_path / "d.txt")
    with pytest.raises(ConfigError, match="a class is named twice"):
        _session(folder, tmp_path / "d.json", classes="cat,dog,cat")
    s = _session(folder, tmp_path / "c.json")
    try:
        with pytest.raises(ConfigError, match=r"point \(160, 10\) is outside the 160x120 image"):
            s.click(1, 160.0, 10.0)
        with pytest.raises(ConfigError, match="negative click needs a selected object"):
            s.click(1, 10.0, 10.0, positive=False)
        with pytest.raises(ConfigError, match="unknown category id 7"):
            s.click(1, 40.0, 50.0, category_id=7)
        view = s.open(0)  # the corrupt image
        assert view["error"] and "skipped broken.jpg" in view["message"]
        with pytest.raises(DataError, match="broken.jpg"):
            s.set_done(0)
    finally:
        s.close()
    foreign = tmp_path / "foreign.json"
    image = {"id": 1, "file_name": "elsewhere.png", "height": 2, "width": 2}
    foreign.write_text(json.dumps({"images": [image], "annotations": [],
                                   "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(DataError, match="lists 1 images that are not in"):
        _session(folder, foreign)
    assert "elsewhere.png" in foreign.read_text()  # refused, not overwritten


def test_http_api(folder: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    s = _session(folder, tmp_path / "ann.json")
    try:
        with TestClient(build_annotate_app(s)) as client:
            page = client.get("/")
            assert page.status_code == 200 and "/static/annotate.js" in page.text
            assert client.get("/static/annotate.js").status_code == 200
            summary = client.get("/api/summary").json()
            assert summary["progress"] == "0 of 3 done (1 skipped)" and summary["current"] == 1
            view = client.get("/api/images/1").json()
            assert len(view["objects"]) == 2 and view["width"] == 160
            jpeg = client.get("/api/images/1/image.jpg")
            img = cv2.imdecode(np.frombuffer(jpeg.content, np.uint8), cv2.IMREAD_COLOR)
            assert jpeg.headers["content-type"] == "image/jpeg" and img.shape == (120, 160, 3)
            r = client.post("/api/images/1/click", json={"x": 80, "y": 95})
            assert r.status_code == 200 and _mask(r.json()["objects"][-1])[95, 80]
            oid = r.json()["selected"]
            r = client.post("/api/images/1/click", json={"x": 500, "y": 90, "positive": False,
                                                         "object_id": oid})
            assert r.status_code == 422 and r.json()["detail"] == (
                "clicks: point (500, 90) is outside the 160x120 image")
            r = client.post("/api/images/1/class", json={"object_id": oid, "category_id": 2})
            assert r.status_code == 200 and r.json()["objects"][-1]["category_id"] == 2
            assert client.post("/api/images/1/delete", json={"object_id": 999}).json()["detail"] == (
                "im0.png has no object 999")
            assert len(client.post("/api/images/1/undo").json()["objects"]) == 3
            assert client.post("/api/images/1/done", json={"done": True}).json()["done"] is True
            assert client.get("/api/summary").json()["progress"] == "1 of 3 done (1 skipped)"
            assert client.get("/api/images/0").json()["error"]  # corrupt: skipped, not a 500
            assert "broken.jpg" in client.get("/api/images/0/image.jpg").json()["detail"]
            assert client.get("/api/images/9").status_code == 422
    finally:
        s.close()


def test_command_errors_are_one_line(folder: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import torch
    import uvicorn

    from tests.predict.test_predictor import _save_slim

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["annotate", str(empty), "-o", str(tmp_path / "a.json"), "--classes", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("instaseg: error:") and "no image files" in err and len(err.splitlines()) == 1
    click = tmp_path / "click.pt"
    torch.save({"model": {}, "model_spec": {"name": "click_lite0", "kwargs": {}}}, click)
    assert main(["annotate", str(folder), "-o", str(tmp_path / "a.json"), "--checkpoint", str(click)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not an image instance-segmentation model" in err and "--click-checkpoint" in err
    assert len(err.splitlines()) == 1
    assert main(["annotate", str(folder), "-o", str(tmp_path / "a.json")]) == 2
    assert "no classes: give --classes" in capsys.readouterr().err

    _save_slim(tmp_path / "slim.pt")
    ran: list = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.append(kw))
    argv = ["annotate", str(folder), "-o", str(tmp_path / "a.json"), "-c", str(tmp_path / "slim.pt")]
    assert main([*argv, "--port", "8799"]) == 0 and ran[0]["port"] == 8799
    out = capsys.readouterr()
    assert "0 of 3 done (1 skipped)" in out.out and "skipped broken.jpg" in out.err
    assert not lock_path(tmp_path / "a.json").exists()  # released on exit
    held = _session(folder, tmp_path / "a.json")
    try:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "a.json: already open in another instaseg annotate" in err and len(err.splitlines()) == 1
    finally:
        held.close()


# ---------------------------------------------------------------- end to end in Chromium


def _browser_missing() -> str | None:
    if not shutil.which("chromium"):
        return "Debian's chromium is not installed (apt-get install -y chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (app extra)"
    return None


@pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))
def test_browser_click_fix_done_reload_on_pennfudan(shared_data: Path, tmp_path: Path) -> None:
    import torch
    import uvicorn
    from playwright.sync_api import sync_playwright

    from instaseg.data.io import read_mask
    from instaseg.ops.clicks import first_click
    from instaseg.serve.annotate_commands import load_prelabel_model
    from tests.predict.test_predictor import _save_slim

    src = shared_data / "pennfudan"
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for stem in ("FudanPed00001", "FudanPed00002"):
        (imgs / f"{stem}.png").symlink_to(src / "PNGImages" / f"{stem}.png")
    # truncated: its header reads, so it is found when the page reaches it (between the two)
    (imgs / "FudanPed00001b.png").write_bytes((src / "PNGImages" / "FudanPed00003.png").read_bytes()[:3000])
    gt = read_mask(src / "PedMasks" / "FudanPed00001_mask.png") == 1
    px, py, _ = first_click(gt)

    torch.manual_seed(0)
    _save_slim(tmp_path / "slim.pt")  # an untrained model: its pre-labels (if any) are noise
    out = tmp_path / "annotations.json"
    session = AnnotationSession(imgs, out, predictor=load_prelabel_model(tmp_path / "slim.pt", device="cpu",
                                                                          score_thresh=0.5),
                                interactive=ClickSegmenter(), classes="person")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_annotate_app(session), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.body.dataset.busy === '0'")
            assert page.text_content("#progress") == "0 of 3 done"
            assert "FudanPed00001.png" in page.text_content("#image-name")
            box = page.locator("#canvas").bounding_box()
            scale = box["width"] / gt.shape[1]

            def click(x: float, y: float, button: str = "left") -> None:
                with page.expect_response(lambda r: r.url.endswith("/click")) as resp:
                    page.mouse.click(box["x"] + (x + 0.5) * scale, box["y"] + (y + 0.5) * scale,
                                     button=button)
                assert resp.value.status == 200, resp.value.text()
                page.wait_for_function("document.body.dataset.busy === '0'")

            def clicked() -> dict:
                objects = _state(out)["images"]["FudanPed00001.png"]["objects"]
                return next(o for o in objects if o["source"] == "clicks")

            prelabels = page.locator("#objects li").count()
            click(px, py)  # a positive click on the pedestrian adds an object
            assert page.locator("#objects li").count() == prelabels + 1
            first = _mask(clicked())
            assert first[py, px]
            # fix it: a right click (negative) on the largest part of the mask that is not the person
            wrong = first & ~gt
            n, comp, stats, _ = cv2.connectedComponentsWithStats(wrong.astype(np.uint8))
            nx, ny, _ = first_click(comp == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])))
            click(nx, ny, button="right")
            fixed = _mask(clicked())
            assert fixed[py, px] and not fixed[ny, nx]
            for key, want in (("Control+z", first), ("Control+y", fixed)):  # undo, redo by keyboard
                with page.expect_response(lambda r: r.url.endswith(("/undo", "/redo"))):
                    page.keyboard.press(key)
                page.wait_for_function("document.body.dataset.busy === '0'")
                assert (_mask(clicked()) == want).all()
            page.keyboard.press("Enter")  # done: on to the next image; the truncated one is skipped
            page.wait_for_function("document.body.dataset.busy === '0' && "
                                   "document.getElementById('image-name').textContent.includes('00002')")
            assert "skipped FudanPed00001b.png: corrupt or truncated image" in page.text_content("#message")
            assert "FudanPed00002.png" in page.text_content("#image-name")
            page.reload()
            page.wait_for_function("document.body.dataset.busy === '0'")
            assert page.text_content("#progress") == "1 of 2 done (1 skipped)"
            assert "FudanPed00002.png" in page.text_content("#image-name")  # resumed on the next image
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
        session.close()
    coco = json.loads(out.read_text())
    (image,) = coco["images"]
    assert image["file_name"] == "FudanPed00001.png" and len(coco["annotations"]) == prelabels + 1
    ann = coco["annotations"][-1]  # the clicked object, after the pre-labels
    mask = rle_decode(ann["segmentation"])
    assert mask[py, px] and not mask[ny, nx]  # covers the clicked pixel, not the corrected one
    rec = build_dataset(f"coco:{out}:{imgs}").load_record(0)
    assert rec.masks.shape == (prelabels + 1, *gt.shape) and (rec.masks[-1] == mask).all()
