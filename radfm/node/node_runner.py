"""The DICOM node at work: receive, seal stable studies into jobs, answer them, deliver the reports.

Threads (all stop on :meth:`NodeRunner.stop`):
* the Storage SCP's (pynetdicom) write received instances to ``state_dir/incoming``;
* ``sealer``: every 0.2 s, studies with no new instance for ``stable_after_s`` become jobs;
* ``runner-N`` (``max_studies_in_memory`` of them): claim a job, choose its series
  (:func:`~radfm.dicom.series_rules.select_series`), ask the request path
  (:meth:`RequestPath.run_blocking <radfm.answering.request.RequestPath.run_blocking>`) one
  :class:`~radfm.answering.request.AnswerRequest` per series, write our Comprehensive SR
  (:func:`radfm.dicom.sr.build_sr`) next to the job; only these threads hold images, so at
  most ``max_studies_in_memory`` studies are in memory at once;
* ``sender``: deliveries due now, one try each, retried with doubling waits;
* ``pull`` (with a ``pull`` section): every ``pull.every_s``, one DICOMweb poll
  (:class:`~radfm.node.dicomweb_pull.DicomwebPull`), bounded by ``pull.timeout_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from radfm.dicom.series_rules import select_series
from radfm.node.destinations import send
from radfm.node.job_queue import Job, JobQueue
from radfm.node.node_config import NodeConfig
from radfm.node.storage_scp import StorageSCP
from radfm.utils.patient_data import redact

logger = logging.getLogger("radfm.node")


class JobFailed(Exception):
    """A job that cannot succeed (nothing to answer about, the model refused it); the message says why."""


class NodeRunner:
    """The node: ``answerer`` (an answerer of :func:`radfm.answering.answerer.load_answerer`, or loaded from
    ``config.model`` on ``config.engine``)."""

    def __init__(self, config: NodeConfig, answerer: Any = None,
                 sender: Callable[..., str | None] = send) -> None:
        from radfm.answering.limits import Limits
        from radfm.answering.request import RequestPath

        self.config = config
        self.queue = JobQueue(config.state_path)
        if answerer is None:
            answerer = load_answerer(config)
        self.answerer = answerer
        limits = Limits(max_scan_bytes=config.max_scan_bytes, max_new_tokens=max(config.max_new_tokens, 1),
                        parallel_preprocess=config.max_studies_in_memory, max_queue=config.max_studies_in_memory,
                        max_files=config.max_instances_per_study, generation_timeout_s=config.generation_timeout_s)
        (config.state_path / "tmp-requests").mkdir(parents=True, exist_ok=True)
        self.path = RequestPath(answerer, limits, temp_root=config.state_path / "tmp-requests")
        self.scp = StorageSCP(config, self.queue)
        self.pull = None
        self._send = sender
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._active = 0
        self.peak_active = 0  # most jobs holding images at once (never above max_studies_in_memory)
        self._active_lock = threading.Lock()

    # ---- lifetime ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Requeue interrupted jobs, start the Storage SCP and the sealer, sender, runner (and pull) threads."""
        requeued = self.queue.recover(self.config.max_job_attempts)
        if requeued:
            logger.info("%d interrupted job(s) queued again", requeued)
        self.scp.start()
        loops = [("sealer", self._seal_loop), ("sender", self._send_loop)]
        loops += [(f"runner-{i}", self._run_loop) for i in range(self.config.max_studies_in_memory)]
        if self.config.pull is not None:
            from radfm.node.dicomweb_pull import DicomwebPull

            self.pull = DicomwebPull(self.config, self.scp, stop=self._stop)
            loops.append(("pull", self._pull_loop))
        for name, target in loops:
            thread = threading.Thread(target=target, name=f"radfm-node-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop every thread (each finishes its current step), then the SCP, the request path and the queue."""
        self._stop.set()
        self.scp.stop()
        for thread in self._threads:
            thread.join(timeout=60)
        self.path.close()
        self.queue.close()

    def request_stop(self) -> None:
        """Ask :meth:`wait` to return (safe from a signal handler); then call :meth:`stop`."""
        self._stop.set()

    def wait(self) -> None:
        """Block until :meth:`stop` is called (from a signal handler)."""
        while not self._stop.wait(0.5):
            pass

    # ---- loops ------------------------------------------------------------------------------------
    def _seal_loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.queue.seal_stable(self.config.stable_after_s)
            except Exception:  # a failing step is logged and tried again; the node keeps receiving
                logger.exception("sealing stable studies failed")

    def _pull_loop(self) -> None:
        from radfm.node.dicomweb_pull import PullError

        while not self._stop.is_set():
            try:
                self.pull.poll_once()  # bounded by pull.timeout_s; a failing study is recorded on it
            except PullError as error:  # the search or the server: tried again at the next poll
                logger.warning("DICOMweb pull failed: %s", error)
            except Exception:  # a bug must not stop the pull loop
                logger.exception("DICOMweb pull failed")
            self._stop.wait(self.config.pull.every_s)

    def _run_loop(self) -> None:
        while not self._stop.is_set():
            if not self.run_next():
                self._stop.wait(0.2)

    def run_next(self) -> bool:
        """Claim the oldest queued job and run it; a failure is recorded on the job. False: none queued."""
        job = self.queue.claim()
        if job is None:
            return False
        with self._active_lock:
            self._active += 1
            self.peak_active = max(self.peak_active, self._active)
        try:
            self.run_job(job)
        except JobFailed as error:
            self.queue.fail_job(job.id, redact(str(error)))
        except Exception as error:  # one bad study must not stop the others
            logger.exception("job %d: unexpected error", job.id)
            # the reason is status output: a library's message may quote a patient's value
            self.queue.fail_job(job.id, redact(f"{type(error).__name__}: {error}"))
        finally:
            with self._active_lock:
                self._active -= 1
        return True

    def _send_loop(self) -> None:
        by_name = {d.name: d for d in self.config.destinations}
        while not self._stop.is_set():
            for row in self.queue.due_deliveries():
                if self._stop.is_set():
                    return
                destination = by_name.get(row["destination"])
                if destination is None:
                    error = f"destination {row['destination']!r} is no longer in the config"
                    self.queue.delivery_result(row, error, 0, 0, max_attempts=1)
                    continue
                error = self._send(Path(row["sr_path"]), destination, self.config.ae_title)
                self.queue.delivery_result(row, error, self.config.retry_first_s, self.config.retry_max_s,
                                           self.config.max_attempts)
            self._stop.wait(0.2)

    # ---- one job ----------------------------------------------------------------------------------
    def run_job(self, job: Job) -> None:
        """Answer each selected series of ``job`` and write its SR; then hand the SRs to the sender."""
        import pydicom

        from radfm.answering.refusal import RequestError
        from radfm.answering.request import AnswerRequest, ScanInput
        from radfm.dicom.sr import SRExportError, build_sr, read_dicom_headers, write_dataset

        row = self.queue.jobs_row(job.id)
        timings = {"receive": row["last_received_at"] - row["first_received_at"],
                   "queue_wait": row["started_at"] - row["queued_at"]}
        logger.info("job %d: study %s, try %d", job.id, job.study_uid, job.attempts)
        chosen = select_series(job.series, self.config.rules)
        if not chosen:
            seen = ", ".join(sorted({f"{s.get('modality') or '?'}" for s in job.series}))
            raise JobFailed(f"no series matches the rules (modalities in the study: {seen})")
        results = []
        preprocess = generate = 0.0
        for series, rule in chosen:
            uid = series["series_uid"]
            folder = job.folder / "input" / uid
            sr_path = job.folder / f"sr-{uid}.dcm"
            if sr_path.is_file():  # written before an interruption: send that one, never a second report
                sop_uid = pydicom.dcmread(sr_path, stop_before_pixels=True).SOPInstanceUID
                results.append({"series_uid": uid, "rule": rule.name, "sr_path": str(sr_path), "sop_uid": sop_uid})
                continue
            if not folder.is_dir():
                raise JobFailed(f"the instances of series {uid} are gone from {folder.parent}")
            request = AnswerRequest(rule.prompt, [ScanInput(f"series {uid}", path=folder)],
                                    {"max_new_tokens": self.config.max_new_tokens})
            try:
                result = self.path.run_blocking(request)
            except RequestError as error:
                raise JobFailed(f"series {uid} ({rule.name}): {error}") from None
            preprocess += result.timings.get("preprocess", 0.0)
            generate += result.timings.get("generate", 0.0)
            try:
                sources = read_dicom_headers(folder)
                sr = build_sr(result.text or "", result.prompt or rule.prompt, sources, self.answerer.identity,
                              parameters=[f"rule={rule.name}", f"max_new_tokens={self.config.max_new_tokens}"],
                              institution_name=self.config.institution_name)
            except SRExportError as error:
                raise JobFailed(f"series {uid}: no report written: {error}") from None
            write_dataset(sr, sr_path)
            results.append({"series_uid": uid, "rule": rule.name, "sr_path": str(sr_path),
                            "sop_uid": str(sr.SOPInstanceUID)})
            logger.info("job %d: series %s answered by rule %s (%d characters)", job.id, uid, rule.name,
                        len(result.text or ""))
        timings.update(preprocess=preprocess, generate=generate, answered_at=time.time())
        self.queue.add_timings(job.id, timings)
        self.queue.answered(job.id, results, [d.name for d in self.config.destinations])


def load_answerer(config: NodeConfig):
    """The model behind the node (``config.model`` or the demo model), loaded once at start."""
    from radfm.answering.engines import load_answerer
    from radfm.model.loading import resolve_model_dir

    placement = {} if config.engine == "vllm" else {"device": config.device}
    return load_answerer(resolve_model_dir(config.model), config.engine, **placement)
