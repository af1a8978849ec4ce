"""Three browser sessions on the dashboard while a job trains: every page keeps responding, progress shows in all
three (headless Chromium; skipped cleanly without it)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.app.test_app_browser import (CHROMEDRIVER, CHROMIUM, _body, _click, _set_number, _wait_text, _wait_value,
                                        server)  # noqa: F401 - `server` is a fixture

pytestmark = [pytest.mark.reliability, pytest.mark.browser, pytest.mark.slow]
# page -> text only that page shows while the first run trains (the sidebar names every page)
PAGES = {"runs": ("Compare runs",), "ablations": ("No ablation groups yet",),
         "attention": ("still running", "Share of this query's attention")}
FIGURES: dict[str, float] = {}


@pytest.fixture
def browsers():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs the selenium package")
    from selenium.webdriver.chrome.service import Service
    drivers = []
    try:
        for _ in range(3):
            opts = webdriver.ChromeOptions()
            opts.binary_location = CHROMIUM
            for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--window-size=1400,2000"):
                opts.add_argument(arg)
            drivers.append(webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts))
        yield drivers
    finally:
        for d in drivers:
            d.quit()


def _wait_any(driver, texts: tuple[str, ...], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(t in _body(driver) for t in texts):
            return
        time.sleep(0.3)
    raise AssertionError(f"none of {texts} on the page after {timeout:.0f} s:\n{_body(driver)[:1500]}")


def _progress_seen(driver) -> bool:
    body = _body(driver)
    return "— running" in body and ("epoch " in body or "loss " in body)


def test_three_sessions_keep_responding_and_all_see_the_progress(server, browsers):  # noqa: F811
    base, _ = server
    first, *others = browsers
    first.get(base)
    _wait_text(first, "Launch a run", 90)
    _click(first, "//label[.//p[text()='Synthetic tiny']]")
    _wait_value(first, "Epochs", "2", 30)
    _set_number(first, "Epochs", "3")
    _set_number(first, "Max steps/epoch", "20")
    _click(first, "//button[.//p[text()='Start']]")
    _wait_text(first, "Queued job", 60)
    for d in others:
        d.get(base)
    seen = {i: False for i in range(3)}
    page_times: list[float] = []
    deadline = time.time() + 600
    while time.time() < deadline and not all(seen.values()):
        for i, d in enumerate(browsers):
            seen[i] = seen[i] or _progress_seen(d)
        time.sleep(0.5)
    assert all(seen.values()), f"progress not shown in sessions {[i for i, s in seen.items() if not s]}"
    # while it trains, each session visits other pages: every one answers
    for page, texts in PAGES.items():
        for d in browsers:
            t0 = time.time()
            d.get(f"{base}/{page}")
            _wait_any(d, texts, 90)
            page_times.append(time.time() - t0)
            assert "Traceback" not in _body(d)
    for d in browsers:                            # back on Launch, the job (running or done) is still shown
        d.get(base)
        _wait_any(d, ("— running", "— finished"), 90)
    FIGURES.update(page_loads=len(page_times), slowest_page_s=max(page_times))
    print("three-browsers figures:", FIGURES)
