"""DDP over 2 CPU processes (gloo) gives the same weights as one process with the global batch,
with validation on: sharded over the ranks (each case once), the metric that of the whole set."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_one_process_with_global_batch(tmp_path):
    out = tmp_path / "ddp.pt"
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), "4"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-3000:]

    import importlib.util

    spec = importlib.util.spec_from_file_location("ddp_worker_local", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    single = worker.train(batch_size=8)  # the same global batch in one process
    ddp_state = torch.load(out, weights_only=True)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-4, atol=1e-6, msg=name)
    # and training moved the weights (the comparison is not between two untouched models)
    torch.manual_seed(0)
    untouched = worker.load_toys().ToyRadFM().state_dict()
    assert not torch.equal(untouched["vision_encoder.weight"], ddp_state["vision_encoder.weight"])

    # validation ran every epoch (2 epochs), sharded: each case once per epoch, on one rank only
    import json

    ranks = [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in range(2)]
    ids = [case["ids"] for case in worker.val_cases()]
    seen = ranks[0]["seen_ids"] + ranks[1]["seen_ids"]
    assert sorted(seen) == sorted(ids * 2)
    assert not set(ranks[0]["seen_ids"]) & set(ranks[1]["seen_ids"])
    assert len(ranks[0]["seen_ids"]) == 2 * 3 and len(ranks[1]["seen_ids"]) == 2 * 2  # 3 + 2 cases, no padding
    # every rank reports the accuracy of the whole set: the same as one process validating all 5 cases
    alone = worker.make_evaluator(distributed=False)
    alone.run()
    assert sorted(alone.seen_ids) == sorted(ids)
    for r in ranks:
        assert r["metrics"]["val_accuracy"] == alone.state.metrics["val_accuracy"]
