"""RadFM as an MLflow pyfunc model: log the demo model to a SQLite store, register it, load it
back in a fresh process and get the answers ``radfm generate`` gives; the bundle handler logs
into the ``--tracking mlflow`` run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from radfm.cli import main as radfm_main  # noqa: E402
from radfm.doors.mlflow_model import LogMLflowModel, log_model, pinned_requirements  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "bundles" / "radfm" / "models" / "demo"
SAMPLES = ROOT / "bundles" / "radfm" / "sample_data"
CASES = [
    ("What are the modalities of these scans? <image> <image>", ["xray_phantom.png", "ct_phantom.nii.gz"]),
    ("<image> Does the patient have cyst?", ["xray_phantom.png"]),
    ("What is the modality of the input scan <image>?", ["mri_phantom.nii.gz"]),
]
pytestmark = pytest.mark.slow


def _generate_cli(prompt: str, images: list[str], capsys) -> str:
    """The answer of ``radfm generate ... --json`` (the CLI entry point, in this process)."""
    capsys.readouterr()
    radfm_main(["generate", *[str(SAMPLES / name) for name in images], "--prompt", prompt, "--model", str(DEMO),
                "--max_new_tokens", "16", "--device", "cpu", "--json"])
    return json.loads(capsys.readouterr().out)["answer"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, str]:
    """One SQLite tracking store for the module (creating its tables takes MLflow a while)."""
    folder = tmp_path_factory.mktemp("mlflow")
    return folder, f"sqlite:///{folder / 'mlruns.db'}"


def test_log_register_load_in_fresh_process_same_answers(store, tmp_path, capsys):
    folder, uri = store
    logged = log_model(DEMO, tracking_uri=uri, registered_model_name="radfm-demo")
    assert logged["registered_model_version"] in (1, "1")
    assert logged["models_uri"] == "models:/radfm-demo/1"
    assert (folder / "mlartifacts").is_dir()  # artifacts beside the database, not in the working folder

    client = mlflow.MlflowClient(tracking_uri=uri)
    version = client.get_model_version("radfm-demo", "1")
    assert version.run_id == logged["run_id"]

    rows = [{"prompt": prompt, "images": [str(SAMPLES / name) for name in images]} for prompt, images in CASES]
    rows.append({"prompt": "<image> Which modality?", "images": [str(tmp_path / "missing.nii.gz")]})
    script = textwrap.dedent(f"""
        import json, sys
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({uri!r})
        model = mlflow.pyfunc.load_model("models:/radfm-demo/1")
        meta = model.metadata
        frame = pd.DataFrame(json.loads(sys.argv[1]))
        result = model.predict(frame, params={{"max_new_tokens": 16}})
        plain = lambda column: [None if pd.isna(value) else value for value in result[column]]
        print("RESULT" + json.dumps({{"answers": plain("answer"), "errors": plain("error"),
              "inputs": meta.get_input_schema().input_names(), "params": [p.name for p in meta.get_params_schema().params],
              "radfm": meta.metadata["radfm"], "example": meta.saved_input_example_info is not None,
              "modules": sorted(m for m in sys.modules if m.startswith("radfm.http"))}}))
    """)
    done = subprocess.run([sys.executable, "-c", script, json.dumps(rows)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT", 1)[1])
    assert result["inputs"] == ["prompt", "images"]
    assert result["params"] == ["max_new_tokens", "do_sample", "temperature", "top_p", "seed"]
    assert result["example"]
    assert result["radfm"]["preprocess"]["size_3d"] == [128, 128]  # the preprocessing grid travels with the model
    assert result["radfm"]["verification"] == "UNVERIFIED"

    expected = [_generate_cli(prompt, images, capsys) for prompt, images in CASES]
    assert result["answers"][:3] == expected
    assert expected[0] == "X-ray and CT"
    assert result["errors"][:3] == [None, None, None]
    assert result["answers"][3] is None and "missing.nii.gz" in result["errors"][3]  # a bad row, the others answered


def test_requirements_are_pinned():
    pins = pinned_requirements()
    assert all("==" in pin and "+" not in pin for pin in pins)
    names = {pin.split("==")[0].lower() for pin in pins}
    assert {"torch", "transformers", "monai", "safetensors", "pandas"} <= names


def test_refuses_file_store(tmp_path):
    with pytest.raises(ValueError, match="sqlite"):
        log_model(DEMO, tracking_uri=str(tmp_path / "mlruns"))


def test_bundle_handler_logs_into_the_tracking_run(store, tiny_model_dir):
    """``LogMLflowModel`` after MONAI's ``MLFlowHandler`` (as ``--tracking mlflow`` adds it): same run, registered."""
    from ignite.engine import Engine
    from monai.handlers import MLFlowHandler

    _, uri = store
    engine = Engine(lambda engine, batch: {"loss": 0.0})
    handler = LogMLflowModel(str(tiny_model_dir), registered_model_name="radfm-tiny")
    handler.attach(engine)
    MLFlowHandler(tracking_uri=uri, experiment_name="bundle", output_transform=lambda output: output["loss"],
                  close_on_complete=True).attach(engine)
    engine.run([0, 1], max_epochs=1)
    assert handler.logged is not None
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(handler.logged["run_id"])
    assert run.info.experiment_id == client.get_experiment_by_name("bundle").experiment_id
    assert client.get_model_version("radfm-tiny", "1").run_id == run.info.run_id

    # without tracking the handler does nothing
    quiet = LogMLflowModel(str(tiny_model_dir), registered_model_name="radfm-tiny")
    plain = Engine(lambda engine, batch: None)
    quiet.attach(plain)
    plain.run([0], max_epochs=1)
    assert quiet.logged is None


@pytest.mark.parametrize(("params", "field"), [
    ({"max_new_tokens": 10**400}, "max_new_tokens"), ({"seed": float("inf")}, "seed"), ({"seed": float("nan")}, "seed"),
    ({"seed": 10**400}, "seed"), ({"temperature": 10**400, "do_sample": True}, "temperature"),
])
def test_out_of_range_params_are_refused_naming_the_param(params, field):
    """S1 (issue 28): numbers no float holds, inf and nan are a ValueError naming the param, never an OverflowError."""
    from types import SimpleNamespace

    import pandas as pd

    from radfm.answering.limits import Limits
    from radfm.doors.generate import CLI_LIMITS
    from radfm.doors.mlflow_model import RadFMPyfunc

    model = RadFMPyfunc()
    model.path = SimpleNamespace(limits=Limits(**CLI_LIMITS))  # the checks come before any model call
    frame = pd.DataFrame({"prompt": ["<image> Which?"], "images": [["scan.png"]]})
    with pytest.raises(ValueError, match=field) as refused:
        model.predict(None, frame, params=params)
    assert len(str(refused.value)) < 200  # a 400-digit number is summarised, not printed
