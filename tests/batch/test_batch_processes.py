"""``radfm batch`` across processes: a driver killed with SIGKILL mid-run, then resumed; two simulated nodes.

The killed driver is a subprocess connected to the session's Ray; the two-node run is a subprocess
with Ray's own multi-node test utility (``ray.cluster_utils.Cluster``), since one process holds one
Ray connection.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from radfm.batch.parquet_results import part_files, read_results
from radfm.batch.ray_pipeline import run_batch

ROOT = Path(__file__).resolve().parents[2]

_DRIVER = """
import sys
from radfm.batch.ray_pipeline import run_batch
run_batch(sys.argv[1], manifest=sys.argv[2], address=sys.argv[3], batch_size=1, progress=False, max_new_tokens=8)
"""

_TWO_NODES = """
import json, os, sys
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray
from ray.cluster_utils import Cluster

store = 80 * 1024**2
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                         "object_store_memory": store})
cluster.add_node(num_cpus=1, object_store_memory=store)
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
try:
    from radfm.batch.ray_pipeline import run_batch
    outcome = run_batch(sys.argv[1], manifest=sys.argv[2], limit=8, batch_size=2, progress=False, max_new_tokens=8)
    nodes = sorted(node["NodeID"][:12] for node in ray.nodes() if node["Alive"])
    print("RESULT " + json.dumps({"answered": outcome["answered"], "failed": outcome["failed"], "nodes": nodes}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def _raw_keys(output: Path) -> list[str]:
    return [k for path in part_files(output) for k in pq.read_table(path, columns=["key"]).column("key").to_pylist()]


def test_kill_9_of_the_driver_loses_only_the_batches_in_flight_and_a_rerun_finishes_exactly_once(
        ray_session, phantom_manifest, tmp_path):
    output = tmp_path / "out"
    log = tmp_path / "driver.log"  # a file, not a pipe: a full pipe nobody reads would stall the driver
    with log.open("wb") as sink:
        driver = subprocess.Popen([sys.executable, "-c", _DRIVER, str(output), str(phantom_manifest), ray_session],
                                  cwd=tmp_path, env=_env(), stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while len(part_files(output)) < 3:  # answers are arriving: the run is under way
            assert driver.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the driver wrote nothing in 240 s: " + log.read_text(
                errors="replace")[-3000:]
            time.sleep(0.02)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait()
    written = _raw_keys(output)
    assert 3 <= len(written) < 120, "the kill came after the run had finished: nothing was interrupted"
    assert len(written) == len(set(written))
    # the rerun skips every study already written and answers the rest
    outcome = run_batch(str(output), manifest=str(phantom_manifest), batch_size=8, progress=False, max_new_tokens=8)
    assert outcome["skipped"] == len(written) and outcome["answered"] == 120 - len(written)
    keys = _raw_keys(output)
    assert len(keys) == len(set(keys)) == 120  # each study once, before any deduplication on read
    rows = read_results(output)
    assert len(rows) == 120 and rows["error"].isna().all()


def test_two_simulated_nodes_run_the_same_pipeline(phantom_manifest, tmp_path):
    output = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", _TWO_NODES, str(output), str(phantom_manifest)], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=400)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert (result["answered"], result["failed"]) == (8, 0) and len(result["nodes"]) == 2
    rows = read_results(output)
    used = {name.split(":")[0] for name in [*rows["read_node"], *rows["generate_node"]]}
    assert used == set(result["nodes"])  # one node read while the other held the model actor
