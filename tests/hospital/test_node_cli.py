"""``radfm node``: usage errors before anything starts, and ``status`` listing jobs with their reasons."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from radfm.cli import main
from radfm.hospital.job_queue import JobQueue


def _config(tmp_path, **extra) -> str:
    path = tmp_path / "node.json"
    path.write_text(json.dumps({"allowed_callers": [{"ae_title": "ORTHANC", "host": "127.0.0.1"}],
                                "state_dir": "state", **extra}), encoding="utf-8")
    return str(path)


def test_run_without_config_and_with_a_bad_config_are_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["node", "run"])
    assert exit_.value.code == 2 and "--config is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["node", "run", "--config", _config(tmp_path, port=-1)])
    assert exit_.value.code == 2 and "node.json: port: expected a whole number >= 0" in capsys.readouterr().err


def test_status_lists_jobs_states_and_reasons(tmp_path, capsys):
    config = _config(tmp_path)
    with pytest.raises(SystemExit):
        main(["node", "status", "--config", config])
    assert "no job table yet" in capsys.readouterr().err
    queue = JobQueue(tmp_path / "state")
    for study in ("1.2.3", "4.5.6"):
        path = queue.instance_path(study, f"{study}.1", f"{study}.1.1")
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        queue.add_instance(study, f"{study}.1", f"{study}.1.1", path, hashlib.sha256(b"x").hexdigest(), "US", "", "ORTHANC")
    first, second = queue.seal_stable(0.0, now=time.time() + 1)
    queue.fail_job(first, "no series matches the rules (modalities in the study: US)")
    queue.close()
    main(["node", "status", "--config", config])
    out = capsys.readouterr().out
    assert f"job {first:>5}  failed" in out and "reason: no series matches the rules" in out
    assert f"job {second:>5}  queued" in out and "study 4.5.6" in out
    main(["node", "status", "--config", config, "--json", "--limit", "1"])
    record = json.loads(capsys.readouterr().out)
    assert [job["id"] for job in record["jobs"]] == [second] and record["instances_waiting"] == 0
