"""`radfm rate` through the real CLI entry point."""

from __future__ import annotations

import re

import pytest

from radfm.cli import main
from radfm.rating import store


def test_create_add_rater_export(tmp_path, prediction_files, capsys):
    study = tmp_path / "study"
    a, b, c = (str(p) for p in prediction_files)
    # space-separated files after --predictions, and a comma list for raters
    main(["rate", "create", "--study", str(study), "--predictions", a, b, c, "--raters", "alice,bob"])
    out = capsys.readouterr().out
    assert "3 cases, models radfm, baseline, other" in out
    tokens = dict(re.findall(r"rater (\w+): token (\S+)", out))
    assert set(tokens) == {"alice", "bob"}

    main(["rate", "add_rater", "carol", "--study", str(study)])
    carol = capsys.readouterr().out.strip()
    with store.connect(study) as conn:
        assert store.rater_for_token(conn, carol)["name"] == "carol"
        assert store.rater_for_token(conn, tokens["alice"])["name"] == "alice"
        store.set_score(conn, 1, 1, 4)
        store.set_score(conn, 2, 2, 2)

    main(["rate", "export", "--study", str(study), "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "summary.md" in out and (tmp_path / "out" / "summary.png").is_file()
    assert len((tmp_path / "out" / "ratings.csv").read_text().splitlines()) == 3


def test_comma_list_of_predictions(tmp_path, prediction_files, capsys):
    joined = ",".join(str(p) for p in prediction_files[:2])
    main(["rate", "create", "--study", str(tmp_path / "s"), "--predictions", joined, "--tasks", "vqa"])
    assert "2 cases, models radfm, baseline" in capsys.readouterr().out


def test_serve_refuses_a_folder_that_is_not_a_study(tmp_path):
    from radfm.rating.app import create_app

    with pytest.raises(FileNotFoundError, match="no rating study database"):
        create_app(tmp_path)


def test_serve_runs_on_loopback_and_stops(study, radfm_server):
    """`radfm rate serve` as a real process: answers on 127.0.0.1, then is terminated."""
    import httpx

    folder, _ = study
    with radfm_server(["rate", "serve", "--study", str(folder)], "/signin", timeout_s=30) as url:
        response = httpx.get(url + "/signin", timeout=5)
        assert response.status_code == 200 and "Sign in" in response.text


def test_loopback_detection():
    from radfm.rating.cli import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("localhost") and _is_loopback("::1")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.4")


@pytest.mark.parametrize("value,status", [("0", 2), ("-1", 2)])
def test_create_refuses_per_task_below_one_before_any_work(tmp_path, prediction_files, capsys, value, status):
    """22-L2: `radfm rate create --per_task 0` is a usage error (exit 2) and builds nothing."""
    with pytest.raises(SystemExit) as exited:
        main(["rate", "create", "--study", str(tmp_path / "s"), "--predictions", str(prediction_files[0]),
              "--per_task", value])
    assert exited.value.code == status
    assert "--per_task: expected a positive number of cases per task" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_create_refuses_a_host_file_with_one_error_line(tmp_path, capsys):
    """22-M4: an absolute path to a file that is not a scan is refused (exit 1), nothing is built."""
    import json

    host = tmp_path / "hostname"
    host.write_text("machine\n")
    row = {"id": "1", "task": "vqa", "images": [str(host)], "instruction": "<image> q", "reference": "r",
           "prediction": "p", "model": "m"}
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(json.dumps(row) + "\n")
    with pytest.raises(SystemExit) as exited:
        main(["rate", "create", "--study", str(tmp_path / "s"), "--predictions", str(predictions)])
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "p.jsonl:1: image not accepted" in err[0] and "hostname" in err[0], err
    assert not (tmp_path / "s").exists()
