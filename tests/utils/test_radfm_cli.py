"""The ``radfm`` entry point's help: readable names, command groups list their commands."""

import pytest

from radfm.cli import main


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_subcommand_help_names_the_command_unquoted(capsys):
    text = _help(capsys, "score")
    assert "radfm score - Score prediction files" in text
    assert "radfm score <flags> [PREDICTIONS]..." in text
    assert "'radfm score'" not in text and "\"'\"" not in text


@pytest.mark.parametrize("group, commands", [("data", ["phantoms", "convert"]),
                                             ("rate", ["add_rater", "create", "export", "serve"])])
def test_group_help_lists_its_commands(capsys, group, commands):
    text = _help(capsys, group)
    assert f"radfm {group} COMMAND" in text
    assert all(f"\n     {command}\n" in text for command in commands)
    assert f"radfm {group} {commands[0]} - " in _help(capsys, group, commands[0])


# ---- `radfm preprocess --model`: what a given model receives ---------------------------------

def _sample(name: str):
    from radfm.utils.resources import bundle_dir

    return str(bundle_dir("radfm") / "sample_data" / name)


def test_preprocess_shows_what_the_demo_model_receives(capsys):
    from radfm.model.loading import demo_model_dir

    main(["preprocess", _sample("ct_phantom.nii.gz"), "--model", str(demo_model_dir())])
    out = capsys.readouterr().out
    assert "shape (3, 128, 128, 8)" in out
    assert f"grid:            2D 128x128, 3D 128x128 (depth <= 8), from the model in {demo_model_dir()}" in out
    main(["preprocess", _sample("ct_phantom.nii.gz")])  # no --model: the published grid, and how to see another
    out = capsys.readouterr().out
    assert "shape (3, 256, 256, 16)" in out and "--model DIR shows what another model receives" in out


def test_preprocess_applies_the_models_own_options(tmp_path, capsys):
    import shutil

    from radfm.model.loading import demo_model_dir
    from radfm.model.processing import RadFMImageProcessor

    model = tmp_path / "model"
    shutil.copytree(demo_model_dir(), model, ignore=shutil.ignore_patterns("*.safetensors", "*.md"))
    RadFMImageProcessor.at_grid({"size_2d": [64, 64], "size_3d": [32, 32], "max_depth": 4}).save_grid(model)  # its processor
    main(["preprocess", _sample("xray_phantom.png"), "--model", str(model)])
    assert "shape (3, 64, 64, 4)" in capsys.readouterr().out


def test_preprocess_refuses_a_grid_flag_with_a_model(capsys):
    from radfm.model.loading import demo_model_dir

    with pytest.raises(SystemExit) as exit_info:
        main(["preprocess", _sample("xray_phantom.png"), "--model", str(demo_model_dir()), "--size_2d", "64,64"])
    assert exit_info.value.code == 2
    assert "--size_2d and --model" in capsys.readouterr().err


def test_train_refuses_a_misspelled_config_key(capsys):
    """`radfm train` runs a bundle: a key no config file defines is a usage error naming the nearest."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "instruct", "--epoch", "2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("radfm train: usage error: unknown config key --epoch: no config file defines it "
                   "(did you mean --epochs?) (see radfm train --help)")
