"""Fixtures shared by all test folders. Nothing here may reach the network."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_TRACKING_URI", "")  # tests set their own file:// store

TESTS_DIR = Path(__file__).resolve().parent
DATA_FILES = TESTS_DIR / "data_files"

# tests/support holds the lab (Orthanc, a hostile DICOMweb server, made-up studies) and shared
# fixtures: test code, not installed with the package (scripts/ put tests/ on sys.path the same way)
sys.path.insert(0, str(TESTS_DIR))
pytest_plugins = ["support.door_fixtures", "support.pacs_fixtures"]


@pytest.fixture(scope="session")
def data_files() -> Path:
    return DATA_FILES


@pytest.fixture(scope="session")
def official_tiny_dir() -> Path:
    """The published-layout tiny checkpoint with the published code's expected outputs."""
    return DATA_FILES / "official_tiny"


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A small BPE tokenizer trained on radiology-like text, with the image tokens added."""
    from radfm.model.tokenizer import train_tokenizer

    corpus = [
        "Findings: a large bright sphere in the left upper lung. Impression: pneumothorax.",
        "Is this image captured by CT? yes no MRI X-ray ultrasound mammography",
        "Does the patient have pneumonia? The lesion is small and dark, right lower region.",
        "Please caption this scan with findings. No abnormality detected.",
    ] * 10
    return train_tokenizer(corpus, vocab_size=400)


class CountingTokenizer:
    """Wraps a tokenizer; counts encode calls (``tokenizer(...)``), ``batch_decode`` and ``decode`` calls."""

    def __init__(self, inner) -> None:
        self.inner, self.encode_calls, self.batch_decode_calls, self.decode_calls = inner, 0, 0, 0

    def __call__(self, *args, **kwargs):
        self.encode_calls += 1
        return self.inner(*args, **kwargs)

    def batch_decode(self, *args, **kwargs):
        self.batch_decode_calls += 1
        return self.inner.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        self.decode_calls += 1
        return self.inner.decode(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="session")
def counting_tokenizer():
    """``counting_tokenizer(tokenizer)`` -> a wrapper counting its tokenizer and decoder calls."""
    return CountingTokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A randomly initialised tiny RadFM (4 LLM layers) saved with its tokenizer."""
    import torch

    from radfm import RadFMConfig, RadFMForConditionalGeneration

    torch.manual_seed(0)
    base = tiny_tokenizer.convert_tokens_to_ids("<image>")
    # on the vLLM engine (RADFM_ENGINE=vllm) 2 heads of 32: vLLM's CPU attention has no kernel for 16
    heads = {"num_attention_heads": 2, "num_key_value_heads": 2} if os.environ.get("RADFM_ENGINE") == "vllm" else {}
    model = RadFMForConditionalGeneration(RadFMConfig.preset("tiny", vocab_size=base, num_hidden_layers=4, **heads)).eval()
    folder = tmp_path_factory.mktemp("model") / "tiny"
    model.save_pretrained(folder, tokenizer=tiny_tokenizer)
    return folder


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"  # the system driver matching Debian's chromium; never a downloaded one


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium through its system chromedriver (Selenium); downloads land in ``browser.downloads``.

    Skips when chromium, chromedriver or selenium is missing on a developer's machine; fails in CI
    (``CI`` set), where .ci/run installs them.
    """
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK) and os.path.exists(CHROMEDRIVER)):
        (pytest.fail if os.environ.get("CI") else pytest.skip)("headless browser test needs Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="headless browser test needs selenium")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download anything
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def _radfm_server(args: Sequence[str], ready_path: str, timeout_s: float = 60) -> Iterator[str]:
    """``python -m radfm.cli ARGS --port P`` on a free loopback port, as a user starts it; yields its URL.

    Ready when ``GET ready_path`` answers 200; always terminated (killed if it hangs) on exit.
    """
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "radfm.cli", *args, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                httpx.get(url + ready_path, timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError(f"radfm {' '.join(args[:2])} did not start: "
                                       f"{process.stderr.read().decode()[-3000:]}") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def radfm_server():
    """``radfm_server(args, ready_path, timeout_s)``: a context manager running a ``radfm`` server subprocess."""
    return _radfm_server


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (``CI`` set) a skipped test is a failure: .ci/run installs every prerequisite, so a skip
    there means one went missing (a package, a Debian tool) and the test did not run."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        where = sorted({report.nodeid for report in skipped})  # a test's or a skipped module's id
        print(f"\nCI: {len(skipped)} test(s) or module(s) skipped; in CI a missing prerequisite fails:\n  "
              + "\n  ".join(where[:20]), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# Patients whose data must never reach a log, warning or status line (docs/hospital.md). Names as real
# data has them: one component without "^" (highdicom warns about those, quoting the name), a name with
# a space, names that read like words; IDs with spaces; a birth date that is not a DICOM DA value
# (pydicom warns quoting it, highdicom refuses it quoting it).
IDENTIFYING_PATIENTS = (
    {"name": "PLA", "id": "PLA0042", "birth_date": "1970-02-03"},
    {"name": "John Smith", "id": "JS 610704", "birth_date": "19610704"},
    {"name": "CHEST", "id": "CHEST-7", "birth_date": "19991231"},
)


class PatientData:
    """Put an identifying patient into DICOM files, and look for that patient's data in what a run emitted."""

    patients = IDENTIFYING_PATIENTS

    @staticmethod
    def give(files, patient: dict) -> None:
        """Rewrite ``files`` in place with ``patient``'s name, ID and birth date (values stored as given)."""
        import pydicom
        from pydicom.dataelem import DataElement

        for file in files:
            ds = pydicom.dcmread(file)
            for keyword, vr, value in (("PatientName", "PN", patient["name"]), ("PatientID", "LO", patient["id"]),
                                       ("PatientBirthDate", "DA", patient["birth_date"])):
                tag = pydicom.datadict.tag_for_keyword(keyword)
                ds[tag] = DataElement(tag, vr, value, validation_mode=pydicom.config.IGNORE)
            ds.save_as(file)

    @staticmethod
    def leaks(text: str, patient: dict) -> list[str]:
        """The values of ``patient`` found in ``text`` (whole words, case as stored; also each name part)."""
        import re

        values = {patient["name"], patient["id"], patient["birth_date"], *patient["name"].split()}
        return sorted(v for v in values if re.search(rf"(?<![\w^]){re.escape(v)}(?![\w^])", text))

    @staticmethod
    def emitted(capfd, caplog, recwarn) -> str:
        """All a run in this process wrote: stdout, stderr, every log record (formatted as a log handler
        does, tracebacks included) and every warning as Python would have printed it (pytest records
        warnings instead of printing them; ``warnings.formatwarning`` is what printing calls)."""
        import warnings

        out, err = capfd.readouterr()
        shown = [warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in recwarn]
        return "\n".join([out, err, caplog.text, *shown])


@pytest.fixture(scope="session")
def patient_data() -> type[PatientData]:
    """:class:`PatientData`: ``give(files, patient)``, ``leaks(text, patient)``, ``emitted(capfd, caplog, recwarn)``."""
    return PatientData


@pytest.fixture(params=IDENTIFYING_PATIENTS, ids=lambda patient: patient["name"].replace(" ", "_"))
def identifying_patient(request) -> dict:
    """Each of :data:`IDENTIFYING_PATIENTS` in turn."""
    return request.param
