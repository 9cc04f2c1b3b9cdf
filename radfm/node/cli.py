"""``radfm node``: run the DICOM node, list its jobs."""

from __future__ import annotations

import json as jsonlib
import logging
import os
import signal
import sys
import time

from radfm.utils.cli import UsageError


def _config(config: str | None):
    from radfm.node.node_config import NodeConfig, NodeConfigError

    if config is None:
        raise UsageError("--config is required: the node's JSON config file (see docs/hospital.md)")
    try:
        return NodeConfig.from_file(str(config))
    except NodeConfigError as error:
        raise UsageError(str(error)) from None


class NodeCommands:
    """The DICOM node: takes studies from a PACS (C-STORE or DICOMweb), sends RadFM's reports back as SR."""

    def run(self, config: str | None = None, log_level: str = "INFO") -> None:
        """Run the node in the foreground until SIGTERM or Ctrl-C.

        Args:
            config: the node's JSON config file (AE title, port, allowed callers, rules, destinations).
            log_level: DEBUG | INFO | WARNING.
        """
        settings = _config(config)
        level = getattr(logging, str(log_level).upper(), None)
        if not isinstance(level, int):
            raise UsageError(f"--log_level={log_level!r}: expected DEBUG, INFO or WARNING")
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("radfm.node").setLevel(level)
        from radfm.node.node_runner import NodeRunner

        node = NodeRunner(settings)
        stopping = []

        def stop(signum, _frame) -> None:
            if not stopping:
                stopping.append(signum)
                logging.getLogger("radfm.node").info("signal %d: stopping", signum)
                node.request_stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        node.start()
        print(f"radfm node: {settings.ae_title} listening on {settings.host}:{node.scp.port} "
              f"(state in {settings.state_dir}); reports are UNVERIFIED research output", flush=True)
        node.wait()
        node.stop()
        if stopping:  # a signal ended the run: the job table, spool and workers are closed
            # Why: the interpreter's teardown of the native libraries (torch, ITK, ...) took 10-40 s
            # after everything of ours had closed; nothing is left for it to do here.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def status(self, config: str | None = None, json: bool = False, limit: int = 50) -> None:
        """List the node's newest jobs (study, state, tries, reason, deliveries, times per stage) and pulls not done.

        Args:
            config: the node's JSON config file.
            json: print the job records as JSON.
            limit: how many jobs, newest first.
        """
        settings = _config(config)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UsageError(f"--limit={limit!r}: expected a whole number >= 1")
        from radfm.node.job_queue import JobQueue

        if not (settings.state_path / "node.sqlite").is_file():
            raise UsageError(f"{settings.state_dir}: no job table yet (the node has not run with this config)")
        queue = JobQueue(settings.state_path)
        try:
            jobs = queue.jobs(limit)
            waiting = queue.waiting_instances()
            pulls = queue.pulls(limit)  # pull mode: studies retrying or failed (fetched ones are not listed)
        finally:
            queue.close()
        if json:
            print(jsonlib.dumps({"jobs": jobs, "instances_waiting": waiting, "pulls": pulls}, indent=2))
            return
        print(f"{waiting} instance(s) received, study not yet complete")
        if not jobs:
            print("no jobs")
        for job in jobs:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["queued_at"] or 0))
            sent = ", ".join(f"{d['destination']}={d['state']}({d['attempts']})" for d in job["deliveries"]) or "-"
            stages = " ".join(f"{k}={v:.2f}s" for k, v in job["timings"].items() if k != "answered_at")
            print(f"job {job['id']:>5}  {job['state']:<8} {when}  study {job['study_uid']}  "
                  f"{job['n_instances']} inst  tries {job['attempts']}  sent: {sent}  {stages}")
            if job["reason"]:
                print(f"           reason: {job['reason']}")
        for pull in pulls:
            print(f"pull         {pull['state']:<8} study {pull['study_uid']}  tries {pull['attempts']}"
                  + (f"  reason: {pull['reason']}" if pull["reason"] else ""))
