"""``radfm node``: usage errors before anything starts, and ``status`` listing jobs with their reasons."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from radfm.cli import main
from radfm.node.job_queue import JobQueue


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


def test_ctrl_c_stops_the_node_at_once_and_keeps_its_state(tmp_path):
    """SIGINT: the node closes its job table and exits 0 within seconds (the interpreter's teardown of the
    native libraries took 10-40 s after the node had closed everything); the job table still opens."""
    import signal
    import subprocess
    import sys
    import threading

    config = _config(tmp_path, port=0)
    process = subprocess.Popen([sys.executable, "-m", "radfm.cli", "node", "run", "--config", config],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    deadline = time.monotonic() + 300
    while not any("radfm node:" in line and "listening" in line for line in lines):
        assert process.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(0.2)
    signalled = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=60)
    finally:
        process.kill()
    assert code == 0, "".join(lines)[-3000:]
    assert time.monotonic() - signalled < 8, f"stopping took {time.monotonic() - signalled:.1f} s"
    result = subprocess.run([sys.executable, "-m", "radfm.cli", "node", "status", "--config", config, "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and json.loads(result.stdout)["jobs"] == [], result.stderr
