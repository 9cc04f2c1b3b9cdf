"""End to end in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Sign in, rate two cases, reload (ratings kept), a second rater sees none of them, and crafted
image paths are refused. Skips only when chromium, chromedriver or selenium is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from radfm.http.service import BackgroundServer
from radfm.rating import store
from radfm.rating.app import SESSION_COOKIE, create_app

pytest.importorskip("selenium.webdriver", reason="headless browser test needs selenium (pip install selenium)")
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.slow


def _sign_in(driver, base: str, token: str) -> None:
    driver.get(base + "/signin")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin-button").click()
    WebDriverWait(driver, 10).until(lambda d: "/case/" in d.current_url)


def _rate(driver, scores: list[int]) -> None:
    """Click a score for each blinded answer and wait until the page says each one is saved."""
    for slot, score in enumerate(scores):
        driver.find_element(By.CSS_SELECTOR, f"input[name='score-{slot}'][value='{score}'] + span").click()
        WebDriverWait(driver, 10).until(
            lambda d, slot=slot: d.find_element(By.CSS_SELECTOR, f"fieldset[data-slot='{slot}'] .saved").text == "saved"
        )


def _checked(driver) -> dict[int, int | None]:
    result = {}
    for fieldset in driver.find_elements(By.CSS_SELECTOR, "fieldset.candidate"):
        slot = int(fieldset.get_attribute("data-slot"))
        chosen = [i.get_attribute("value") for i in fieldset.find_elements(By.CSS_SELECTOR, "input") if i.is_selected()]
        result[slot] = int(chosen[0]) if chosen else None
    return result


def test_rate_reload_second_rater_and_crafted_paths(study, browser, tmp_path):
    folder, tokens = study
    with BackgroundServer(create_app(folder)) as server:
        base = server.url
        _sign_in(browser, base, tokens["alice"])
        assert browser.current_url.endswith("/case/1")
        assert browser.find_element(By.ID, "rater-name").text == "alice"

        # the 3D viewer gets its depth from the server and re-renders on slider/window changes
        WebDriverWait(browser, 15).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "figure.viewer").get_attribute("data-ready") == "1"
        )
        image = browser.find_element(By.CSS_SELECTOR, "figure.viewer img.slice")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 48
        slider = browser.find_element(By.CSS_SELECTOR, "input.depth")
        assert slider.get_attribute("max") == "11"
        browser.execute_script(
            "arguments[0].value = 2; arguments[0].dispatchEvent(new Event('input'));", slider)
        browser.find_element(By.CSS_SELECTOR, "select.window option[value='lung']").click()
        WebDriverWait(browser, 10).until(lambda d: "slice=2&window=lung" in image.get_attribute("src"))
        WebDriverWait(browser, 10).until(
            lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 48)

        _rate(browser, [4, 1, 5])
        shot = Path(os.environ.get("RADFM_RATING_SCREENSHOT", tmp_path / "case_page.png"))
        browser.save_screenshot(str(shot))
        browser.find_element(By.ID, "next-button").click()
        WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith("/case/2"))
        _rate(browser, [0, 2, 3])
        if "RADFM_RATING_SCREENSHOT" in os.environ:  # a 2D case too, for a person to look at
            browser.save_screenshot(str(shot.with_name(shot.stem + "_case2.png")))

        browser.refresh()
        assert _checked(browser) == {0: 0, 1: 2, 2: 3}
        browser.get(base + "/case/1")
        assert _checked(browser) == {0: 4, 1: 1, 2: 5}
        assert "2 rated" in browser.find_element(By.ID, "progress-text").text

        # crafted image paths: nothing outside the study comes back
        for crafted in ("/case/1/image/..%2F..%2F..%2F..%2Fetc%2Fpasswd.png", "/static/..%2F..%2Fapp.py"):
            browser.get(base + crafted)
            assert "root:" not in browser.page_source and "create_app" not in browser.page_source
            cookie = browser.get_cookie(SESSION_COOKIE)["value"]
            response = httpx.get(base + crafted, cookies={SESSION_COOKIE: cookie})
            assert response.status_code in (403, 404, 422)

        # second rater: none of alice's scores visible
        browser.delete_all_cookies()
        _sign_in(browser, base, tokens["bob"])
        assert browser.find_element(By.ID, "rater-name").text == "bob"
        browser.get(base + "/case/1")
        assert _checked(browser) == {0: None, 1: None, 2: None}
        bob_cookie = {SESSION_COOKIE: browser.get_cookie(SESSION_COOKIE)["value"]}
        for number in (1, 2):
            own = httpx.get(f"{base}/api/case/{number}", cookies=bob_cookie).json()
            assert own["scores"] == {"0": None, "1": None, "2": None}

    with store.connect(folder) as conn:
        saved = conn.execute(
            "SELECT r.name, COUNT(*) FROM ratings ra JOIN raters r ON r.pk = ra.rater_pk GROUP BY r.name").fetchall()
    assert [tuple(row) for row in saved] == [("alice", 6)]
