"""The chat page of ``radfm serve`` in headless Chromium (Debian's chromium + chromium-driver, Selenium).

Upload the shipped X-ray PNG and CT NIfTI, scroll the CT, ask about both, read the demo model's
streamed answer, ask a follow-up (the first turn goes back as context), export the answer as a
DICOM SR and as JSON and read them back. Skips only when chromium, chromedriver or selenium is
missing.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import pydicom
import pytest

pytest.importorskip("selenium.webdriver", reason="headless browser test needs selenium (pip install selenium)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "bundles" / "radfm" / "models" / "demo"
SAMPLES = ROOT / "bundles" / "radfm" / "sample_data"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_service():
    """The app ``radfm serve`` runs, with the demo model, on a free loopback port."""
    from radfm.answering.answerer import ModelAnswerer
    from radfm.answering.limits import Limits
    from radfm.http.service import BackgroundServer, create_app

    answerer = ModelAnswerer.from_model_dir(DEMO, device="cpu", dtype="float32")
    with BackgroundServer(create_app(answerer, Limits(max_new_tokens=64))) as running:
        yield running.url


def _upload(driver, path: Path, expected_count: int) -> None:
    field = driver.find_element(By.ID, "file-input")
    driver.execute_script("arguments[0].hidden = false;", field)  # a real person clicks the label
    field.send_keys(str(path))
    driver.execute_script("arguments[0].hidden = true;", field)
    WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#thumbs .thumb")) == expected_count)


def _image_loaded(driver, element_id: str) -> bool:
    return driver.execute_script(
        "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth > 0;", element_id)


def _downloaded(folder: Path, name: str, timeout: float = 20) -> Path:
    deadline = time.monotonic() + timeout
    target = folder / name
    while time.monotonic() < deadline:
        if target.is_file() and not list(folder.glob("*.crdownload")):
            return target
        time.sleep(0.1)
    raise AssertionError(f"{name} was not downloaded; the folder holds {sorted(p.name for p in folder.iterdir())}")


def _ask(driver, question: str, answer_index: int) -> dict:
    box = driver.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(question)
    driver.find_element(By.ID, "send").click()
    WebDriverWait(driver, 120).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='1']"))
                                     > answer_index)
    answer = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[answer_index]
    return {"element": answer, "text": answer.find_element(By.CSS_SELECTOR, ".text").text,
            "chunks": int(answer.get_attribute("data-chunks"))}


def test_upload_view_ask_stream_export(browser, demo_service, tmp_path):
    browser.get(demo_service + "/")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    banner = browser.find_element(By.ID, "banner").text
    assert "RadFM (demo)" in banner and "UNVERIFIED" in banner

    _upload(browser, SAMPLES / "xray_phantom.png", 1)
    _upload(browser, SAMPLES / "ct_phantom.nii.gz", 2)
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#thumbs .thumb")
    assert "PNG" in thumbs[0].find_element(By.CSS_SELECTOR, ".modality").text
    assert thumbs[0].find_element(By.CSS_SELECTOR, ".shape").text.startswith("128×128×1")
    assert thumbs[1].find_element(By.CSS_SELECTOR, ".modality").text == "NIfTI volume"
    assert thumbs[1].find_element(By.CSS_SELECTOR, ".shape").text == "64×64×16 → model 3×128×128×8"

    # the CT is in the viewer (last upload): scroll it with the mouse wheel, change the window
    slider = browser.find_element(By.ID, "slice")
    assert slider.get_attribute("max") == "15" and slider.get_attribute("value") == "8"
    original = browser.find_element(By.ID, "view-original")
    for _ in range(3):
        browser.execute_script("arguments[0].dispatchEvent(new WheelEvent('wheel', "
                               "{deltaY: 120, bubbles: true, cancelable: true}));", original)
    WebDriverWait(browser, 10).until(lambda d: "slice=11" in original.get_attribute("src"))
    browser.find_element(By.CSS_SELECTOR, "#window option[value='lung']").click()
    WebDriverWait(browser, 10).until(lambda d: "slice=11&window=lung" in original.get_attribute("src"))
    model_view = browser.find_element(By.ID, "view-model")
    WebDriverWait(browser, 10).until(lambda d: "view=model&slice=5" in model_view.get_attribute("src"))  # round(11 * 7 / 15)
    WebDriverWait(browser, 10).until(lambda d: _image_loaded(d, "view-original") and _image_loaded(d, "view-model"))
    assert "slice 6 / 8" in browser.find_element(By.ID, "model-caption").text

    first = _ask(browser, "What are the modalities of these scans? <image> <image>", 0)
    assert "X-ray" in first["text"] and "CT" in first["text"]  # the demo model's right answer
    assert first["chunks"] >= 2  # it arrived piece by piece
    browser.find_element(By.CSS_SELECTOR, "#window option[value='auto']").click()
    browser.execute_script("window.scrollTo(0, 0);")
    WebDriverWait(browser, 10).until(lambda d: _image_loaded(d, "view-original"))
    browser.save_screenshot(str(tmp_path / "chat.png"))
    if os.environ.get("RADFM_CHAT_SCREENSHOT"):
        browser.save_screenshot(os.environ["RADFM_CHAT_SCREENSHOT"])

    # export: DICOM SR (with Secondary Captures of the two non-DICOM scans) and JSON
    first["element"].find_element(By.CSS_SELECTOR, "button.export-sr").click()
    bundle = _downloaded(browser.downloads, "radfm_answer_sr.zip")
    with zipfile.ZipFile(bundle) as archive:
        names = sorted(archive.namelist())
        archive.extractall(tmp_path / "sr")
    assert names == ["radfm_answer_sr.dcm", "secondary_capture_1.dcm", "secondary_capture_2.dcm"]
    from radfm.dicom.sr import read_sr

    report = read_sr(tmp_path / "sr" / "radfm_answer_sr.dcm")
    assert report["answer"] == first["text"]
    assert report["prompt"] == "What are the modalities of these scans? <image> <image>"
    assert report["verification"] == "UNVERIFIED"
    captures = [pydicom.dcmread(tmp_path / "sr" / f"secondary_capture_{i}.dcm") for i in (1, 2)]
    assert report["referenced_sop_instance_uids"] == [c.SOPInstanceUID for c in captures]
    assert pydicom.dcmread(tmp_path / "sr" / "radfm_answer_sr.dcm").StudyInstanceUID == captures[0].StudyInstanceUID

    first["element"].find_element(By.CSS_SELECTOR, "button.export-json").click()
    record = json.loads(_downloaded(browser.downloads, "radfm_answer.json").read_text())
    assert record["answer"] == first["text"] and record["verification"] == "UNVERIFIED"
    assert [s["name"] for s in record["scans"]] == ["xray_phantom.png", "ct_phantom.nii.gz"]

    # a follow-up: the first turn goes back to the model as context
    second = _ask(browser, "Does the patient have cyst? <image #1>", 1)
    assert second["text"]
    second["element"].find_element(By.CSS_SELECTOR, "button.export-json").click()
    deadline = time.monotonic() + 20
    while len(list(browser.downloads.glob("radfm_answer*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    latest = max(browser.downloads.glob("radfm_answer*.json"), key=lambda p: p.stat().st_mtime)
    follow_up = json.loads(latest.read_text())
    assert follow_up["prompt"] == ("What are the modalities of these scans? <image> <image>\n"
                                   f"{first['text']}\nDoes the patient have cyst? <image>")
    assert len(follow_up["scans"]) == 3  # X-ray, CT, then the X-ray again
