"""radfm_classification/train.json: 2D multi-class from a random encoder, 3D multi-label from a RadFM checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch

from .conftest import CLASSIFICATION_BUNDLE, SMALL_GRID, run_bundle

CONFIG = CLASSIFICATION_BUNDLE / "configs" / "train.json"
META = CLASSIFICATION_BUNDLE / "configs" / "metadata.json"


def _items(phantom_data, tmp_path, dims, label):
    cases = [c for c in phantom_data["cases"] if c["dims"] == dims]
    items = [{"image": str(phantom_data["dir"] / c["image"]), "label": label(c)} for c in cases]
    path = tmp_path / f"items_{dims}d.json"
    path.write_text(json.dumps(items))
    return path, items


def _metrics(workflow):
    return workflow.parser.get_parsed_content("validate#evaluator").state.metrics


def test_multiclass_2d_random_encoder(phantom_data, tmp_path):
    items, rows = _items(phantom_data, tmp_path, 2, lambda c: ["X-ray", "ultrasound"].index(c["modality"]))
    assert {r["label"] for r in rows} == {0, 1}
    workflow = run_bundle(CONFIG, META, bundle_root=str(tmp_path), train_items=str(items), val_items=str(items),
                          num_classes=2, multi_label=False, image_grid=SMALL_GRID, ckpt_dir=str(tmp_path / "models"), epochs=2,
                          batch_size=4, learning_rate=1e-3)
    metrics = _metrics(workflow)
    assert 0.0 <= metrics["val_macro_auc"] <= 1.0 and 0.0 <= metrics["val_macro_f1"] <= 1.0
    # the best model is saved where MONAI looks for it, with its grid beside it
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert state["head.weight"].shape[0] == 2
    assert json.loads((tmp_path / "models" / "preprocess.json").read_text())["size_2d"] == [64, 64]


def test_multilabel_3d_from_radfm_checkpoint(phantom_data, tmp_path):
    from radfm.engines.build import load_model

    radfm_dir = tmp_path / "radfm"
    source, processor = load_model("tiny", seed=3)
    source.save_pretrained(radfm_dir, processor=processor)
    items, rows = _items(phantom_data, tmp_path, 3, lambda c: [["mass", "cyst"].index(d) for d in c["diseases"]])
    workflow = run_bundle(CONFIG, META, bundle_root=str(tmp_path), train_items=str(items), val_items=str(items),
                          num_classes=2, multi_label=True, radfm_dir=str(radfm_dir), image_grid=SMALL_GRID, ckpt_dir=str(tmp_path / "models"),
                          epochs=1, batch_size=4, learning_rate=0.0)
    network = workflow.parser.get_parsed_content("network")
    # lr 0: the encoder must still be exactly the checkpoint's
    for name, value in source.vision_encoder.state_dict().items():
        assert torch.equal(value, network.vision_encoder.state_dict()[name]), name
    metrics = _metrics(workflow)
    assert math.isnan(metrics["val_macro_auc"]) or 0.0 <= metrics["val_macro_auc"] <= 1.0
    assert 0.0 <= metrics["val_macro_f1"] <= 1.0


def test_shipped_model_inference_writes_probabilities(tmp_path):
    """inference.json as shipped: models/model.pt on the sample scans → softmax probabilities in predictions.csv."""
    workflow = run_bundle(CLASSIFICATION_BUNDLE / "configs" / "inference.json", META,
                          bundle_root=str(CLASSIFICATION_BUNDLE), output_dir=str(tmp_path))
    rows = [line.split(",") for line in (tmp_path / "predictions.csv").read_text().splitlines()]
    assert len(rows) == 2
    by_name = {row[0].rsplit("/", 1)[-1]: [float(v) for v in row[1:]] for row in rows}
    assert abs(sum(by_name["xray_phantom.png"]) - 1.0) < 1e-5  # Activationsd(softmax)
    assert by_name["xray_phantom.png"][0] > 0.5 and by_name["ultrasound_phantom.png"][1] > 0.5
    assert workflow.parser.get_parsed_content("image_grid") == {"size_2d": [64, 64], "size_3d": [64, 64], "max_depth": 8}


def test_evaluate_config_records_metrics_in_mlflow(phantom_data, tmp_path):
    items, _ = _items(phantom_data, tmp_path, 2, lambda c: ["X-ray", "ultrasound"].index(c["modality"]))
    store = tmp_path / "mlflow.db"
    workflow = run_bundle(CLASSIFICATION_BUNDLE / "configs" / "evaluate.json", META, bundle_root=str(CLASSIFICATION_BUNDLE),
                          test_items=str(items), output_dir=str(tmp_path / "eval"), tracking="mlflow",
                          tracking_uri=f"sqlite:///{store}", experiment_name="cls_eval")
    metrics = workflow.parser.get_parsed_content("evaluator").state.metrics
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    (run,) = client.search_runs([client.get_experiment_by_name("cls_eval").experiment_id])
    assert run.data.metrics["macro_auc"] == pytest.approx(metrics["macro_auc"])
    assert run.data.metrics["macro_f1"] == pytest.approx(metrics["macro_f1"])


def test_train_records_params_losses_and_metrics_in_mlflow(phantom_data, tmp_path):
    items, _ = _items(phantom_data, tmp_path, 2, lambda c: ["X-ray", "ultrasound"].index(c["modality"]))
    store = tmp_path / "mlflow.db"
    run_bundle(CONFIG, META, bundle_root=str(tmp_path), train_items=str(items), val_items=str(items), epochs=1,
               batch_size=4, image_grid=SMALL_GRID, ckpt_dir=str(tmp_path / "models"), tracking="mlflow",
               tracking_uri=f"sqlite:///{store}", experiment_name="cls_train")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("cls_train").experiment_id])
    metrics = {k for run in runs for k in run.data.metrics}
    assert {"train_loss", "val_macro_auc", "val_macro_f1"} <= metrics, metrics
    # the same kind of run record as the RadFM bundle's: hyperparameters, grid, model, data, seed, code version
    (run,) = [run for run in runs if "learning_rate" in run.data.params]
    params = run.data.params
    assert params["learning_rate"] == "0.0001" and params["batch_size"] == "4" and params["seed"] == "0"
    assert json.loads(params["image_grid"]) == SMALL_GRID and params["epochs"] == "1"
    assert params["model"] == "preset tiny (random encoder)" and params["num_classes"] == "2"
    assert params["train_data"] == str(items) and params["val_data"] == str(items)
    assert int(params["parameters"]) > 0 and params["git_commit"]


def test_training_outputs_go_where_the_user_said(phantom_data, tmp_path):
    """With --ckpt_dir elsewhere nothing is written into the bundle folder (the MLflow store included)."""
    items, _ = _items(phantom_data, tmp_path, 2, lambda c: ["X-ray", "ultrasound"].index(c["modality"]))
    before = {p: p.stat().st_mtime for p in CLASSIFICATION_BUNDLE.rglob("*") if "__pycache__" not in p.parts}
    run_bundle(CONFIG, META, bundle_root=str(CLASSIFICATION_BUNDLE), train_items=str(items), val_items=str(items),
               epochs=1, batch_size=4, image_grid=SMALL_GRID, ckpt_dir=str(tmp_path / "models"), tracking="mlflow",
               experiment_name="cls_where")
    after = {p: p.stat().st_mtime for p in CLASSIFICATION_BUNDLE.rglob("*") if "__pycache__" not in p.parts}
    changed = sorted(str(p) for p in after if p not in before or (p.is_file() and after[p] != before[p]))
    assert changed == [], changed
    assert (tmp_path / "models" / "model.pt").is_file() and (tmp_path / "models" / "runs" / "mlruns.db").is_file()


def test_a_trained_classifier_folder_runs_alone_at_its_own_grid(phantom_data, tmp_path, capsys):
    """train.json writes classifier.json beside model.pt and preprocess.json; inference.json given only the folder
    (--ckpt_dir, the key train.json writes to, or --ckpt_path) builds that architecture at that grid, not the
    shipped example's (64²); `radfm classify --model` runs the folder; another grid is refused."""
    from monai.bundle.scripts import create_workflow

    from radfm.cli import main
    from radfm.model.processing import GridMismatchError

    grid = {"size_2d": [32, 32], "size_3d": [32, 32], "max_depth": 4}
    items, _ = _items(phantom_data, tmp_path, 2, lambda c: ["X-ray", "ultrasound"].index(c["modality"]))
    folder = tmp_path / "mine"
    run_bundle(CONFIG, META, bundle_root=str(tmp_path), train_items=str(items), val_items=str(items), epochs=1,
               batch_size=4, image_grid=grid, ckpt_dir=str(folder), class_names=["X-ray", "ultrasound"],
               vision_overrides={"dim": 36, "mlp_dim": 72}, learning_rate=1e-3)
    recorded = json.loads((folder / "classifier.json").read_text())
    assert recorded["vision"]["dim"] == 36 and recorded["labels"] == ["X-ray", "ultrasound"]
    inference = CLASSIFICATION_BUNDLE / "configs" / "inference.json"
    for where in ({"ckpt_dir": str(folder)}, {"ckpt_path": str(folder / "model.pt")}):
        out = tmp_path / f"out_{next(iter(where))}"
        workflow = run_bundle(inference, META, bundle_root=str(CLASSIFICATION_BUNDLE), output_dir=str(out), **where)
        assert workflow.parser.get_parsed_content("image_grid") == grid
        assert len((out / "predictions.csv").read_text().splitlines()) == 2
    with pytest.raises(Exception) as refused:
        create_workflow(config_file=str(inference), meta_file=str(META), bundle_root=str(CLASSIFICATION_BUNDLE),
                        ckpt_dir=str(folder), image_grid=SMALL_GRID).run()
    chain = [refused.value]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    assert any(isinstance(error, GridMismatchError) for error in chain)
    scan = str(CLASSIFICATION_BUNDLE / "sample_data" / "xray_phantom.png")
    capsys.readouterr()  # the bundle runs' logs
    main(["classify", scan, "--model", str(folder), "--json"])
    (record,) = json.loads(capsys.readouterr().out)
    assert set(record["probabilities"]) == {"X-ray", "ultrasound"} and record["prediction"] in ("X-ray", "ultrasound")
    assert abs(sum(record["probabilities"].values()) - 1.0) < 1e-3


def test_the_grid_defaults_to_the_radfm_models_grid():
    """--radfm_dir naming the demo model (128², depth 8): the classifier trains at that grid, as the RadFM bundle
    does, not at the paper's 512² default."""
    from monai.bundle.scripts import create_workflow

    from .conftest import RADFM_BUNDLE

    demo = RADFM_BUNDLE / "models" / "demo"
    demo_grid = json.loads((demo / "processor_config.json").read_text())["image_processor"]
    workflow = create_workflow(config_file=str(CONFIG), meta_file=str(META), bundle_root=str(CLASSIFICATION_BUNDLE),
                               radfm_dir=str(demo), workflow_type="train")
    grid = workflow.parser.get_parsed_content("image_grid")
    assert grid["size_2d"] == demo_grid["size_2d"] and grid["max_depth"] == demo_grid["max_depth"]
