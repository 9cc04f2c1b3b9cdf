"""The DICOMweb pull mode against a hostile DICOMweb server on 127.0.0.1 (support.dicomweb_lab).

One test per finding of issue 28: an endless multipart part (P3), one bad instance among two
studies (P1), a redirect off the configured host (P2), a trickled search answer (P4).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import pytest
from support.dicomweb_lab import HostileDicomweb, Reply, endless_part, qido_answer, wado_reply
from support.synthetic import write_chest_xray

from radfm.node.dicomweb_pull import DicomwebPull
from radfm.node.job_queue import JobQueue
from radfm.node.node_config import NodeConfig
from radfm.node.storage_scp import StorageSCP

MiB = 1024 * 1024


def _instance(folder: Path, study_uid: str) -> bytes:
    return write_chest_xray(folder, size=16, study_uid=study_uid).read_bytes()


def _puller(tmp_path: Path, url: str, **pull) -> tuple[DicomwebPull, JobQueue]:
    config = NodeConfig.from_dict({
        "state_dir": str(tmp_path / "state"), "max_instance_mb": 1, "retry_first_s": 0.01, "retry_max_s": 0.02,
        "max_attempts": 2, "allowed_callers": [{"ae_title": "ORTHANC", "host": "127.0.0.1"}],
        "pull": {"url": url}})
    for name, value in pull.items():  # e.g. a short timeout_s (set here: the config test checks the field)
        setattr(config.pull, name, value)
    queue = JobQueue(config.state_path)
    return DicomwebPull(config, StorageSCP(config, queue)), queue


def _poll_in_thread(puller: DicomwebPull, limit_s: float) -> tuple[bool, object]:
    """Run one poll with a wall-clock limit of our own: a poll that hangs fails the test instead of hanging it."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(puller.poll_once())
        except Exception as error:  # noqa: BLE001 (the test inspects it)
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit_s)
    return (not thread.is_alive()), (outcome[0] if outcome else None)


def test_an_endless_multipart_part_is_cut_at_max_instance_mb_while_it_streams(tmp_path):
    """P3: the part is counted as it arrives; the node hangs up near the cap instead of buffering 48 MiB."""
    study = "1.2.826.0.1.3680043.8.498.1"
    server = HostileDicomweb({
        "/dicom-web/studies": Reply(200, [("Content-Type", "application/dicom+json")], [qido_answer([study])]),
        f"/dicom-web/studies/{study}": Reply(200, [("Content-Type", 'multipart/related; type="application/dicom"; '
                                                   'boundary=radfm-lab-boundary')], endless_part(48 * MiB))})
    with server:
        puller, queue = _puller(tmp_path, server.url)
        finished, result = _poll_in_thread(puller, 60)
        sent = server.bytes_sent(f"/dicom-web/studies/{study}")
    # 1 MiB cap; what else was sent sat in the two sockets' kernel buffers when the node hung up
    assert sent < 24 * MiB, f"the node read {sent / MiB:.1f} MiB of an endless part with max_instance_mb=1"
    assert finished and result == 0, result
    (pull,) = queue.pulls()
    assert pull["state"] == "retry" and "max_instance_mb=1" in pull["reason"], pull
    assert not list((tmp_path / "state" / "tmp").iterdir())  # the cut part's temp file is gone
    queue.close()


def test_one_unreadable_instance_fails_its_study_only_and_is_retried_then_marked_failed(tmp_path, capsys):
    """P1: the second study is fetched although the first holds garbage; the first is retried, then failed,
    with its reason kept in node.sqlite and shown by ``radfm node status``."""
    from radfm.node.cli import NodeCommands

    bad, good = "1.2.826.0.1.3680043.8.498.10", "1.2.826.0.1.3680043.8.498.20"
    server = HostileDicomweb({
        "/dicom-web/studies": Reply(200, [("Content-Type", "application/dicom+json")], [qido_answer([bad, good])]),
        f"/dicom-web/studies/{bad}": wado_reply([b"this is not DICOM" * 20]),
        f"/dicom-web/studies/{good}": wado_reply([_instance(tmp_path / "good", good)])})
    with server:
        puller, queue = _puller(tmp_path, server.url)
        finished, result = _poll_in_thread(puller, 60)
        assert finished and result == 1, result
        assert queue.pending_count(good) == 1 and queue.pending_count(bad) == 0
        assert [p["state"] for p in queue.pulls()] == ["retry"]
        time.sleep(0.05)  # the retry wait (retry_first_s=0.01) is over
        assert _poll_in_thread(puller, 60) == (True, 0)
        assert server.requests.count(f"/dicom-web/studies/{bad}") == 2
        assert server.requests.count(f"/dicom-web/studies/{good}") == 1  # fetched once
        time.sleep(0.05)
        assert _poll_in_thread(puller, 60) == (True, 0)
        assert server.requests.count(f"/dicom-web/studies/{bad}") == 2  # failed for good: not fetched again
    queue.close()
    reopened = JobQueue(tmp_path / "state")  # the outcome is in node.sqlite, not only in memory
    (pull,) = reopened.pulls()
    reopened.close()
    assert pull["study_uid"] == bad and pull["state"] == "failed" and pull["attempts"] == 2
    assert "status 0xC000" in pull["reason"], pull
    config_file = tmp_path / "node.json"
    config_file.write_text(json.dumps({"state_dir": "state", "allowed_callers": [
        {"ae_title": "ORTHANC", "host": "127.0.0.1"}]}))
    capsys.readouterr()
    NodeCommands().status(config=str(config_file))
    shown = capsys.readouterr().out
    assert f"failed   study {bad}" in shown and "tries 2" in shown and "0xC000" in shown, shown
    NodeCommands().status(config=str(config_file), json=True)
    assert json.loads(capsys.readouterr().out)["pulls"][0]["reason"] == pull["reason"]


def test_a_redirect_to_another_host_is_refused_and_one_on_the_configured_host_is_followed(tmp_path):
    """P2: "localhost" is another host name than the configured 127.0.0.1 (the same listener here, so a
    followed redirect would show in the server's requests)."""
    moved, kept = "1.2.826.0.1.3680043.8.498.30", "1.2.826.0.1.3680043.8.498.40"
    server = HostileDicomweb()
    server.routes.update({
        "/dicom-web/studies": Reply(200, [("Content-Type", "application/dicom+json")], [qido_answer([moved, kept])]),
        f"/dicom-web/studies/{moved}": Reply(302, [("Location", f"http://localhost:{server.port}/elsewhere/{moved}")],
                                             [b""], "length"),
        f"/elsewhere/{moved}": wado_reply([_instance(tmp_path / "m", moved)]),
        f"/dicom-web/studies/{kept}": Reply(307, [("Location", f"/same-host/{kept}")], [b""], "length"),
        f"/same-host/{kept}": wado_reply([_instance(tmp_path / "k", kept)])})
    with server:
        puller, queue = _puller(tmp_path, server.url)
        finished, result = _poll_in_thread(puller, 60)
        assert finished and result == 1, result
        assert f"/elsewhere/{moved}" not in server.requests
        assert f"/same-host/{kept}" in server.requests and queue.pending_count(kept) == 1
    (pull,) = queue.pulls()
    assert pull["study_uid"] == moved and "redirect to http://localhost" in pull["reason"], pull
    queue.close()


def test_a_search_answer_trickling_forever_ends_the_poll_at_its_deadline(tmp_path):
    """P4: one byte every 0.5 s (each read well inside the idle timeout) for ever; the poll ends at timeout_s."""
    server = HostileDicomweb({"/dicom-web/studies": Reply(
        200, [("Content-Type", "application/dicom+json")], itertools.chain([b"["], itertools.repeat(b" ")),
        delay_s=0.5)})
    with server:
        puller, queue = _puller(tmp_path, server.url, timeout_s=2)
        started = time.monotonic()
        finished, result = _poll_in_thread(puller, 20)
        took = time.monotonic() - started
    assert finished, "the poll was still reading the trickle after 20 s"
    assert type(result).__name__ == "PullError" and "pull.timeout_s=2" in str(result), result
    assert took < 5, took
    queue.close()


def test_trickled_headers_and_a_trickled_study_are_cut_at_the_deadline_too(tmp_path):
    """The status line and headers trickled, and a study's body trickled, end at the poll's deadline."""
    study = "1.2.826.0.1.3680043.8.498.50"
    server = HostileDicomweb({
        "/dicom-web/studies": Reply(200, [("Content-Type", "application/dicom+json")], [qido_answer([study])],
                                    "length", head_delay_s=0.02),
        f"/dicom-web/studies/{study}": Reply(200, [("Content-Type", 'multipart/related; boundary=radfm-lab-boundary')],
                                             endless_part(None, chunk=1), delay_s=0.2)})
    with server:
        puller, queue = _puller(tmp_path, server.url, timeout_s=4)
        started = time.monotonic()
        finished, result = _poll_in_thread(puller, 20)
        took = time.monotonic() - started
    assert finished and result == 0 and took < 7, (result, took)
    (pull,) = queue.pulls()
    assert "pull.timeout_s=4" in pull["reason"], pull
    queue.close()


def test_a_node_stopped_mid_fetch_drops_the_partial_study_and_fetches_it_again(tmp_path):
    """A study part-fetched when the node stopped must not become a job of part of the study."""
    study = "1.2.826.0.1.3680043.8.498.60"
    queue = JobQueue(tmp_path / "state")
    queue.pull_begin(study)
    path = queue.instance_path(study, "1.2.3", "1.2.3.4")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    queue.add_instance(study, "1.2.3", "1.2.3.4", path, "0" * 64, "DX", "", "DICOMweb")
    assert queue.seal_stable(0.0, now=time.time() + 60) == []  # held while it is fetched
    queue.close()
    queue = JobQueue(tmp_path / "state")  # as after kill -9
    queue.recover(max_job_attempts=3)
    assert queue.pending_count(study) == 0 and not path.exists() and queue.pull_due(study)
    queue.close()


@pytest.mark.parametrize("timeout_s", [0.5, 86401])
def test_pull_timeout_s_out_of_range_is_refused_naming_the_field(timeout_s):
    from radfm.node.node_config import NodeConfigError

    with pytest.raises(NodeConfigError, match=r"pull\.timeout_s: expected a number of seconds"):
        NodeConfig.from_dict({"allowed_callers": [{"ae_title": "A", "host": "h"}],
                              "pull": {"url": "http://127.0.0.1/dicom-web", "timeout_s": timeout_s}})
