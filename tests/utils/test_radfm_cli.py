"""The ``radfm`` entry point: help with readable names, command groups list their commands, one line on Ctrl-C."""

import signal
import subprocess
import sys
import threading
import time
import warnings

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


def test_train_on_a_shipped_config_prints_no_eval_warning():
    """MONAI warns about eval() on every config it parses; ours ship with the package, so `radfm train` filters
    that one warning (a config from elsewhere keeps it)."""
    result = subprocess.run([sys.executable, "-m", "radfm.cli", "train", "instruct", "--epoch", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "eval()" not in result.stderr and "parsing config_file" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("radfm train: usage error: unknown config key --epoch")


def test_a_config_from_elsewhere_keeps_monais_eval_warning(tmp_path):
    from radfm.utils.cli_bundle import shipped_configs
    from radfm.utils.resources import bundle_dir

    outside = tmp_path / "train.json"
    outside.write_text("{}")
    for files, warned in (([outside], True), ([bundle_dir("radfm") / "configs" / "train.json"], False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with shipped_configs(files):
                warnings.warn(f"parsing config_file {files}: ... is passed to Python `eval()`. Only proceed ...", stacklevel=1)
        assert bool(caught) is warned, files


def test_ctrl_c_on_train_prints_one_line(tmp_path, request):
    """Ctrl-C while training: exit 130 and `radfm train: interrupted`, without Ignite's error line or MONAI's
    KeyboardInterrupt traceback (logged by its StatsHandler) on either stream."""
    from radfm.data.phantoms import make_phantoms

    make_phantoms(tmp_path / "ph", n=4, seed=0, progress=False)
    command = [sys.executable, "-m", "radfm.cli", "train", "instruct", "--model", "tiny",
               "--train_manifest", str(tmp_path / "ph" / "train.jsonl"), "--val_manifest", str(tmp_path / "ph" / "val.jsonl"),
               "--val_interval", "0", "--epochs", "100", "--bundle_root", str(tmp_path / "root"), "--precision", "fp32",
               "--image_grid", "{'size_2d': [32, 32], 'size_3d': [32, 32], 'max_depth': 4}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    request.addfinalizer(lambda: (process.kill(), process.wait(), process.stdout.close(), process.stderr.close()))
    out_lines: list[str] = []
    reader = threading.Thread(target=lambda: out_lines.extend(process.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not any("trainable parameters" in line for line in out_lines) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()[-3000:]
        time.sleep(0.2)
    time.sleep(2)  # inside the first epoch's iterations
    process.send_signal(signal.SIGINT)
    err = process.stderr.read()
    process.wait(timeout=120)
    reader.join(timeout=10)
    out = "".join(out_lines)
    assert process.returncode == 130, err[-3000:]
    assert "radfm train: interrupted" in err.splitlines()  # the progress bar's last state may follow it
    for stream in (out, err):
        assert "Traceback" not in stream and "KeyboardInterrupt" not in stream, stream[-3000:]
        assert "terminating due to exception" not in stream, stream[-3000:]
