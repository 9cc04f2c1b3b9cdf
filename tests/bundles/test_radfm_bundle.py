"""train.json + pretrain.json (MLflow), train.json + instruct.json, the DDP mixin, inference.json and evaluate.json.

Tiny and on CPU. The grid checks: a model given scans at a grid it was not trained at fails
with an error naming both grids, in training and in inference.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from .conftest import INSTRUCT, PRETRAIN, RADFM_BUNDLE, SMALL_GRID, run_bundle

META = RADFM_BUNDLE / "configs" / "metadata.json"
STANDARD_GRID = {"size_2d": [512, 512], "size_3d": [256, 256], "max_depth": 64}


def _common(phantom_data, tmp_path, run_name):
    return dict(
        bundle_root=str(tmp_path), run_name=run_name, train_manifest=str(phantom_data["train"]),
        val_manifest=str(phantom_data["val"]), cache_images=True, epochs=1,
        batch_size=4, accumulation_steps=2, warmup_steps=1, max_length=192, val_limit=4, max_new_tokens=4,
        val_batch_size=4, precision="fp32",
    )


@pytest.fixture(scope="module")
def pretrained(phantom_data, tmp_path_factory):
    """train.json + pretrain.json from the tiny preset at a 64² grid, MLflow into a SQLite store,
    scans through MONAI's PersistentDataset."""
    tmp_path = tmp_path_factory.mktemp("pretrain")
    store = tmp_path / "tracking.db"
    workflow = run_bundle(PRETRAIN, META, tracking="mlflow", tracking_uri=f"sqlite:///{store}",
                          experiment_name="radfm_test", batching="mixed",  # instruct below: the default
                          image_grid=SMALL_GRID,
                          scan_dataset={"_target_": "PersistentDataset", "_mode_": "callable",
                                        "cache_dir": str(tmp_path / "scan_cache")},
                          **{**_common(phantom_data, tmp_path, "pretrain"),
                             # a plain path, as a user types it: MONAI appends the executed-config
                             # file name to its raw text with `+`
                             "output_dir": str(tmp_path / "out")})
    return tmp_path, workflow, store


def test_pretrain_freezes_llm_and_tracks_mlflow(pretrained):
    tmp_path, workflow, store = pretrained
    model_dir = tmp_path / "out" / "model"
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    # the grid travels with the model
    assert json.loads((model_dir / "processor_config.json").read_text())["image_processor"]["size_2d"] == [64, 64]
    assert list((tmp_path / "scan_cache").glob("*.pt"))  # PersistentDataset cached the preprocessed scans
    from radfm.engines.build import load_model
    from radfm.model.radfm import RadFMForConditionalGeneration

    trained = RadFMForConditionalGeneration.from_pretrained(model_dir)
    initial = load_model("tiny", seed=0).model  # the config's init (seed 0)
    # frozen_llm_epochs=1 in pretrain.json and a 1-epoch run: the LLM must be exactly the initial one
    for name, value in initial.language_model.state_dict().items():
        assert torch.equal(value, trained.language_model.state_dict()[name]), name
    assert not torch.equal(initial.vision_encoder.patch_embedding.projection.weight,
                           trained.vision_encoder.patch_embedding.projection.weight)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("radfm_test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["learning_rate"] == "0.0001" and run.data.params["frozen_llm_epochs"] == "1"
    assert run.data.params["batching"] == "mixed" and json.loads(run.data.params["image_grid"]) == SMALL_GRID
    assert run.data.params["train_data"] == str(workflow.parser.get_parsed_content("train_manifest"))
    assert run.data.params["git_commit"] and run.data.params["val_data"].endswith(".jsonl")
    assert "train_loss" in run.data.metrics and "val_accuracy" in run.data.metrics
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert any(path.endswith(".json") for path in artifacts), artifacts  # the resolved config


def test_instruct_from_pretrained_and_inference_cli(pretrained, phantom_data, tmp_path):
    pre_dir = pretrained[0] / "out" / "model"
    # no image_grid override: a saved model's own grid (64², from its preprocess.json) is the default
    store = tmp_path / "instruct.db"
    workflow = run_bundle(INSTRUCT, META, model=str(pre_dir), checkpoint_every=2, tracking="mlflow",
                          tracking_uri=f"sqlite:///{store}", experiment_name="radfm_instruct",
                          mlflow_log_model=True, mlflow_registered_model_name="radfm-instruct-test",
                          **_common(phantom_data, tmp_path, "instruct"))
    assert workflow.parser.get_parsed_content("image_grid") == SMALL_GRID
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    (run,) = client.search_runs([client.get_experiment_by_name("radfm_instruct").experiment_id])
    assert run.data.params["frozen_llm_epochs"] == "0" and run.data.params["model"] == str(pre_dir)
    assert {"train_loss", "val_accuracy"} <= set(run.data.metrics)
    assert any(a.path.endswith(".json") for a in client.list_artifacts(run.info.run_id))  # the executed config
    # the --mlflow_log_model switch: the final model is a registered pyfunc model of this very run
    (version,) = client.search_model_versions("name='radfm-instruct-test'")
    assert version.run_id == run.info.run_id
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

    # inference.json through the real `python -m monai.bundle run` command line, the weights as
    # models/model.pt (a weights_only state dict) loaded by MONAI's CheckpointLoader
    from radfm.engines.build import export_state_dict

    ckpt = export_state_dict(out / "model", tmp_path / "models" / "model.pt")
    answers = tmp_path / "answers.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(RADFM_BUNDLE / "configs" / "inference.json"),
         "--meta_file", str(META), "--bundle_root", str(RADFM_BUNDLE), "--model_dir", str(out / "model"),
         "--ckpt_path", str(ckpt), "--max_new_tokens", "4", "--output_file", str(answers)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("  Q: ") == 4 and result.stdout.count("  A: ") == 4
    assert "Restored all variables from" in result.stderr + result.stdout  # CheckpointLoader ran
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(rows) == 4 and len(rows[0]["images"]) == 2  # one prompt holds two scans (2D + 3D)


def test_demo_model_rejects_scans_at_another_grid():
    """The demo model (trained at 128², depth 8) given 512² scans through the bundle: a clear error, no answers."""
    from radfm.model.processing import GridMismatchError

    # 1. the config's image_grid differs from the model's
    with pytest.raises(Exception) as caught:
        run_bundle(RADFM_BUNDLE / "configs" / "inference.json", META, bundle_root=str(RADFM_BUNDLE),
                   image_grid=STANDARD_GRID, max_new_tokens=2)
    error = caught.value
    while not isinstance(error, GridMismatchError) and error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, GridMismatchError), repr(caught.value)
    assert "2D 128x128" in str(error) and "2D 512x512" in str(error)

    # 2. the preprocessing resizes to 512² behind image_grid's back: the scans themselves are checked
    with pytest.raises(Exception) as caught:
        run_bundle(RADFM_BUNDLE / "configs" / "inference.json", META, bundle_root=str(RADFM_BUNDLE),
                   **{"preprocessing#transforms#3#size_2d": [512, 512]}, max_new_tokens=2,
                   cases=[{"prompt": "<image> Is this an X-ray?",
                           "images": [str(RADFM_BUNDLE / "sample_data" / "xray_phantom.png")]}])
    message = "".join(str(e) for e in _chain(caught.value))
    assert "[3, 512, 512, 4]" in message and "2D 128x128" in message and "xray_phantom.png" in message


def test_training_the_demo_model_at_another_grid_is_refused(phantom_data, tmp_path):
    from radfm.model.processing import GridMismatchError

    with pytest.raises(Exception) as caught:
        run_bundle(INSTRUCT, META, image_grid=STANDARD_GRID, model=str(RADFM_BUNDLE / "models" / "demo"),
                   **_common(phantom_data, tmp_path, "wrong_grid"))
    errors = list(_chain(caught.value))
    assert any(isinstance(e, GridMismatchError) for e in errors), repr(caught.value)
    assert "2D 128x128" in str(errors[-1]) and "2D 512x512" in str(errors[-1])
    assert not (tmp_path / "runs" / "wrong_grid" / "model").exists()


def _chain(error):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def test_evaluate_config_records_metrics_in_mlflow(phantom_data, tmp_path):
    """evaluate.json (a MONAI evaluator) on the demo model: closed-set accuracy, recorded by --tracking mlflow."""
    store = tmp_path / "eval.db"
    workflow = run_bundle(RADFM_BUNDLE / "configs" / "evaluate.json", META, bundle_root=str(RADFM_BUNDLE),
                          manifest=str(phantom_data["val"]), split="val", output_dir=str(tmp_path / "eval"),
                          max_new_tokens=4, tracking="mlflow", tracking_uri=f"sqlite:///{store}",
                          experiment_name="radfm_eval")
    metrics = workflow.parser.get_parsed_content("evaluator").state.metrics
    assert 0.0 <= metrics["accuracy"] <= 1.0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    (run,) = client.search_runs([client.get_experiment_by_name("radfm_eval").experiment_id])
    assert run.data.metrics["accuracy"] == pytest.approx(metrics["accuracy"])
    assert "accuracy_diagnosis_inductive" in run.data.metrics
    rows = [json.loads(line) for line in (tmp_path / "eval" / "closed_set_answers.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(row["answer"] for row in rows)


def test_multi_gpu_mixin_runs_as_one_process(phantom_data, tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    workflow = run_bundle([*INSTRUCT, RADFM_BUNDLE / "configs" / "multi_gpu_train.json"],
                          META, model="tiny", image_grid=SMALL_GRID, val_interval=0,
                          **_common(phantom_data, tmp_path, "ddp"))
    network = workflow.parser.get_parsed_content("network")
    assert isinstance(network, torch.nn.parallel.DistributedDataParallel)
    assert not torch.distributed.is_initialized()  # finalize tore the group down
    assert (tmp_path / "runs" / "ddp" / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("config", ["inference.json", "evaluate.json"])
def test_a_model_folder_other_than_the_demo_loads_whole(config, tmp_path):
    """--model_dir DIR alone runs a saved (e.g. fine-tuned) model: its own safetensors, no --network_def/--ckpt_path
    overrides; the demo model keeps models/model.pt (what model-zoo's layout expects)."""
    from monai.bundle.scripts import create_workflow

    from radfm.engines.build import load_model

    source, processor = load_model("tiny", seed=3)
    source.save_pretrained(tmp_path / "finetuned", processor=processor)
    workflow = create_workflow(config_file=str(RADFM_BUNDLE / "configs" / config), meta_file=str(META),
                               bundle_root=str(RADFM_BUNDLE), model_dir=str(tmp_path / "finetuned"))
    assert workflow.parser.get_parsed_content("ckpt_path") is None
    network = workflow.parser.get_parsed_content("network")
    for name, value in source.state_dict().items():
        assert torch.equal(value, network.state_dict()[name].to(value.dtype)), name
    demo = create_workflow(config_file=str(RADFM_BUNDLE / "configs" / config), meta_file=str(META),
                           bundle_root=str(RADFM_BUNDLE))
    assert demo.parser.get_parsed_content("ckpt_path") == str(RADFM_BUNDLE) + "/models/model.pt"
