"""The request path's parts: limits, the options validator, the reading pool and its memory budget, folders."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from radfm.answering.limits import Limits
from radfm.answering.options import GenerationOptions, parse_options
from radfm.answering.refusal import RequestError
from radfm.answering.request import AnswerRequest, RequestPath, ScanInput, remove_stale_folders
from radfm.answering.worker import MemoryBudget


class RecordingAnswerer:
    """Reads nothing itself: records which thread prepares and how much budget is held meanwhile."""

    def __init__(self, path_holder: list, delay_s: float = 0.0) -> None:
        from radfm.answering.identity import ModelIdentity

        self.identity, self.max_images = ModelIdentity(), 4
        self.holder, self.delay_s = path_holder, delay_s
        self.threads: list[str] = []
        self.held: list[int] = []
        self.lock = threading.Lock()
        self.active = self.peak = 0

    def prepare(self, paths):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        self.threads.append(threading.current_thread().name)
        self.held.append(self.holder[0].worker.budget.in_use)
        time.sleep(self.delay_s)
        with self.lock:
            self.active -= 1
        return [np.zeros((3, 4, 4, 4), np.float32) for _ in paths]

    def answer(self, prompt, images, options):
        return f"{len(images)} scan(s)"


@pytest.fixture
def nifti(tmp_path) -> Path:
    """A NIfTI whose header claims 256 KiB (64 x 64 x 16 float32)."""
    import nibabel as nib

    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 16), np.float32), np.eye(4)), path)
    return path


def test_limits_refuse_values_that_cannot_be_right():
    assert Limits().check().max_queue == 32
    for bad in (dict(max_request_bytes=0), dict(max_queue=-1), dict(max_scan_bytes=-5), dict(parallel_preprocess=0),
                dict(generation_timeout_s=0.0), dict(max_images=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Limits(**bad).check()
    with pytest.raises(ValueError, match=r"--max_scan_mb=-5: expected a whole number of MiB"):
        Limits.from_flags(max_scan_mb=-5)
    assert Limits.from_flags(max_scan_mb=3).max_scan_bytes == 3 * 1024 * 1024


def test_one_validator_for_form_strings_json_values_and_flags():
    assert parse_options({"max_new_tokens": "12", "do_sample": "true", "temperature": "0.5"}, Limits()) == \
        parse_options({"max_new_tokens": 12, "do_sample": True, "temperature": 0.5}, Limits())
    assert parse_options(None, Limits(max_new_tokens=100)).max_new_tokens == 100  # default capped by the limit
    with pytest.raises(RequestError, match="did you mean 'max_new_tokens'") as caught:
        parse_options({"max_tokens": 5}, Limits())
    assert caught.value.status_code == 422 and caught.value.field == "max_tokens"
    with pytest.raises(RequestError, match="<= 16") as caught:
        parse_options({"max_new_tokens": 17}, Limits(max_new_tokens=16))
    assert caught.value.field == "max_new_tokens"
    with pytest.raises(RequestError, match="cannot read 'x'"):
        parse_options({"top_k": "x"}, None)
    assert isinstance(parse_options(GenerationOptions(seed=3), None), GenerationOptions)


@pytest.mark.parametrize("name", ["max_new_tokens", "top_k", "num_beams", "temperature", "top_p", "repetition_penalty"])
@pytest.mark.parametrize("value", [10**400, -(10**400)])
def test_a_number_no_float_holds_is_a_422_naming_the_option(name, value):
    """S1 (issue 28): a 400-digit integer (JSON, MLflow params) was an OverflowError (float conversion); now each
    option's own range refuses it, naming the field, in a short message."""
    with pytest.raises(RequestError) as caught:
        parse_options({name: value}, Limits(max_new_tokens=16))
    assert caught.value.status_code == 422 and caught.value.field == name
    assert f"generation option {name}=" in str(caught.value) and "digits>" in str(caught.value)
    assert len(str(caught.value)) < 200


def test_reading_runs_in_the_bounded_pool_admitted_by_the_budget(nifti):
    holder: list = []
    answerer = RecordingAnswerer(holder, delay_s=0.2)
    path = RequestPath(answerer, Limits(parallel_preprocess=3, prepare_budget_bytes=300 * 1024))
    holder.append(path)

    async def many():
        requests = [AnswerRequest("Which?", [ScanInput("vol.nii.gz", data=nifti.read_bytes())]) for _ in range(3)]
        return await asyncio.gather(*(path.run(r) for r in requests))

    results = asyncio.run(many())
    assert [r.text for r in results] == ["1 scan(s)"] * 3
    assert all(name.startswith("radfm-read") for name in answerer.threads)  # never on the event loop
    assert answerer.peak == 1  # three threads free, but 3 x 256 KiB claims do not fit a 300 KiB budget
    assert answerer.held == [256 * 1024] * 3  # the claim is the header's, not a slot count
    path.close()


def test_the_budget_lets_a_claim_larger_than_itself_run_alone():
    budget = MemoryBudget(100)
    with budget.hold(1000) as waited:
        assert budget.in_use == 100 and waited < 0.1
    order = []

    def worker(name, claim, hold_s):
        with budget.hold(claim):
            order.append(("in", name, budget.in_use))
            time.sleep(hold_s)

    first = threading.Thread(target=worker, args=("a", 70, 0.3))
    first.start()
    time.sleep(0.05)
    second = threading.Thread(target=worker, args=("b", 70, 0))
    second.start()
    first.join()
    second.join()
    assert order == [("in", "a", 70), ("in", "b", 70)] and budget.peak <= 100


def test_stale_folders_of_dead_processes_are_removed_only(tmp_path):
    dead = tmp_path / "radfm-request-999999999-x"
    dead.mkdir()
    mine = tmp_path / f"radfm-request-{os.getppid()}-y"  # a live process (the test runner's parent)
    mine.mkdir()
    other = tmp_path / "radfm-other-1-z"
    other.mkdir()
    assert remove_stale_folders(tmp_path) == 1
    assert not dead.exists() and mine.exists() and other.exists()


def test_the_folder_is_removed_when_the_request_is_cancelled(nifti, tmp_path):
    holder: list = []
    answerer = RecordingAnswerer(holder, delay_s=0.5)
    path = RequestPath(answerer, Limits(), temp_root=tmp_path)
    holder.append(path)

    async def cancelled():
        task = asyncio.ensure_future(path.run(AnswerRequest("Which?", [ScanInput("v.nii.gz", data=nifti.read_bytes())])))
        await asyncio.sleep(0.2)
        assert list(tmp_path.glob("radfm-request-*"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    assert not list(tmp_path.glob("radfm-request-*")) and path.live_folders() == []
    path.close()


def test_a_deflated_dicom_is_inflated_once_to_disk_streamed_and_bounded(tmp_path):
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from radfm.answering.scans import inflate_to_disk
    from radfm.transforms.errors import ScanTooLargeError

    original = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    original.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated = tmp_path / "ct.dcm"
    original.save_as(deflated, enforce_file_format=True)
    copy = tmp_path / "copy.dcm"
    copy.write_bytes(deflated.read_bytes())
    with pytest.raises(ScanTooLargeError, match="inflates to more than 1000 bytes"):
        inflate_to_disk(copy, 1000)
    assert copy.read_bytes() == deflated.read_bytes() and not list(tmp_path.glob("*.inflated"))
    assert inflate_to_disk(deflated, 1 << 20) and not inflate_to_disk(deflated, 1 << 20)  # once only
    again = pydicom.dcmread(deflated)
    assert again.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert again.SeriesInstanceUID == original.SeriesInstanceUID
    assert np.array_equal(again.pixel_array, pydicom.dcmread(copy).pixel_array)


def test_a_batch_reads_each_request_alone_and_generates_them_together(nifti, tmp_path):
    from radfm.answering.request import Batch

    class BatchAnswerer(RecordingAnswerer):
        calls: list = []

        def answer_batch(self, prompts, images, options):
            self.calls.append(len(prompts))
            return [f"{p} ({len(i)})" for p, i in zip(prompts, images)]

    holder: list = []
    answerer = BatchAnswerer(holder)
    path = RequestPath(answerer, Limits())
    holder.append(path)
    (tmp_path / "notes.txt").write_text("not a scan")
    inputs = [[ScanInput(str(nifti), path=nifti)], [ScanInput("notes.txt", path=tmp_path / "notes.txt")],
              [ScanInput(str(nifti), path=nifti)]]

    async def together():
        batch = Batch(3)
        return await asyncio.gather(*(path.run(AnswerRequest(f"q{i}", scans), batch=batch)
                                      for i, scans in enumerate(inputs)), return_exceptions=True)

    first, bad, third = asyncio.run(together())
    assert isinstance(bad, RequestError) and "notes.txt: unsupported file type .txt" in str(bad)
    assert (first.text, third.text) == ("<image>q0 (1)", "<image>q2 (1)")
    assert BatchAnswerer.calls == [2]  # one generate call for the two good requests
    path.close()


def test_options_are_parsed_once_per_request():
    """Issue 30 item 3: a door's parsed options go through the request path as they are (not parsed again against
    the same limits); other limits check them again."""
    limits = Limits(max_new_tokens=16)
    options = parse_options({"max_new_tokens": "8", "min_new_tokens": "2", "ignore_eos": "true"}, limits)
    assert parse_options(options, limits) is options
    with pytest.raises(RequestError, match="<= 4") as caught:
        parse_options(options, Limits(max_new_tokens=4))
    assert caught.value.field == "max_new_tokens"
    with pytest.raises(RequestError, match=r"min_new_tokens=9: expected <= max_new_tokens \(8\)") as caught:
        parse_options({"max_new_tokens": 8, "min_new_tokens": 9}, limits)
    assert caught.value.field == "min_new_tokens"
