"""``radfm evaluate`` sharded under torchrun (2 CPU processes, gloo) gives the one-process metrics.json."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from radfm.doors.evaluate import _merge_shards
from radfm.engines.distributed import rank_slice


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    from radfm.data.phantoms import make_phantoms

    folder = tmp_path_factory.mktemp("sharded_eval")
    make_phantoms(folder / "data", n=12, seed=0, progress=False)
    return folder / "data" / "test.jsonl"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A saved tiny model: every process (each rank, and the one-process run) loads the same weights."""
    from radfm.engines.build import load_model

    folder = tmp_path_factory.mktemp("tiny_model") / "tiny"
    model, processor = load_model("tiny", seed=0)
    model.save_pretrained(folder, processor=processor)
    return folder


def test_rank_slices_cover_every_case_once():
    items = list(range(7))
    slices = [rank_slice(items, r, 3) for r in range(3)]
    assert sorted(i for s in slices for i in s) == items and [len(s) for s in slices] == [3, 2, 2]
    with pytest.raises(ValueError):
        rank_slice(items, 3, 3)


def _options(manifest: Path, model: Path, output: Path) -> list[str]:
    return ["--manifest", str(manifest), "--model", str(model), "--output", str(output), "--batch_size", "2",
            "--max_new_tokens", "3", "--bertscore", "False", "--n_resamples", "50"]


def test_two_processes_give_the_same_metrics_as_one(manifest, model_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    sharded = tmp_path / "sharded"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
               "-m", "radfm.cli", "evaluate", *_options(manifest, model_dir, sharded)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]

    from radfm.doors.evaluate import evaluate

    single = tmp_path / "single"
    evaluate(manifest=str(manifest), model=str(model_dir), output=str(single), batch_size=2, max_new_tokens=3,
             bertscore=False, n_resamples=50)

    def records(folder: Path) -> list[dict]:
        return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]

    n_cases = len(manifest.read_text().splitlines())
    assert len(records(sharded)) == len(records(single)) == n_cases
    assert records(sharded) == records(single)  # the same predictions, merged in case order
    assert not list(sharded.glob("predictions.rank*.jsonl"))  # shards merged and removed

    def metrics(folder: Path) -> dict:
        document = json.loads((folder / "metrics.json").read_text())
        text = json.dumps(document).replace(str(folder), "<OUT>")  # paths name the output folder
        return json.loads(text)

    assert metrics(sharded) == metrics(single)
    assert (sharded / "report.md").is_file()


def test_merge_keeps_earlier_records_and_orders_new_ones(tmp_path):
    line = lambda i: json.dumps({"id": f"c{i}", "dataset": "d", "task": "vqa", "reference": "r",  # noqa: E731
                                 "prediction": "p", "model": "m"}) + "\n"
    (tmp_path / "predictions.jsonl").write_text(line(0))
    (tmp_path / "predictions.rank0.jsonl").write_text(line(3) + line(1))
    (tmp_path / "predictions.rank1.jsonl").write_text(line(2))
    _merge_shards(tmp_path / "predictions.jsonl", [tmp_path / f"predictions.rank{r}.jsonl" for r in range(2)],
                  ["c0", "c1", "c2", "c3"])
    ids = [json.loads(x)["id"] for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert ids == ["c0", "c1", "c2", "c3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]
