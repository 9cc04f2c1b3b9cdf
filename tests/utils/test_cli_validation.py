"""The ``radfm`` command line attacked with careless input: flags are checked before any work,
errors are one line, exit codes follow one convention (0 ok, 1 input error, 2 usage)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from radfm.cli import main
from radfm.utils.cli import UsageError, check_call


def _run(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


def _never_called(*args, **kwargs):
    raise AssertionError("the subcommand ran despite a bad command line")


@pytest.mark.parametrize("argv, expected", [
    (["evaluate", "m.jsonl", "--model", "tiny", "--output", "OUT", "--limt", "1"], "unknown flag --limt (did you mean --limit?)"),
    (["generate", "a.png", "--prompt", "hi", "--max_new_token", "4", "--outptu", "OUT/a.json"],
     "unknown flag --max_new_token (did you mean --max_new_tokens?)"),
    (["score", "p.jsonl", "--outptu", "OUT"], "unknown flag --outptu (did you mean --output?)"),
    (["evaluate", "m.jsonl", "tiny", "OUT", "--limit", "abc"], "--limit: expected an integer, got 'abc'"),
    (["rate", "add_rater", "x", "OUT", "extra"], "unexpected argument 'extra'"),
    (["evaluate", "m.jsonl", "--model", "tiny"], "missing required argument(s): --output"),
    (["generate", "a.png", "--prompt", "hi", "--temperature", "inf"], "--temperature: expected a finite number"),
    (["data", "convrt", "x"], "unknown command 'convrt' (did you mean convert?)"),
    (["data", "convert", "report-csv", "x.csv", "--output", "OUT/m.jsonl", "--sed", "1"], "unknown flag --sed (did you mean --seed?)"),
    (["data", "convert", "report-cvs", "x.csv", "--output", "OUT/m.jsonl"], "unknown format 'report-cvs' (did you mean report-csv?)"),
    (["rate", "add_rater", "--nme", "x", "--study", "OUT"], "unknown flag --nme (did you mean --name?)"),
    (["serve", "--prot", "1"], "unknown flag --prot (did you mean --port?)"),
])
def test_bad_flags_exit_2_with_the_nearest_name_and_leave_no_output(capsys, tmp_path, monkeypatch, argv, expected):
    import radfm.data.adapters.report_table as report_table
    import radfm.data.manifest as manifest_module
    import radfm.doors.generate as generate_module
    import radfm.metrics.score as score_module

    for module, name in ((manifest_module, "load_manifest"), (generate_module, "ModelAnswerer"),
                         (score_module, "read_prediction_files"), (report_table, "read_csv")):
        monkeypatch.setattr(module, name, _never_called, raising=False)
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, *argv)
    assert code == 2
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "OUT").exists()


def test_misspelled_flag_through_the_installed_entry_point_leaves_no_output(tmp_path):
    """The attack from the issue, on the real executable: `--limt` used to evaluate everything first."""
    result = subprocess.run([sys.executable, "-m", "radfm.cli", "evaluate", "m.jsonl", "--model", "tiny",
                             "--output", str(tmp_path / "out"), "--limt", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("radfm evaluate: usage error: unknown flag --limt (did you mean --limit?) "
                                     "(see radfm evaluate --help)")
    assert not (tmp_path / "out").exists()


def test_input_errors_are_one_line_exit_1_and_debug_shows_the_traceback(capsys, tmp_path):
    missing = tmp_path / "nothere.jsonl"
    code, err = _run(capsys, "score", str(missing), "--output", str(tmp_path / "s"))
    assert code == 1 and err == f"radfm score: error: predictions file not found: {missing}\n"
    with pytest.raises(FileNotFoundError):
        main(["score", str(missing), "--debug"])


def test_non_utf8_files_name_the_file_and_line(capsys, tmp_path):
    predictions = tmp_path / "p.jsonl"
    predictions.write_bytes(b'{"id": "1", "reference": "a", "prediction": "a"}\n{"id": "2", "reference": "caf\xe9"}\n')
    code, err = _run(capsys, "score", str(predictions), "--nobertscore")
    assert code == 1 and f"{predictions}:2: not UTF-8 text (byte 0xe9 at column 30)" in err
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b"\xff\xfe{}\n")
    code, err = _run(capsys, "evaluate", str(manifest), "--model", "tiny", "--output", str(tmp_path / "e"))
    assert code == 1 and f"{manifest}:1: not UTF-8 text" in err
    table = tmp_path / "r.csv"
    table.write_bytes(b"image_path,findings\nx.png,ok\ny.png,\x81bad\n")
    code, err = _run(capsys, "data", "convert", "report-csv", str(table), "--output", str(tmp_path / "m2.jsonl"))
    assert code == 1 and f"{table}:3: not UTF-8 text" in err
    assert not (tmp_path / "e").exists() and not (tmp_path / "m2.jsonl").exists()


def test_silent_results_are_errors(capsys, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, err = _run(capsys, "score", str(empty), "--nobertscore", "--output", str(tmp_path / "s"))
    assert code == 1 and "empty.jsonl: no predictions in the file (it is empty)" in err
    listed = tmp_path / "list.jsonl"
    listed.write_text(json.dumps({"id": "1", "reference": "yes", "prediction": ["yes", "no"]}) + "\n")
    code, err = _run(capsys, "score", str(listed), "--nobertscore", "--output", str(tmp_path / "s"))
    assert code == 1 and "list.jsonl:1: field 'prediction' must be a string, got a JSON list" in err
    assert not (tmp_path / "s").exists()
    (tmp_path / "a.png").write_bytes(b"")
    table = tmp_path / "r.csv"
    table.write_text("id,image_path,findings\ncase1,a.png,one\ncase1,a.png,two\n")
    code, err = _run(capsys, "data", "convert", "report-csv", str(table), "--output", str(tmp_path / "m.jsonl"),
                     "--check_images", "False")
    assert code == 1 and "row 3: duplicate id 'case1' (first on row 2)" in err
    assert not (tmp_path / "m.jsonl").exists()


def test_check_call_follows_fire_binding():
    def function(scan: str, *, prompt: str, limit: int | None = None, flag: bool = False, scale: float = 1.0):
        pass

    check_call(function, ["a.png", "--prompt", "hi", "--limit=3", "--flag", "--scale", "-2.5"])
    check_call(function, ["a.png", "--prompt=hi", "--noflag"])
    for argv, message in ((["a.png"], "missing required argument(s): --prompt"),
                          (["a.png", "b.png", "--prompt", "hi"], "unexpected argument 'b.png'"),
                          (["a.png", "--prompt", "hi", "--flag", "maybe"], "--flag: expected true or false"),
                          (["a.png", "--prompt", "hi", "--scale", "nan"], "--scale: expected a finite number")):
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_call(function, argv)
