"""The FSDP mixin with 2 CPU processes (gloo, torchrun) trains to the same weights as one process,
with validation on (sharded, on gathered parameters) and MLflow tracking (run finished, unsharded
parameter count, the same validation accuracy as one process)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import torch
from safetensors.torch import load_file

from .conftest import INSTRUCT, RADFM_BUNDLE, SMALL_GRID, run_bundle

META = RADFM_BUNDLE / "configs" / "metadata.json"
NO_DROPOUT = {"vision": {"dropout": 0.0, "emb_dropout": 0.0}}  # dropout masks differ between ranks


def _overrides(phantom_data, root, batch_size: int) -> dict:
    # lr 0.01 and clipping at 1.0 (the config's default): large, clipped updates, so that a
    # rank-local gradient norm (instead of FSDP's global one) would show
    return dict(bundle_root=str(root), run_name="r", model="tiny", train_manifest=str(phantom_data["train"]),
                val_manifest=str(phantom_data["val"]), image_grid=SMALL_GRID, cache_images=True, epochs=1,
                batching="mixed", batch_size=batch_size, accumulation_steps=1, warmup_steps=1, learning_rate=0.01,
                max_length=192, val_interval=1, val_limit=4, val_batch_size=1, max_new_tokens=4, checkpoint_every=2,
                config_overrides=NO_DROPOUT)


def test_fsdp_two_processes_match_one_process_with_the_global_batch(phantom_data, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
            "-m", "monai.bundle", "run", "--config_file",
            str([*map(str, INSTRUCT), str(RADFM_BUNDLE / "configs" / "multi_gpu_fsdp.json")]),
            "--meta_file", str(META), "--fsdp_param_dtype", "$torch.float32", "--tracking", "mlflow",
            "--experiment_name", "fsdp"]  # the store: <output_dir>/mlruns.db
    for key, value in _overrides(phantom_data, tmp_path / "fsdp", batch_size=2).items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, (dict, bool)) else str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]

    one = run_bundle(INSTRUCT, META, **_overrides(phantom_data, tmp_path / "one", batch_size=4))
    single_accuracy = one.parser.get_parsed_content("validate#evaluator").state.metrics["val_accuracy"]

    sharded = load_file(str(tmp_path / "fsdp" / "runs" / "r" / "model" / "model.safetensors"))
    single = load_file(str(tmp_path / "one" / "runs" / "r" / "model" / "model.safetensors"))
    assert sharded.keys() == single.keys()
    for name in single:
        torch.testing.assert_close(sharded[name], single[name], atol=2e-4, rtol=0, msg=name)
    from radfm.engines.build import load_model

    initial_model = load_model("tiny", seed=0, config_overrides=NO_DROPOUT).model
    initial = initial_model.state_dict()
    moved = max((single[k] - initial[k]).abs().max().item() for k in single if k in initial)
    assert moved > 1e-2  # the comparison above is about real updates, not two untouched models

    # mid-run checkpoints hold the full (gathered) model, not a rank's shard
    checkpoint = sorted((tmp_path / "fsdp" / "runs" / "r" / "checkpoints").glob("*.pt"))[-1]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in single.items()}

    # MLflow (rank 0 only): the run finished, the parameter count is the unsharded one, and the
    # sharded validation reports the accuracy of all 4 cases, as one process does
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'fsdp' / 'runs' / 'r' / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fsdp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["parameters"] == str(sum(p.numel() for p in initial_model.parameters()))
    assert runs[0].data.metrics["val_accuracy"] == single_accuracy
