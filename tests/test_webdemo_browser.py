"""The web demo end to end: a real server on 127.0.0.1 serving the tiny XP, driven by headless Chromium.

Needs Debian's chromium + chromium-driver and the `selenium` package. Without them the test is skipped, except
under CI (CI=true), where they are installed and a skip would hide a broken setup.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf

from tests.helpers import PROJECT

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = PROJECT / "test-artifacts"
WAIT_S = 120  # upper bound of every wait: server start, page load, generation
DURATION = 3.0  # not the page's default (10 s): proves the slider value reaches the model
SEED = 5
DESCRIPTION = ("This is an instrumental lo-fi piece. A mellow electric piano plays over a soft drum loop. "
               "The atmosphere is calm and nostalgic.")

# Every <audio> element, including WaveSurfer's, which lives in a shadow root.
_FIND_AUDIO_JS = """
const found = [];
const walk = (root) => root.querySelectorAll('*').forEach((el) => {
  if (el.tagName === 'AUDIO' && el.currentSrc) found.push([el.currentSrc, el.duration, el.readyState]);
  if (el.shadowRoot) walk(el.shadowRoot);
});
walk(document);
return found;
"""

# The bytes behind an <audio> src (a blob: URL is only readable from inside the page), base64-encoded.
_FETCH_JS = """
const done = arguments[arguments.length - 1];
fetch(arguments[0]).then((r) => r.blob()).then((b) => {
  const reader = new FileReader();
  reader.onload = () => done(reader.result.split(',')[1]);
  reader.readAsDataURL(b);
}).catch((e) => done('ERROR ' + e));
"""


# Session scope + autouse: pytest sets it up before the session-scoped tiny XP, so a skip costs nothing.
@pytest.fixture(scope="session", autouse=True)
def browser_tools():
    """Skip (fail under CI) before any expensive fixture when the browser stack is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("python package selenium")
    if missing:
        reason = (f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver; "
                  "pip install selenium)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}: CI installs them, so their absence is a setup bug")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_xp, tmp_path_factory):
    """`python -m zalo_music.webdemo` serving the exported tiny XP; always stopped afterwards."""
    from zalo_music.export import export_xp

    tmp = tmp_path_factory.mktemp("webdemo")
    model = export_xp(tiny_xp["sig"], tmp / "tiny")
    port = _free_port()
    env = dict(os.environ, GRADIO_TEMP_DIR=str(tmp / "gradio"), GRADIO_ANALYTICS_ENABLED="False")
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "zalo_music.webdemo", "--model", str(model), "--port",
                             str(port), "--device", "cpu", "--out-dir", str(tmp / "out")],
                            cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"demo server exited ({proc.returncode}):\n"
                                     f"{(tmp / 'server.log').read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise AssertionError(f"demo server not up after {WAIT_S}s")
            time.sleep(0.5)
        yield {"url": url, "model": str(model), "out": tmp / "out", "log": tmp / "server.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture
def driver(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    # A closed network: no QUIC, no background/component/sync traffic, which would otherwise flood refusals.
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    drv.set_page_load_timeout(WAIT_S)
    drv.set_script_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def _set_number(drv, css: str, value: str) -> None:
    """Type into a Gradio number box; Tab commits it (Gradio updates on blur)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = drv.find_element(By.CSS_SELECTOR, css)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(value, Keys.TAB)


def _decoded_seconds(data: bytes) -> float:
    audio, sr = sf.read(io.BytesIO(data))
    assert sr == 32000 and audio.ndim == 1
    return len(audio) / sr


def test_generate_in_browser(server, driver):
    import base64

    from gradio_client import Client
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT_S)
    driver.get(server["url"])
    text = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#description textarea")))
    # Gradio fills the dropdown's <input> after hydration, which can come after the textarea is clickable
    # (seen on CI): wait for a value, then check it is the --model given on the command line.
    model = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#model input").get_attribute("value") or None)
    assert model == server["model"]
    text.send_keys(DESCRIPTION)
    _set_number(driver, "#duration input[type=number]", f"{DURATION:g}")
    _set_number(driver, "#seed input", str(SEED))
    assert driver.find_element(By.CSS_SELECTOR, "#duration input[type=range]").get_attribute("value") == "3"
    driver.find_element(By.CSS_SELECTOR, "#generate").click()

    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#info"), "Generated"))
    info = driver.find_element(By.CSS_SELECTOR, "#info").text
    assert f"seed {SEED}" in info and " s of audio in " in info  # the generation time is shown
    # The player has loaded the clip: an <audio> with a source whose duration the browser decoded.
    players = wait.until(lambda d: [a for a in d.execute_script(_FIND_AUDIO_JS) if a[2] >= 1] or None)
    src, browser_seconds, _ = players[0]
    assert abs(browser_seconds - DURATION) < 0.1

    # The file behind the download link, over HTTP from the same server.
    href = driver.find_element(By.CSS_SELECTOR, "#audio a.download-link").get_attribute("href")
    assert href.startswith(server["url"]) and href.endswith(".mp3")
    with urllib.request.urlopen(href, timeout=30) as r:
        served = r.read()
    assert abs(_decoded_seconds(served) - DURATION) < 0.1
    # ...is exactly what the player plays (its src may be a blob: copy, readable only from the page).
    played = driver.execute_async_script(_FETCH_JS, src)
    assert not played.startswith("ERROR"), played
    assert base64.b64decode(played) == served

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "webdemo.png"
    driver.find_element(By.CSS_SELECTOR, "#audio").location_once_scrolled_into_view  # noqa: B018
    assert driver.save_screenshot(str(shot))
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 800 and height >= 600

    # Same seed and options through the HTTP API: the very same bytes.
    client = Client(server["url"], verbose=False, download_files=False)
    again = client.predict(DESCRIPTION, server["model"], DURATION, 250, 1.0, 3.0, SEED, "mp3",
                           api_name="/generate")
    with urllib.request.urlopen(again[0]["url"], timeout=30) as r:
        assert r.read() == served
    # Everything the server wrote stays in its output folder (plus Gradio's cache in GRADIO_TEMP_DIR).
    assert len(list(server["out"].glob("demo-*.mp3"))) == 2
