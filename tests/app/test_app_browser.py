"""The dashboard end to end in headless Chromium: start a tiny run by clicking, watch it finish, visit every page."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("EM3_SCREENSHOT_DIR", "")) if os.environ.get("EM3_SCREENSHOT_DIR") else None

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    env = {**os.environ, "EM3_MLRUNS_DIR": str(tmp_path / "mlruns")}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.address", "127.0.0.1",
                             "--server.port", str(port), "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health", 90)
        yield f"http://127.0.0.1:{port}", tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}); "
                    "`apt-get install -y chromium chromium-driver` (.ci/run does it)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs the selenium package (requirements.txt)")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,2200"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _body(driver) -> str:
    return driver.find_element("tag name", "body").text


def _wait_text(driver, text: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in _body(driver):
            return
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not on the page after {timeout:.0f} s; page says:\n{_body(driver)[:2000]}")


def _click(driver, xpath: str, timeout: float = 60) -> None:
    """Click an element once it exists and is clickable (Streamlit renders progressively)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    deadline = time.time() + timeout
    while True:
        try:
            WebDriverWait(driver, max(deadline - time.time(), 1)).until(
                ec.element_to_be_clickable(("xpath", xpath))).click()
            return
        except StaleElementReferenceException:   # a rerun replaced it between the wait and the click
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def _idle(driver, timeout: float = 60) -> None:
    """Wait until the script run is over (Streamlit shows a status widget with 'Stop' while it runs)."""
    deadline = time.time() + timeout
    while time.time() < deadline and driver.find_elements("css selector", '[data-testid="stStatusWidget"]'):
        time.sleep(0.3)


def _scroll_to(driver, heading: str) -> None:
    """Scroll a heading to the top so the screenshot shows what is below it (best effort)."""
    # Find and scroll in one script: the live view reruns every second, so an element found by one
    # WebDriver call can be replaced (stale) before the next.
    driver.execute_script(
        "const h = document.evaluate(arguments[0], document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null)"
        ".singleNodeValue; if (h) h.scrollIntoView();",
        f"//*[self::h1 or self::h2 or self::h3][contains(., '{heading}')]")


def _shoot(driver, shots: Path, name: str) -> None:
    _idle(driver)
    time.sleep(1.5)   # let plotly and images finish drawing
    driver.save_screenshot(str(shots / f"{name}.png"))


def _wait_value(driver, label: str, value: str, timeout: float) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    deadline = time.time() + timeout
    while time.time() < deadline:
        boxes = driver.find_elements("css selector", f'input[aria-label="{label}"]')
        try:
            if boxes and boxes[0].get_attribute("value") == value:
                return
        except StaleElementReferenceException:   # a rerun replaced the input between find and read: look again
            pass
        time.sleep(0.3)
    raise AssertionError(f"input {label!r} never showed {value!r}")


def _set_number(driver, label: str, value: str) -> None:
    from selenium.webdriver.common.keys import Keys
    box = driver.find_element("css selector", f'input[aria-label="{label}"]')
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(value)
    box.send_keys(Keys.TAB)     # commit the value now (a rerun), not on the Start click's blur


def test_click_start_watch_it_finish_and_visit_every_page(server, browser, tmp_path):
    base, _ = server
    shots = SHOTS or tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    d = browser
    d.get(base)
    _wait_text(d, "Launch a run", 60)
    _click(d, "//label[.//p[text()='Synthetic tiny']]")
    _wait_value(d, "Epochs", "2", 30)          # the form now shows the tiny preset's defaults
    _set_number(d, "Epochs", "1")
    _set_number(d, "Max steps/epoch", "4")
    time.sleep(0.5)
    _idle(d, 120)               # on a loaded box the reruns of the edits can still be running
    _click(d, "//button[.//p[text()='Start']]")
    _wait_text(d, "Queued job", 120)
    _wait_text(d, "Training loss (live)", 600)   # first start: imports + feature cache; minutes on a busy 2-core box
    _scroll_to(d, "Queue")
    _idle(d, 5)
    _shoot(d, shots, "launch-live")
    _wait_text(d, "— finished", 600)
    assert "Open run" in _body(d)
    _scroll_to(d, "Queue")
    _shoot(d, shots, "launch-finished")

    expected = {"ablations": "No ablation groups yet", "runs": "Final metrics",
                "attention": "Share of this query's attention on the image",
                "alignment": "cosine(content, ID)", "recommendations": "Top-10 recommended"}
    for page, text in expected.items():
        d.get(f"{base}/{page}")
        _wait_text(d, text, 90)
        assert "Traceback" not in _body(d)
        _shoot(d, shots, page)
    d.get(base)                         # a refresh still shows the job: the registry outlives sessions
    _wait_text(d, "— finished", 30)
    if SHOTS is None and os.environ.get("EM3_KEEP_SCREENSHOTS"):
        shutil.copytree(shots, os.environ["EM3_KEEP_SCREENSHOTS"], dirs_exist_ok=True)
