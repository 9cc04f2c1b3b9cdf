"""`radfm generate` on a DICOM series folder, a NIfTI file and a PNG in one prompt."""

from __future__ import annotations

import json

import pytest

from radfm.answering.options import GenerationOptions
from radfm.cli import main
from radfm.dicom.sr import read_sr

PROMPT = "Compare the CT <image>, the MRI <image> and the radiograph <image>."


def _run(capsys, *args: str) -> str:
    main(["generate", *args])
    return capsys.readouterr().out


def test_generate_three_kinds_in_one_prompt(capsys, tiny_model_dir, tiny_answerer, ct_series_dir, small_scans, tmp_path):
    record_file = tmp_path / "answer.json"
    out = _run(capsys, str(ct_series_dir), str(small_scans["nifti"]), str(small_scans["png"]), "--prompt", PROMPT,
               "--model", str(tiny_model_dir), "--json", "--output", str(record_file),
               "--max_new_tokens", "5", "--device", "cpu", "--dtype", "float32")
    record = json.loads(out)
    assert record["prompt"] == PROMPT
    assert record["image_shapes"] == [[3, 256, 256, 4], [3, 256, 256, 12], [3, 512, 512, 4]]
    images = tiny_answerer.prepare([ct_series_dir, small_scans["nifti"], small_scans["png"]])
    assert record["answer"] == tiny_answerer.answer(PROMPT, images, GenerationOptions(max_new_tokens=5))
    assert record["model"]["weights_sha256"] == tiny_answerer.identity.weights_sha256
    assert json.loads(record_file.read_text()) == record

    # the record feeds the SR export
    sr_path = tmp_path / "report.dcm"
    main(["export-sr", str(sr_path), "--from_json", str(record_file)])
    parsed = read_sr(sr_path)
    assert parsed["answer"] == record["answer"] and parsed["prompt"] == PROMPT
    assert parsed["device"]["Device Observer Serial Number"] == record["model"]["weights_sha256"]
    assert "non_dicom_input=brain.nii.gz" in parsed["algorithm_parameters"]


def test_generate_prepends_placeholders_and_prints_plain_text(capsys, tiny_model_dir, small_scans):
    out = _run(capsys, str(small_scans["png"]), "--prompt", "What is the modality?", "--model", str(tiny_model_dir),
               "--max_new_tokens", "3", "--device", "cpu", "--dtype", "float32")
    assert not out.lstrip().startswith("{")  # the answer itself, not JSON


@pytest.mark.parametrize(
    ("scans", "prompt", "message"),
    [
        (["png"], "<image> vs <image>", "2 <image> placeholder(s) but 1 image"),
        (["missing"], "hi", "nope.nii.gz: no such file or folder"),
        (["text"], "hi", "notes.txt"),
    ],
)
def test_generate_bad_input_exits_with_reason(capsys, tiny_model_dir, small_scans, tmp_path, scans, prompt, message):
    (tmp_path / "notes.txt").write_text("not an image")
    paths = {"png": str(small_scans["png"]), "missing": str(tmp_path / "nope.nii.gz"), "text": str(tmp_path / "notes.txt")}
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", *[paths[s] for s in scans], "--prompt", prompt, "--model", str(tiny_model_dir),
              "--device", "cpu", "--dtype", "float32", "--max_new_tokens", "2"])
    assert exit_info.value.code == 1  # an input error (2 is for usage errors), as for every subcommand
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_generate_takes_min_new_tokens_and_ignore_eos(capsys, tiny_model_dir, tiny_answerer, small_scans):
    """The CLI door passes the fixed-length options (issue 29) to the one GenerationOptions; a bad one names its flag."""
    out = _run(capsys, str(small_scans["png"]), "--prompt", "<image> Which?", "--model", str(tiny_model_dir), "--json",
               "--max_new_tokens", "4", "--ignore_eos", "--device", "cpu", "--dtype", "float32")
    record = json.loads(out)
    assert record["generation"]["ignore_eos"] is True and record["generation"]["max_new_tokens"] == 4
    images = tiny_answerer.prepare([small_scans["png"]])
    assert record["answer"] == tiny_answerer.answer("<image> Which?", images,
                                                    GenerationOptions(max_new_tokens=4, ignore_eos=True))
    with pytest.raises(SystemExit):
        main(["generate", str(small_scans["png"]), "--prompt", "Which?", "--model", str(tiny_model_dir),
              "--max_new_tokens", "4", "--min_new_tokens", "9"])
    assert "--min_new_tokens: generation option min_new_tokens=9: expected <= max_new_tokens (4)" in \
        capsys.readouterr().err
