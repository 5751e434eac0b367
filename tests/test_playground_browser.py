"""End to end: the playground page in a real headless Chromium, driven by selenium.

Skipped, with the reason, where Chromium, chromedriver or selenium is missing (``.ci/run``
installs Debian's ``chromium`` and ``chromium-driver`` when it can).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

selenium = pytest.importorskip(
    "selenium", reason="selenium is not installed (pip install selenium, the 'test' extra)"
)
if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"no browser: {CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True
    )
if not os.path.exists(CHROMEDRIVER):
    pytest.skip(
        "no browser driver: chromedriver is missing (apt-get install chromium-driver)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="funcnn-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1000,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as e:  # a browser that cannot start here is an environment matter
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"headless Chromium does not start: {type(e).__name__}: {e}")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def accuracy(driver, panel: int) -> float | None:
    value = driver.find_element(By.CSS_SELECTOR, f"#panel-{panel} .acc").get_attribute("data-value")
    return float(value) if value else None


def test_page_trains_the_tanh_network_on_the_spirals(server, browser, tmp_path):
    driver = browser
    driver.get(server.url)
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert driver.find_element(By.ID, "dataset").get_attribute("value") == "spirals"
    assert driver.find_element(By.ID, "npoints").text == "200 points"
    assert "MLP 1×16 tanh" in driver.find_element(By.CSS_SELECTOR, "#panel-1 .title").text
    assert "logistic" in driver.find_element(By.CSS_SELECTOR, "#panel-0 .title").text

    # click the tanh network's canvas: class 0 near the top-left corner, class 1 near the
    # bottom-right one (offsets from the canvas centre, in CSS pixels of a 400×400 canvas)
    canvas = driver.find_element(By.CSS_SELECTOR, "#panel-1 canvas")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    ActionChains(driver).move_to_element_with_offset(canvas, -185, -185).click().perform()
    driver.find_element(By.CSS_SELECTOR, "input[name=cls][value='1']").click()
    ActionChains(driver).move_to_element_with_offset(canvas, 185, 185).click().perform()
    assert driver.find_element(By.ID, "npoints").text == "202 points"
    (x0, y0), (x1, y1) = driver.execute_script("return state.points.slice(-2)")
    xmin, xmax, ymin, ymax = driver.execute_script("return state.extent")
    step = (xmax - xmin) / 400
    assert x0 == pytest.approx(xmin + 15 * step, abs=2 * step)
    assert y0 == pytest.approx(ymax - 15 * step, abs=2 * step)
    assert x1 == pytest.approx(xmax - 15 * step, abs=2 * step)
    assert y1 == pytest.approx(ymin + 15 * step, abs=2 * step)
    assert driver.execute_script("return state.labels.slice(-2)") == [0, 1]

    driver.find_element(By.ID, "start").click()
    start = time.monotonic()
    WebDriverWait(driver, 90, poll_frequency=0.5).until(
        lambda d: (accuracy(d, 1) or 0.0) > 0.9, "the tanh network never passed 90% accuracy"
    )
    elapsed = time.monotonic() - start
    shown = driver.find_element(By.CSS_SELECTOR, "#panel-1 .acc").text
    assert shown.startswith("accuracy ") and float(shown.split()[1].rstrip("%")) > 90.0
    linear = accuracy(driver, 0)
    assert linear is not None and linear < 0.8  # a line cannot separate the spirals
    steps_done = int(driver.find_element(By.CSS_SELECTOR, "#panel-1 .steps").text.split()[1])
    assert steps_done > 0
    driver.execute_script("window.scrollTo(0, 0)")
    path = tmp_path / "playground.png"
    assert driver.save_screenshot(str(path))
    print(f"\nscreenshot: {path} (90% after {elapsed:.1f} s, {steps_done} steps)")

    # a bad learning rate: the server's error is shown on the page and training pauses
    lr = driver.find_element(By.CSS_SELECTOR, "#panel-1 .lr")
    lr.send_keys(Keys.CONTROL, "a")
    lr.send_keys("50")  # the field goes "5", then "50"
    error = driver.find_element(By.CSS_SELECTOR, "#panel-1 .error")
    WebDriverWait(driver, 10).until(lambda d: "(0, 10]" in error.text)
    assert error.text.startswith("lr:")
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "start").text == "Start")

    # and the server still answers: a valid rate trains again. Count from the paused state:
    # steps taken at lr = 5 (the field on its way to "50") already passed steps_done
    def panel_steps(d):
        return int(d.find_element(By.CSS_SELECTOR, "#panel-1 .steps").text.split()[1])

    paused_at = panel_steps(driver)
    lr.send_keys(Keys.CONTROL, "a")
    lr.send_keys("0.02")
    driver.find_element(By.ID, "start").click()
    WebDriverWait(driver, 10).until(lambda d: panel_steps(d) > paused_at)
    driver.find_element(By.ID, "start").click()
    assert error.text == ""
