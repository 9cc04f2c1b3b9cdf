"""pretrain.json (with --tracking mlflow), instruct.json, the DDP mixin and inference.json, tiny and on CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from .conftest import RADFM_BUNDLE, SMALL_LOADER, run_bundle

META = RADFM_BUNDLE / "configs" / "metadata.json"


def _common(phantom_data, tmp_path, run_name):
    return dict(
        bundle_root=str(tmp_path), run_name=run_name, train_manifest=str(phantom_data["train"]),
        val_manifest=str(phantom_data["val"]), image_loader=SMALL_LOADER, cache_images=True, epochs=1,
        batch_size=4, accumulation_steps=2, warmup_steps=1, max_length=192, val_limit=4, max_new_tokens=4,
        val_batch_size=4, precision="fp32",
    )


@pytest.fixture(scope="module")
def pretrained(phantom_data, tmp_path_factory):
    """pretrain.json from the tiny preset with MLflow tracking into a local store."""
    tmp_path = tmp_path_factory.mktemp("pretrain")
    workflow = run_bundle(RADFM_BUNDLE / "configs" / "pretrain.json", META, tracking="mlflow",
                          experiment_name="radfm_test", batching="mixed",  # instruct below: the default
                          **{**_common(phantom_data, tmp_path, "pretrain"),
                             # an expression, as in the config: MONAI appends the executed-config
                             # file name to it with `+`
                             "output_dir": f"$'{tmp_path / 'out'}'"})
    return tmp_path, workflow


def test_pretrain_freezes_llm_and_tracks_mlflow(pretrained):
    tmp_path, workflow = pretrained
    model_dir = tmp_path / "out" / "model"
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    from radfm.engines.build import load_model
    from radfm.model.radfm import RadFM

    trained = RadFM.from_pretrained(model_dir)
    initial = load_model("tiny", seed=0)  # the config's init (seed 0)
    # default frozen_llm_epochs=1 and a 1-epoch run: the LLM must be exactly the initial one
    for name, value in initial.language_model.state_dict().items():
        assert torch.equal(value, trained.language_model.state_dict()[name]), name
    assert not torch.equal(initial.vision_encoder.patch_embedding.projection.weight,
                           trained.vision_encoder.patch_embedding.projection.weight)

    from mlflow.tracking import MlflowClient

    store = tmp_path / "out" / "mlruns.db"
    assert store.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("radfm_test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["learning_rate"] == "0.0001" and run.data.params["frozen_llm_epochs"] == "1"
    assert run.data.params["batching"] == "mixed"
    assert "train_loss" in run.data.metrics and "val_accuracy" in run.data.metrics
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert any(path.endswith(".json") for path in artifacts), artifacts  # the resolved config


def test_instruct_from_pretrained_and_inference_cli(pretrained, phantom_data, tmp_path):
    pre_dir = pretrained[0] / "out" / "model"
    workflow = run_bundle(RADFM_BUNDLE / "configs" / "instruct.json", META, model=str(pre_dir),
                          checkpoint_every=2, **_common(phantom_data, tmp_path, "instruct"))
    out = tmp_path / "runs" / "instruct"
    assert (out / "model" / "model.safetensors").is_file()
    loader = workflow.parser.get_parsed_content("train#dataloader")
    from radfm.data.sampler import ModalityBatchSampler

    assert isinstance(loader.batch_sampler, ModalityBatchSampler)  # the default: the paper's 2D x 4 / 3D x 1
    sizes = {len(batch) for batch in loader.batch_sampler}
    assert sizes <= {1, 2, 3, 4} and 1 in sizes
    # the last checkpoint is the epoch's end (every 2 iterations and at the epoch end; n_saved=1)
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == [f"train_checkpoint_{len(loader)}.pt"]
    metrics = workflow.parser.get_parsed_content("validate#evaluator").state.metrics
    assert 0.0 <= metrics["val_accuracy"] <= 1.0

    # inference.json through the real `python -m monai.bundle run` command line
    (out / "model" / "preprocess.json").write_text(json.dumps({"loader": "radfm.transforms.preprocess_scan",
                                                                "size_2d": [64, 64], "size_3d": [64, 64]}))
    answers = tmp_path / "answers.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(RADFM_BUNDLE / "configs" / "inference.json"),
         "--meta_file", str(META), "--bundle_root", str(RADFM_BUNDLE), "--model_dir", str(out / "model"),
         "--max_new_tokens", "4", "--output_file", str(answers)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("  Q: ") == 4 and result.stdout.count("  A: ") == 4
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(rows) == 4 and len(rows[0]["images"]) == 2  # one prompt holds two scans (2D + 3D)


def test_multi_gpu_mixin_runs_as_one_process(phantom_data, tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    workflow = run_bundle([RADFM_BUNDLE / "configs" / "instruct.json", RADFM_BUNDLE / "configs" / "multi_gpu_train.json"],
                          META, model="tiny", val_interval=0, **_common(phantom_data, tmp_path, "ddp"))
    network = workflow.parser.get_parsed_content("network")
    assert isinstance(network, torch.nn.parallel.DistributedDataParallel)
    assert not torch.distributed.is_initialized()  # finalize tore the group down
    assert (tmp_path / "runs" / "ddp" / "model" / "model.safetensors").is_file()
