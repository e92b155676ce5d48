"""End-to-end demo test in headless Chromium (Selenium): upload, see instances, click, see a mask.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (/usr/bin/chromium, /usr/bin/chromedriver)
and the ``selenium`` Python package (dev extra); skips with the reason otherwise.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import pytest

from instaseg.predict.predictor import Predictor
from instaseg.serve.app import create_app
from instaseg.serve.interactive import ClickSegmenter
from tests.serve.fakes import CLASS_NAMES, BlobModel, blob_image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1200,900"]


def _requirements() -> str | None:
    if not Path(CHROMIUM).is_file():
        return "chromium is not installed (apt-get install -y chromium chromium-driver)"
    if not Path(CHROMEDRIVER).is_file():
        return "chromedriver is not installed (apt-get install -y chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


pytestmark = pytest.mark.skipif(_requirements() is not None, reason=str(_requirements()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server_url():
    import uvicorn

    app = create_app(Predictor(BlobModel(), CLASS_NAMES), ClickSegmenter())
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture()
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


PIXEL_JS = "const d = document.getElementById('canvas').getContext('2d').getImageData(arguments[0], arguments[1], 1, 1).data; return [d[0], d[1], d[2]];"  # noqa: E501


def test_upload_click_and_mask_is_drawn(server_url, browser, tmp_path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # Two red blobs for the automatic masks; the click targets the big one at (50, 60).
    image = blob_image(h=160, w=240, blobs=((60, 70, 32), (180, 50, 14)))
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    browser.get(server_url + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: "blob" in d.find_element(By.ID, "model-info").text)
    browser.find_element(By.ID, "file").send_keys(str(path))
    wait.until(lambda d: "instances" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "status").text.startswith("2 instances")
    items = browser.find_elements(By.CSS_SELECTOR, "#instances li")
    assert [li.text for li in items] == ["blob 0.90", "other 0.70"]
    canvas = browser.find_element(By.ID, "canvas")
    assert (canvas.get_attribute("width"), canvas.get_attribute("height")) == ("240", "160")
    # Automatic masks are drawn: the blob centre is no longer the plain red of the image.
    assert browser.execute_script(PIXEL_JS, 60, 70) != [220, 30, 30]

    # Hide automatic masks so only the interactive mask tints the canvas.
    browser.find_element(By.ID, "show-auto").click()
    before = browser.execute_script(PIXEL_JS, 75, 70)
    assert before == [220, 30, 30]
    # Left click = foreground (Selenium offsets are from the element's centre).
    ActionChains(browser).move_to_element_with_offset(canvas, 60 - 120, 70 - 80).click().perform()
    result = browser.find_element(By.ID, "interactive-result")
    wait.until(lambda d: int(result.get_attribute("data-area")) > 0)
    area = int(result.get_attribute("data-area"))
    assert 0.7 * 3.1416 * 32**2 < area < 1.3 * 3.1416 * 32**2, area
    assert "Mask:" in result.text
    after = browser.execute_script(PIXEL_JS, 75, 70)
    assert after != before and after[2] > before[2] + 40  # tinted by the cyan-blue mask overlay
    outside = browser.execute_script(PIXEL_JS, 150, 140)
    assert abs(outside[2] - outside[0]) < 60  # background stays grey

    # Right click = background; the mask is requested again and still found.
    ActionChains(browser).move_to_element_with_offset(canvas, 150 - 120, 140 - 80).context_click().perform()
    wait.until(lambda d: "Segmenting" not in result.text)
    assert int(result.get_attribute("data-area")) > 0
