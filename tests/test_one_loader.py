"""Every path that loads a model goes through ``radfm.load``.

``radfm.model.loading.load`` is replaced by a spy that records the call and stops the work
right there, so each check is cheap: the command, service or bundle must reach ``radfm.load``
(not another loader) before anything else touches weights.
"""

from __future__ import annotations

import json

import pytest

import radfm.model.loading as loading


class LoaderReached(Exception):
    """Raised by the spy: the path under test called radfm.load."""


@pytest.fixture()
def load_calls(monkeypatch) -> list[tuple[tuple, dict]]:
    calls: list[tuple[tuple, dict]] = []

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        raise LoaderReached()

    monkeypatch.setattr(loading, "load", spy)
    return calls


def test_radfm_load_is_the_package_attribute():
    import radfm

    assert radfm.load is loading.load
    assert radfm.LoadedModel is loading.LoadedModel


def test_generate_loads_through_radfm_load(load_calls, tiny_model_dir, tmp_path):
    import numpy as np

    from radfm.doors.generate import generate

    scan = tmp_path / "scan.npy"
    np.save(scan, np.zeros((4, 4, 4), np.float32))  # checked before the load (a scan), read after: never here
    with pytest.raises(LoaderReached):
        generate(str(scan), prompt="<image> modality?", model=str(tiny_model_dir), device="cpu", dtype="float32")
    assert [str(args[0]) for args, _ in load_calls] == [str(tiny_model_dir)]
    assert load_calls[0][1]["dtype"] == "float32"


def test_serve_loads_through_radfm_load(load_calls, tiny_model_dir, monkeypatch):
    import radfm.http.cli as serve_command

    monkeypatch.setattr(serve_command, "guarded_server", lambda *a, **k: pytest.fail("the service started without loading"))
    serve = serve_command.serve
    with pytest.raises(LoaderReached):
        serve(model=str(tiny_model_dir), device="cpu", dtype="float32")
    assert [str(args[0]) for args, _ in load_calls] == [str(tiny_model_dir)]


def test_evaluate_loads_through_radfm_load(load_calls, tiny_model_dir, tmp_path):
    from radfm.doors.evaluate import evaluate

    manifest = tmp_path / "m.jsonl"
    sample = {"id": "a", "dataset": "d", "task": "vqa", "images": [], "instruction": "Is it CT?", "response": "yes",
              "split": "test"}
    manifest.write_text(json.dumps(sample) + "\n")
    with pytest.raises(LoaderReached):
        evaluate(str(manifest), str(tiny_model_dir), str(tmp_path / "out"), bertscore=False)
    assert [str(args[0]) for args, _ in load_calls] == [str(tiny_model_dir)]


def test_training_bundle_network_loads_a_model_folder_through_radfm_load(load_calls, tiny_model_dir):
    from radfm.engines.build import load_model

    with pytest.raises(LoaderReached):
        load_model(tiny_model_dir)
    assert [str(args[0]) for args, _ in load_calls] == [str(tiny_model_dir)]


@pytest.mark.parametrize("config", ["inference.json", "evaluate.json"])
def test_radfm_bundle_network_def_builds_through_radfm_load(load_calls, config):
    from monai.bundle import ConfigParser

    from radfm.utils.resources import bundle_dir

    bundle = bundle_dir("radfm")
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / config))
    parser["bundle_root"] = str(bundle)
    with pytest.raises(Exception) as raised:  # MONAI wraps what network_def raises
        parser.get_parsed_content("network_def")
    assert isinstance(raised.value, LoaderReached) or isinstance(raised.value.__cause__, LoaderReached)
    args, kwargs = load_calls[0]
    assert str(args[0]) == str(bundle / "models" / "demo") and kwargs["weights"] is False


def test_mlflow_pyfunc_model_loads_through_radfm_load(load_calls, tiny_model_dir):
    from types import SimpleNamespace

    from radfm.doors.mlflow_model import RadFMPyfunc

    with pytest.raises(LoaderReached):
        RadFMPyfunc().load_context(SimpleNamespace(artifacts={"model_dir": str(tiny_model_dir)}))
    assert [str(args[0]) for args, _ in load_calls] == [str(tiny_model_dir)]
