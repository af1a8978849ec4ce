"""The dashboard end to end in headless Chromium: click Start, watch the run finish, visit every page.

Two paths: a tiny run cut to a few steps (every page renders with a finished run), and the first
ten minutes of a new user on the defaults (the demo preset, arm em3, a cold feature cache), whose
pages must show the trained run's content. Timings are printed (and written next to the
screenshots), never asserted: they go to docs/RESULTS.md.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
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
MAKE_RUN_S: dict[str, float] = {}   # what `make run` did before the server started (new_user_server)


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


@contextmanager
def _serve(tmp_path: Path, **env_extra: str):
    """Streamlit on a free port with its MLflow store (and whatever env_extra sets) under tmp_path."""
    port = _free_port()
    env = {**os.environ, "EM3_MLRUNS_DIR": str(tmp_path / "mlruns"), **env_extra}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "app.serve", "--server.address", "127.0.0.1",   # as `make run`
                             "--server.port", str(port), "--server.headless", "true",
                             "--browser.gatherUsageStats", "false",
                             # no file watcher: an edit of app/ during a long run (another session's commit) made
                             # Streamlit re-key st.cache_resource, so the page lost the job registry mid-run
                             "--server.fileWatcherType", "none"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
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
def server(tmp_path):
    with _serve(tmp_path) as served:
        yield served


def new_user_env(tmp_path: Path) -> dict[str, str]:
    """What `make run` leaves a new user before the server starts: a new feature cache (EM3_CACHE_DIR in tmp)
    holding only the demo data's, built now; plus the start-up warm-up the suite otherwise turns off
    (tests/conftest.py). Returns the server's extra environment."""
    env = {"EM3_CACHE_DIR": str(tmp_path / "features"), "EM3_WARM_DEMO": "1"}
    subprocess.run([sys.executable, "-m", "em3", "data", "--source", "synthetic", "--preset", "demo",
                    "--build-cache"], cwd=REPO, env={**os.environ, **env}, check=True, capture_output=True)
    return env


@pytest.fixture
def new_user_server(tmp_path):
    """A server as a new user meets it after `make run`: an empty store and new_user_env's cache."""
    t0 = time.time()
    env = new_user_env(tmp_path)
    MAKE_RUN_S["demo_cache_s"] = round(time.time() - t0, 1)
    with _serve(tmp_path, **env) as served:
        yield served


def new_driver():
    """Headless Debian Chromium through selenium, the window the screenshots are taken at."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,2200"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.fixture
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}); "
                    "`apt-get install -y chromium chromium-driver` (.ci/run does it)")
    pytest.importorskip("selenium.webdriver", reason="needs the selenium package (requirements.txt)")
    driver = new_driver()
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
    # Find and scroll in one script: the live view reruns every 2 s, so an element found by one
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


def _set_number(driver, label: str, value: str, timeout: float = 30) -> None:
    """Type `value` into the number input and commit it; again if a rerun replaced the input meanwhile (the
    previous input's rerun can: seen once in a fresh clone's three-browser test) or dropped the value."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.keys import Keys
    deadline = time.time() + timeout
    while True:
        try:
            box = driver.find_element("css selector", f'input[aria-label="{label}"]')
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(value)
            box.send_keys(Keys.TAB)     # commit the value now (a rerun), not on the Start click's blur
            _wait_value(driver, label, value, 5)
            return
        except (StaleElementReferenceException, AssertionError):
            if time.time() > deadline:
                raise
            time.sleep(0.3)


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
                "attention": "Share of this query's attention: image",
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


def _wait_finished(driver, timeout: float) -> None:
    """Wait for the newest job card to say finished; fail at once (with the page text) if it failed or was cancelled."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        # textContent, not WebElement.text: the latter lays out and walks the whole page for visibility, every
        # poll, on the cores the run trains on, and made a watched run look far slower than a user's browser does
        body = driver.execute_script("return document.body.textContent")
        if "— finished" in body:
            return
        for bad in ("— failed", "— cancelled"):
            if bad in body:
                raise AssertionError(f"the run ended {bad[2:]}; page says:\n{_body(driver)[:3000]}")
        time.sleep(2)
    raise AssertionError(f"the run did not finish within {timeout:.0f} s; page says:\n{_body(driver)[:2000]}")


def _no_exception(driver) -> None:
    boxes = driver.find_elements("css selector", '[data-testid="stException"]')
    assert not boxes, f"exception box on the page: {boxes[0].text[:2000]}"
    assert "Traceback" not in _body(driver)


def _count(driver, css: str) -> int:
    return len(driver.find_elements("css selector", css))


def _table_after(driver, heading: str) -> str:
    """Text of the first st.dataframe below a heading (cells are drawn on a canvas; the grid keeps an accessible copy)."""
    return driver.execute_script(
        "const n = document.evaluate(arguments[0], document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null)"
        ".singleNodeValue; return n ? n.textContent : '';",
        f"//*[self::h1 or self::h2 or self::h3][contains(., '{heading}')]/following::*[@data-testid='stDataFrame'][1]")


def _wait_table_after(driver, heading: str, timeout: float) -> str:
    """_table_after once the grid has drawn its cells (the heading can appear a moment before the table)."""
    end = time.time() + timeout
    text = _table_after(driver, heading)
    while not text.strip() and time.time() < end:
        time.sleep(0.5)
        text = _table_after(driver, heading)
    return text


def _user_with_hits(root: Path) -> tuple[str, int]:
    """(user id, hits) of the exported user with most top-K hits in their test period that typing its id selects.

    The page's search keeps users whose id contains the typed text, in export order, and shows the first:
    only a user whose id is in no earlier user's id can be picked that way.
    """
    from mlflow.tracking import MlflowClient

    from em3.config import from_dict
    from em3.data.load import load_dataset
    from em3.data.samples import build_samples
    from em3.evaluation.views_user import test_period, user_index

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    run = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1)[0]
    art = Path(run.info.artifact_uri.removeprefix("file://"))
    recs = json.loads((art / "explain" / "recommendations.json").read_text())
    cfg = from_dict(json.loads((art / "config.json").read_text()))
    samples = build_samples(load_dataset(cfg.data), cfg.data)
    best = (next(iter(recs)), 0)
    for k, (user, top) in enumerate(recs.items()):
        if any(user in earlier for earlier in list(recs)[:k]):
            continue
        hits = len({int(i) for i, _ in top} & test_period(samples, user_index(samples, int(user)))[1])
        if hits > best[1]:
            best = (user, hits)
    return best


def test_first_ten_minutes_on_the_demo_defaults(new_user_server, browser, tmp_path):
    """A new user: open Launch, press Start on the defaults (demo, em3), wait, then look at every page for that run."""
    from em3.config import preset
    base, root = new_user_server
    shots = SHOTS or tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    d = browser
    d.get(base)
    _wait_text(d, "Launch a run", 60)
    _wait_value(d, "Epochs", str(preset("demo").train.epochs), 60)   # the defaults: the demo preset's
    _idle(d, 120)
    clicked = time.time()
    _click(d, "//button[.//p[text()='Start']]")
    _wait_text(d, "Queued job", 120)
    assert "synthetic-demo" in _body(d) and "arm em3" in _body(d)
    _wait_text(d, "Training loss (live)", 900)
    _scroll_to(d, "Queue")
    _idle(d, 5)
    _shoot(d, shots, "demo-launch-live")
    _wait_finished(d, 900)
    total_s = time.time() - clicked
    _wait_text(d, "Open run", 60)
    first = re.search(r"first live metric after ([\d.]+) s", _body(d))
    assert first, f"the job card does not say when its first live metric came:\n{_body(d)[:2000]}"
    _scroll_to(d, "Queue")
    _shoot(d, shots, "demo-launch-finished")

    d.get(f"{base}/runs")
    _wait_text(d, "Final metrics", 90)
    _wait_text(d, "Efficiency", 60)
    _no_exception(d)
    efficiency = _wait_table_after(d, "Efficiency", 60)
    for label in ("Trainable parameters", "History-path trainable parameters", "Train seconds / epoch",
                  "Training samples / s", "Peak memory", "Device"):
        assert label in efficiency, f"efficiency panel lacks {label!r}: {efficiency[:1000]}"
    assert "not logged" not in efficiency, efficiency[:1000]
    assert re.search(r"\d[\d,]* \(\d+\.\d% of [\d,]+\)", efficiency), efficiency[:1000]   # trainable share
    _scroll_to(d, "Efficiency")
    _shoot(d, shots, "demo-runs-efficiency")

    d.get(f"{base}/attention")
    _wait_text(d, "Share of this query's attention: image", 120)
    _wait_text(d, "Ranker: attention over the user's history", 60)
    _no_exception(d)
    assert "ID attention" in _body(d) and "content attention" in _body(d)
    assert _count(d, '[data-testid="stMain"] img') >= 2          # the attention overlay and history posters
    assert _count(d, '[data-testid="stPlotlyChart"]') >= 1       # the token-grid heat map
    _shoot(d, shots, "demo-attention")

    d.get(f"{base}/alignment")
    _wait_text(d, "cosine(content, ID) over", 180)                 # t-SNE is not the default: PCA, seconds
    _no_exception(d)
    body = _body(d)
    assert "No shared content–ID space" not in body                  # em3 has CIC heads: one shared space
    cos = re.search(r"matched pairs mean (-?[\d.]+) vs random pairs (-?[\d.]+)", body)
    assert cos, body[:2000]
    assert _count(d, '[data-testid="stPlotlyChart"]') >= 4         # projection + histogram, runs A and B
    _shoot(d, shots, "demo-alignment")

    d.get(f"{base}/recommendations")
    _wait_text(d, "recommended", 120)
    _no_exception(d)
    user, hits = _user_with_hits(root)
    box = d.find_element("css selector", 'input[aria-label="Search users (id)"]')
    box.send_keys(user)
    from selenium.webdriver.common.keys import Keys
    box.send_keys(Keys.ENTER)
    _wait_text(d, f"User {user}: history", 60)
    _wait_text(d, "rated positively by the user in the test period", 60)
    shown = re.search(r"(\d+) of (\d+) rated positively by the user in the test period", _body(d))
    assert shown and int(shown.group(1)) == hits, (hits, _body(d)[:3000])
    _scroll_to(d, f"User {user}: history")
    _shoot(d, shots, "demo-recommendations")

    figures = {"first_live_metric_s": float(first.group(1)), "start_to_finished_s": round(total_s, 1),
               "alignment_matched_mean": float(cos.group(1)), "alignment_random_mean": float(cos.group(2)),
               "recommendations_user": user, "recommendations_hits": hits, "load_avg": os.getloadavg(), **MAKE_RUN_S}
    (shots / "demo-figures.json").write_text(json.dumps(figures, indent=2))
    print("first-ten-minutes figures:", json.dumps(figures))
