"""``radfm classify``: the shipped example classifier folder on the sample scans; non-classifier folders refused."""

from __future__ import annotations

import pytest

from radfm.cli import main
from radfm.utils.resources import bundle_dir

SAMPLES = bundle_dir("radfm_classification") / "sample_data"


def test_the_example_classifier_names_the_sample_modalities(capsys):
    main(["classify", str(SAMPLES / "xray_phantom.png"), str(SAMPLES / "ultrasound_phantom.png")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{SAMPLES / 'xray_phantom.png'}: X-ray (X-ray 0.")
    assert lines[1].startswith(f"{SAMPLES / 'ultrasound_phantom.png'}: ultrasound (")
    assert lines[2] == "[unverified research output: not for clinical use]"


def test_a_radfm_model_folder_is_not_a_classifier(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["classify", str(SAMPLES / "xray_phantom.png"), "--model", str(bundle_dir("radfm") / "models" / "demo")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("radfm classify: error: ") and "classifier.json is missing (a RadFM model folder" in err


def test_weights_that_do_not_fit_the_recorded_architecture_are_refused(tmp_path, capsys):
    import json
    import shutil

    folder = tmp_path / "cls"
    shutil.copytree(bundle_dir("radfm_classification") / "models", folder)
    config = json.loads((folder / "classifier.json").read_text())
    config["vision"]["dim"] = 48
    (folder / "classifier.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit):
        main(["classify", str(SAMPLES / "xray_phantom.png"), "--model", str(folder)])
    assert "the weights do not fit the architecture of classifier.json" in capsys.readouterr().err
