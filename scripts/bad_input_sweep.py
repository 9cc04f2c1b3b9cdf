"""Bad-input sweep: careless and hostile inputs against the real CLI and both servers on loopback.

    python scripts/bad_input_sweep.py                     # writes docs/bad_input_sweep.md
    python scripts/bad_input_sweep.py --only cli --output /tmp/sweep.md

* CLI: each case runs ``radfm.cli.main(argv)`` (what the ``radfm`` executable runs) in a forked
  child process with its own stdout/stderr and exit status (``--subprocess``: a fresh
  ``python -m radfm.cli`` per case instead, slower). Expected: the documented exit status
  (1 input error, 2 usage error), exactly one ``radfm …`` error line on stderr, no traceback,
  and no output file left where the command was asked to write.
* Service: ``radfm serve``'s app with the shipped demo model behind the same guarded uvicorn
  server ``radfm serve`` builds, short timeouts; malformed multipart requests, hostile option
  values, file names, Host/Origin headers and slow sockets. Expected: the stated 4xx (or 200
  for inputs that must simply work), never a 500.
* URL traversal: raw request paths (not normalised by a client) against the service and the
  rating app (signed in). Expected: no file content, no 500.
* Rating app: NRRD/MetaImage headers pointing at a planted host file, written into a study's
  image folder after ``create`` (issue 22, H1): the viewer refuses each (422), no byte or size of
  the host file comes back. The same headers (and a deflated DICOM bomb) also go through
  ``radfm preprocess`` and ``/v1/answer``.

Each row records the bad input, the command or request, what it got (exit status or HTTP
status) and the one-line message. The workspace path is written as ``$W`` and ports as ``PORT``
so the table is the same from run to run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_files import deflated_dicom_bomb, hostile_headers  # noqa: E402

DEMO_MODEL = REPO / "bundles" / "radfm" / "models" / "demo"
DEFAULT_OUTPUT = REPO / "docs" / "bad_input_sweep.md"
CASE_TIMEOUT_S = 300


@dataclass
class Result:
    area: str
    what: str
    command: str
    got: str
    message: str
    ok: bool
    why: str = ""


@dataclass
class CliCase:
    what: str
    argv: list[str]  # "$W" is the workspace
    expect: int  # exit status
    must_not_exist: list[str] = field(default_factory=list)  # outputs the command must not leave
    area: str = "cli"


# ------------------------------------------------------------------------ workspace ----
def make_workspace(work: Path) -> None:
    """Small good and bad input files the cases refer to."""
    import numpy as np
    from PIL import Image

    (work / "data").mkdir(parents=True)
    Image.fromarray((np.arange(64 * 64) % 251).reshape(64, 64).astype(np.uint8)).save(work / "scan.png")
    shutil.copy(work / "scan.png", work / "data" / "img.png")
    (work / "notes.txt").write_text("not a scan\n")
    (work / "empty.png").write_bytes(b"")
    (work / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    good = {"id": "1", "dataset": "d", "task": "vqa", "reference": "yes", "prediction": "yes", "model": "m"}
    (work / "good.jsonl").write_text(json.dumps(good) + "\n")
    (work / "empty.jsonl").write_text("")
    (work / "latin1.jsonl").write_bytes(json.dumps(good).encode() + b'\n{"id": "2", "reference": "caf\xe9"}\n')
    (work / "badjson.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    (work / "list.jsonl").write_text(json.dumps(dict(good, prediction=["yes", "no"])) + "\n")
    (work / "nofield.jsonl").write_text(json.dumps({"id": "1", "reference": "yes"}) + "\n")
    (work / "array.jsonl").write_text("[1, 2]\n")
    (work / "preds.txt").write_text("yes\n")
    (work / "badcols.csv").write_text("question,answer\nq,a\n")
    (work / "latin1.csv").write_bytes(b"Question,Ground Truth,Pred,belong_to\nq,caf\xe9,cafe,d\n")
    sample = {"id": "s1", "dataset": "d", "task": "vqa", "images": ["img.png"], "instruction": "<image> What?",
              "response": "yes", "split": "test"}
    data = work / "data"
    (data / "m_ok.jsonl").write_text(json.dumps(sample) + "\n")
    (data / "m_latin1.jsonl").write_bytes(b'{"id": "caf\xe9"}\n')
    (data / "m_badjson.jsonl").write_text(json.dumps(sample) + "\n{\"id\": \n")
    (data / "m_outside.jsonl").write_text(json.dumps(dict(sample, images=["../../../../etc/passwd"])) + "\n")
    (data / "m_dup.jsonl").write_text(json.dumps(sample) + "\n" + json.dumps(sample) + "\n")
    (data / "m_notask.jsonl").write_text(json.dumps(dict(sample, task="guess")) + "\n")
    (data / "m_placeholders.jsonl").write_text(json.dumps(dict(sample, instruction="<image> <image> What?")) + "\n")
    (work / "r_ok.csv").write_text("id,image_path,findings\nc1,scan.png,clear\n")
    (work / "r_dup.csv").write_text("id,image_path,findings\nc1,scan.png,one\nc1,scan.png,two\n")
    (work / "r_cols.csv").write_text("id,picture,text\nc1,scan.png,x\n")
    (work / "r_latin1.csv").write_bytes(b"image_path,findings\nscan.png,caf\xe9\n")
    (work / "r_split.csv").write_text("image_path,findings,split\nscan.png,clear,holdout\n")
    (work / "r_noimage.csv").write_text("image_path,findings\nmissing.png,clear\n")
    (work / "vqa.json").write_text("{broken")
    (work / "answer.json").write_text("[1, 2, 3]")
    (work / "not_a_checkpoint.bin").write_text("hello")
    (work / "phantoms_full").mkdir()
    (work / "phantoms_full" / "keep.txt").write_text("x")
    (work / "a_file").write_text("x")
    (work / "vocab_missing_dir").mkdir()
    (work / "vocab_latin1.txt").write_bytes(b"pneumonia\nn\xe9oplasme\n")
    # issue 22: headers that walk a bare reader to a host file, a deflated DICOM bomb, special files
    (work / "host").mkdir()
    (work / "host" / "passwd").write_bytes(b"root:x:0:0:planted-secret-of-the-sweep\n" * 8)  # 320 bytes
    (work / "host" / "hostname").write_text("build-machine-7\n")
    (work / "hostile").mkdir()
    for name, header in hostile_headers(work / "host" / "passwd").items():
        (work / "hostile" / name).write_bytes(header)
    (work / "hostile" / "nrrd_named.png").write_bytes(hostile_headers(work / "host" / "passwd")["plain.nhdr"])
    deflated_dicom_bomb(work / "hostile" / "bomb.dcm", 512 * 1024**2)  # 0.5 MB inflating to 512 MiB
    os.mkfifo(work / "hostile" / "fifo.nrrd")
    (work / "png_link.png").symlink_to(work / "scan.png")
    series = data / "series"
    series.mkdir()
    (series / "1.dcm").symlink_to(work / "host" / "passwd")  # a DICOM folder holding a link out of the root
    (data / "m_series_link.jsonl").write_text(json.dumps(dict(sample, images=["series"])) + "\n")
    (work / "rate_host.jsonl").write_text(json.dumps(dict(good, task="vqa", instruction="<image> q",
                                                          images=[str(work / "host" / "hostname")])) + "\n")


def cli_cases() -> list[CliCase]:
    """The careless and hostile command lines (``$W``: the workspace)."""
    W = "$W"
    png = f"{W}/scan.png"
    gen = ["generate", png, "--prompt", "What is shown?", "--model", str(DEMO_MODEL)]
    ev = ["evaluate", f"{W}/data/m_ok.jsonl", "--model", "tiny", "--output", f"{W}/eval_out", "--nobertscore"]
    sc = ["--output", f"{W}/score_out", "--nobertscore"]
    conv = ["--output", f"{W}/conv.jsonl"]
    no_eval = [f"{W}/eval_out"]
    no_score = [f"{W}/score_out"]
    no_conv = [f"{W}/conv.jsonl"]
    cases = [
        # generate
        CliCase("misspelled flag --max_new_token, misspelled --outptu", gen + ["--max_new_token", "4", "--outptu", f"{W}/g.json"], 2, [f"{W}/g.json"]),
        CliCase("misspelled --outptu alone", gen + ["--outptu", f"{W}/g.json"], 2, [f"{W}/g.json"]),
        CliCase("no --prompt", ["generate", png, "--output", f"{W}/g.json"], 2, [f"{W}/g.json"]),
        CliCase("no scans", ["generate", "--prompt", "hi", "--output", f"{W}/g.json"], 2, [f"{W}/g.json"]),
        CliCase("scan file missing", gen + [f"{W}/nothere.nii.gz", "--output", f"{W}/g.json"], 1, [f"{W}/g.json"]),
        CliCase("temperature inf", gen + ["--do_sample", "--temperature", "inf"], 2),
        CliCase("temperature nan", gen + ["--do_sample", "--temperature", "nan"], 2),
        CliCase("temperature 0", gen + ["--do_sample", "--temperature", "0"], 2),
        CliCase("repetition_penalty inf", gen + ["--repetition_penalty", "inf"], 2),
        CliCase("num_beams 96", gen + ["--num_beams", "96"], 2),
        CliCase("num_beams 8 x max_new_tokens 1024", gen + ["--num_beams", "8", "--max_new_tokens", "1024"], 2),
        CliCase("max_new_tokens 0", gen + ["--max_new_tokens", "0"], 2),
        CliCase("max_new_tokens not a number", gen + ["--max_new_tokens", "lots"], 2),
        CliCase("top_p 2", gen + ["--top_p", "2"], 2),
        CliCase("negative seed", gen + ["--seed", "-1"], 2),
        CliCase("do_sample maybe", gen + ["--do_sample", "maybe"], 2),
        CliCase("text file as scan", ["generate", f"{W}/notes.txt", "--prompt", "hi", "--model", str(DEMO_MODEL)], 1),
        CliCase("empty PNG", ["generate", f"{W}/empty.png", "--prompt", "hi", "--model", str(DEMO_MODEL)], 1),
        CliCase("truncated PNG", ["generate", f"{W}/fake.png", "--prompt", "hi", "--model", str(DEMO_MODEL)], 1),
        CliCase("two <image> placeholders, one scan", ["generate", png, "--prompt", "<image> vs <image>?", "--model", str(DEMO_MODEL)], 1),
        CliCase("unknown window name", gen + ["--window", "liver"], 1),
        CliCase("unknown dtype", gen + ["--dtype", "float8"], 1),
        CliCase("model folder missing", ["generate", png, "--prompt", "hi", "--model", f"{W}/no_model"], 1),
        # evaluate
        CliCase("misspelled --limt", ev + ["--limt", "1"], 2, no_eval),
        CliCase("--limit not a number", ev + ["--limit", "abc"], 2, no_eval),
        CliCase("--output missing", ["evaluate", f"{W}/data/m_ok.jsonl", "--model", "tiny"], 2),
        CliCase("manifest missing", ["evaluate", f"{W}/data/none.jsonl", "--model", "tiny", "--output", f"{W}/eval_out"], 1, no_eval),
        CliCase("manifest not UTF-8", ["evaluate", f"{W}/data/m_latin1.jsonl", "--model", "tiny", "--output", f"{W}/eval_out"], 1, no_eval),
        CliCase("manifest with a broken JSON line", ["evaluate", f"{W}/data/m_badjson.jsonl", "--model", "tiny", "--output", f"{W}/eval_out"], 1, no_eval),
        CliCase("manifest image outside the data root", ["evaluate", f"{W}/data/m_outside.jsonl", "--model", "tiny", "--output", f"{W}/eval_out"], 1, no_eval),
        CliCase("manifest with duplicate ids", ["evaluate", f"{W}/data/m_dup.jsonl", "--model", "tiny", "--output", f"{W}/eval_out"], 1, no_eval),
        CliCase("manifest with an unknown task", ["evaluate", f"{W}/data/m_notask.jsonl", "--model", "tiny", "--output", f"{W}/eval_out"], 1, no_eval),
        CliCase("manifest placeholders != images", ["evaluate", f"{W}/data/m_placeholders.jsonl", "--model", "tiny", "--output", f"{W}/eval_out"], 1, no_eval),
        CliCase("split matching nothing", ev + ["--split", "holdout"], 1, no_eval),
        CliCase("model folder missing", ["evaluate", f"{W}/data/m_ok.jsonl", "--model", f"{W}/no_model", "--output", f"{W}/eval_out"], 1, no_eval),
        CliCase("unknown prompt format", ev + ["--prompt_format", "chatml"], 1, no_eval),
        CliCase("output folder is a file", ["evaluate", f"{W}/data/m_ok.jsonl", "--model", "tiny", "--output", f"{W}/a_file"], 1),
        CliCase("output folder locked by a running evaluate", ["evaluate", f"{W}/data/m_ok.jsonl", "--model", "tiny", "--output", f"{W}/locked_out", "--nobertscore"], 1),
        CliCase("--batch_size not a number", ev + ["--batch_size", "four"], 2, no_eval),
        # score
        CliCase("no prediction files", ["score"] + sc, 2, no_score),
        CliCase("empty predictions file", ["score", f"{W}/empty.jsonl"] + sc, 1, no_score),
        CliCase("predictions file missing", ["score", f"{W}/nothere.jsonl"] + sc, 1, no_score),
        CliCase("predictions not UTF-8", ["score", f"{W}/latin1.jsonl"] + sc, 1, no_score),
        CliCase("predictions with a broken JSON line", ["score", f"{W}/badjson.jsonl"] + sc, 1, no_score),
        CliCase("JSON list as prediction", ["score", f"{W}/list.jsonl"] + sc, 1, no_score),
        CliCase("predictions missing a field", ["score", f"{W}/nofield.jsonl"] + sc, 1, no_score),
        CliCase("JSON array instead of an object", ["score", f"{W}/array.jsonl"] + sc, 1, no_score),
        CliCase("CSV without the published columns", ["score", f"{W}/badcols.csv"] + sc, 1, no_score),
        CliCase("CSV not UTF-8", ["score", f"{W}/latin1.csv"] + sc, 1, no_score),
        CliCase("unknown predictions extension", ["score", f"{W}/preds.txt"] + sc, 1, no_score),
        CliCase("--names count mismatch", ["score", f"{W}/good.jsonl", "--names", "a,b"] + sc, 2, no_score),
        CliCase("--n_resamples not a number", ["score", f"{W}/good.jsonl", "--n_resamples", "many"] + sc, 2, no_score),
        CliCase("misspelled --outptu", ["score", f"{W}/good.jsonl", "--outptu", f"{W}/score_out"], 2, no_score),
        CliCase("term vocabulary not UTF-8", ["score", f"{W}/good.jsonl", "--terms", f"{W}/vocab_latin1.txt"] + sc, 1, no_score),
        CliCase("term vocabulary missing", ["score", f"{W}/good.jsonl", "--terms", f"{W}/vocab.txt"] + sc, 1, no_score),
        # data
        CliCase("group without a command", ["data"], 2),
        CliCase("misspelled command convrt", ["data", "convrt", "report-csv", f"{W}/r_ok.csv"] + conv, 2, no_conv),
        CliCase("misspelled format report-cvs", ["data", "convert", "report-cvs", f"{W}/r_ok.csv"] + conv, 2, no_conv),
        CliCase("misspelled adapter option --sed", ["data", "convert", "report-csv", f"{W}/r_ok.csv", "--sed", "1"] + conv, 2, no_conv),
        CliCase("table missing", ["data", "convert", "report-csv", f"{W}/none.csv"] + conv, 1, no_conv),
        CliCase("table without the needed columns", ["data", "convert", "report-csv", f"{W}/r_cols.csv"] + conv, 1, no_conv),
        CliCase("table with duplicate ids", ["data", "convert", "report-csv", f"{W}/r_dup.csv"] + conv, 1, no_conv),
        CliCase("table not UTF-8", ["data", "convert", "report-csv", f"{W}/r_latin1.csv"] + conv, 1, no_conv),
        CliCase("table with an unknown split", ["data", "convert", "report-csv", f"{W}/r_split.csv"] + conv, 1, no_conv),
        CliCase("table naming a missing image", ["data", "convert", "report-csv", f"{W}/r_noimage.csv"] + conv, 1, no_conv),
        CliCase("VQA-RAD JSON broken", ["data", "convert", "vqa-rad", f"{W}/vqa.json"] + conv, 1, no_conv),
        CliCase("--output missing", ["data", "convert", "report-csv", f"{W}/r_ok.csv"], 2),
        CliCase("phantoms --n not a number", ["data", "phantoms", "--output", f"{W}/ph", "--n", "lots"], 2, [f"{W}/ph"]),
        CliCase("phantoms into a non-empty folder", ["data", "phantoms", "--output", f"{W}/phantoms_full", "--n", "2"], 1),
        # export-sr
        CliCase("no answer", ["export-sr", f"{W}/sr.dcm", png], 1, [f"{W}/sr.dcm"]),
        CliCase("only a PNG (no DICOM source)", ["export-sr", f"{W}/sr.dcm", png, "--answer", "ok"], 1, [f"{W}/sr.dcm"]),
        CliCase("--from_json missing", ["export-sr", f"{W}/sr.dcm", "--from_json", f"{W}/none.json"], 1, [f"{W}/sr.dcm"]),
        CliCase("--from_json not a record", ["export-sr", f"{W}/sr.dcm", "--from_json", f"{W}/answer.json"], 1, [f"{W}/sr.dcm"]),
        CliCase("misspelled --modle", ["export-sr", f"{W}/sr.dcm", png, "--answer", "ok", "--modle", "x"], 2, [f"{W}/sr.dcm"]),
        # convert
        CliCase("checkpoint missing", ["convert", f"{W}/none.bin", f"{W}/none", f"{W}/conv_model"], 1, [f"{W}/conv_model"]),
        CliCase("checkpoint is a text file", ["convert", f"{W}/not_a_checkpoint.bin", f"{W}/none", f"{W}/conv_model"], 1, [f"{W}/conv_model"]),
        CliCase("misspelled --outptu", ["convert", f"{W}/none.bin", f"{W}/none", "--outptu", f"{W}/conv_model"], 2, [f"{W}/conv_model"]),
        # info, preprocess, serve, rate, train, top level
        CliCase("model folder missing", ["info", "--model", f"{W}/no_model"], 1),
        CliCase("unknown preset", ["info", "--preset", "huge"], 1),
        CliCase("scan missing", ["preprocess", f"{W}/none.nii.gz"], 1),
        CliCase("text file", ["preprocess", f"{W}/notes.txt"], 1),
        CliCase("unknown window", ["preprocess", png, "--window", "liver"], 1),
        CliCase("grid not a multiple of 32", ["preprocess", png, "--size_2d", "100"], 1),
        *[CliCase(f"hostile header {name} (22-H1)", ["preprocess", f"{W}/hostile/{name}"], 1)
          for name in hostile_headers("x")],
        CliCase("NRRD header named .png", ["preprocess", f"{W}/hostile/nrrd_named.png"], 1),
        CliCase("deflated DICOM: 0.5 MB inflating to 512 MiB (22-H2)", ["preprocess", f"{W}/hostile/bomb.dcm"], 1),
        CliCase("a FIFO named .nrrd", ["preprocess", f"{W}/hostile/fifo.nrrd"], 1),
        CliCase("--png is a symlink (22-M5)", ["preprocess", png, "--png", f"{W}/png_link.png"], 1),
        CliCase("manifest: DICOM folder holding a link out of the root (22-M4)",
                ["evaluate", f"{W}/data/m_series_link.jsonl", "--model", "tiny", "--output", f"{W}/eval_out",
                 "--nobertscore"], 1, [f"{W}/eval_out"]),
        CliCase("bind 0.0.0.0 without --allow_remote", ["serve", "--host", "0.0.0.0"], 1),
        CliCase("misspelled --prot", ["serve", "--prot", "1"], 2),
        CliCase("--port not a number", ["serve", "--port", "http"], 2),
        CliCase("group without a command", ["rate"], 2),
        CliCase("predictions missing", ["rate", "create", "--study", f"{W}/study_new", "--predictions", f"{W}/none.jsonl"], 1, [f"{W}/study_new"]),
        CliCase("predictions not UTF-8", ["rate", "create", "--study", f"{W}/study_new", "--predictions", f"{W}/latin1.jsonl"], 1, [f"{W}/study_new"]),
        CliCase("--per_task 0 (22-L2)", ["rate", "create", "--study", f"{W}/study_new", "--predictions", f"{W}/good.jsonl", "--per_task", "0"], 2, [f"{W}/study_new"]),
        CliCase("image is a host file, not a scan (22-M4)", ["rate", "create", "--study", f"{W}/study_new", "--predictions", f"{W}/rate_host.jsonl"], 1, [f"{W}/study_new"]),
        CliCase("misspelled --nme", ["rate", "add_rater", "--nme", "x", "--study", f"{W}/study"], 2),
        CliCase("study missing", ["rate", "add_rater", "x", f"{W}/no_study"], 1),
        CliCase("surplus argument", ["rate", "add_rater", "x", f"{W}/study", "extra"], 2),
        CliCase("misspelled --bundle_rot", ["train", "instruct", "--bundle_rot", f"{W}/b"], 2, [f"{W}/b"]),
        CliCase("unknown subcommand scroe", ["scroe", f"{W}/good.jsonl"], 2),
    ]
    return cases


# ------------------------------------------------------------------------ running CLI ----
def _read_all(fds: list[int], pid: int, timeout_s: float) -> tuple[dict[int, bytes], int]:
    """Read the child's pipes until they close; returns (fd -> bytes, exit status)."""
    chunks: dict[int, list[bytes]] = {fd: [] for fd in fds}
    open_fds = list(fds)
    deadline = time.monotonic() + timeout_s
    while open_fds and time.monotonic() < deadline:
        ready, _, _ = select.select(open_fds, [], [], 1.0)
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.remove(fd)
    if open_fds:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    for fd in fds:
        os.close(fd)
    code = os.waitstatus_to_exitcode(status)
    return {fd: b"".join(parts) for fd, parts in chunks.items()}, (124 if open_fds else code)


def run_cli_forked(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """``radfm argv`` via ``radfm.cli.main`` in a forked child: (exit status, stdout, stderr)."""
    from radfm.cli import main

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(out_r)
            os.close(err_r)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.chdir(cwd)
            sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
            sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)
            try:
                main(list(argv))
                code = 0
            except SystemExit as exit_:
                if exit_.code is None or isinstance(exit_.code, int):
                    code = exit_.code or 0
                else:
                    print(exit_.code, file=sys.stderr)
                    code = 1
            except BaseException:  # what Python itself would print
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    outputs, code = _read_all([out_r, err_r], pid, CASE_TIMEOUT_S)
    return code, outputs[out_r].decode(errors="replace"), outputs[err_r].decode(errors="replace")


def run_cli_subprocess(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """``python -m radfm.cli argv`` in a fresh process: (exit status, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "radfm.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=CASE_TIMEOUT_S)
    return done.returncode, done.stdout, done.stderr


def _error_lines(stderr: str) -> list[str]:
    """The ``radfm ...`` lines on stderr that are not warnings."""
    return [line for line in stderr.splitlines() if line.startswith("radfm") and ": warning:" not in line]


def judge_cli(case: CliCase, work: Path, code: int, stdout: str, stderr: str) -> Result:
    lines = _error_lines(stderr)
    problems = []
    if code != case.expect:
        problems.append(f"exit {code}, expected {case.expect}")
    if "Traceback" in stderr:
        problems.append("traceback")
    if len(lines) != 1:
        problems.append(f"{len(lines)} error lines")
    left = [p for p in case.must_not_exist if Path(p.replace("$W", str(work))).exists()]
    if left:
        problems.append(f"left {', '.join(Path(p).name for p in left)}")
    message = lines[-1] if lines else (stderr.strip().splitlines() or stdout.strip().splitlines() or [""])[-1]
    command = "radfm " + " ".join(_quote(a) for a in case.argv)
    return Result(case.area, case.what, command, f"exit {code}", message, not problems, "; ".join(problems))


def _quote(arg: str) -> str:
    return f"'{arg}'" if re.search(r"[\s<>?]", arg) else arg


def run_cli_cases(work: Path, cases: list[CliCase], use_subprocess: bool = False,
                  progress: Callable[[str], None] = print) -> list[Result]:
    from radfm.utils.lock import lock_folder

    runner = run_cli_subprocess if use_subprocess else run_cli_forked
    held = lock_folder(work / "locked_out", "radfm evaluate")  # "a running evaluate" for the lock case
    results = []
    try:
        for index, case in enumerate(cases, start=1):
            argv = [arg.replace("$W", str(work)) for arg in case.argv]
            code, stdout, stderr = runner(argv, work)
            result = judge_cli(case, work, code, stdout, stderr)
            results.append(result)
            progress(f"[cli {index}/{len(cases)}] {'ok ' if result.ok else 'BAD'} {case.what}: {result.got} {result.why}")
    finally:
        held.release()
    return results


# ------------------------------------------------------------------------ HTTP helpers ----
def raw_request(port: int, head: bytes, body: bytes = b"", timeout_s: float = 30.0) -> tuple[int | None, str]:
    """Send bytes as they are (paths are not normalised); returns (status or None, body text)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as client:
        client.sendall(head + body)
        data = b""
        try:
            while chunk := client.recv(65536):
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (int(match.group(1)) if match else None), data.partition(b"\r\n\r\n")[2].decode(errors="replace")


def slow_head(port: int, budget_s: float) -> tuple[int | None, float]:
    """A slowloris socket: one header line every 0.2 s; returns (status, seconds until the server hung up)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=budget_s) as client:
        client.settimeout(0.2)
        client.sendall(b"POST /v1/answer HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        data = b""
        n = 0
        while time.monotonic() - started < budget_s:
            try:
                client.sendall(f"X-Slow-{n}: 1\r\n".encode())
                n += 1
                chunk = client.recv(4096)
                if not chunk:
                    break
                data += chunk
            except TimeoutError:
                continue
            except OSError:
                break
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (int(match.group(1)) if match else None), time.monotonic() - started


def _message(text: str) -> str:
    try:
        body = json.loads(text)
        if isinstance(body, dict) and "answer" in body:
            files = [name[:40] + ("..." if len(name) > 40 else "") for scan in body.get("scans", []) for name in scan["files"]]
            return f"answered; the scan is recorded as uploaded: {json.dumps(files)}"
        if isinstance(body, dict):
            return str(body.get("error") or body.get("detail") or "")[:200] or "(JSON without an error)"
    except json.JSONDecodeError:
        pass
    text = re.sub(r"<[^>]+>", " ", text)
    return " ".join(text.split())[:160]


# ------------------------------------------------------------------------ service ----
@dataclass
class HttpCase:
    what: str
    request: str  # shown in the table
    send: Callable[[], tuple[int | None, str]]
    expect: tuple[int, ...]
    area: str = "service"
    forbidden: tuple[str, ...] = ("root:x:0:0",)  # text that must not come back
    check: Callable[[], str | None] | None = None  # a problem seen after the request, or None


def service_cases(url: str, port: int, work: Path) -> list[HttpCase]:
    import httpx

    png = (work / "scan.png").read_bytes()

    def post(files=None, data=None, headers=None, content=None, timeout=120):
        def send():
            response = httpx.post(f"{url}/v1/answer", files=files, data=data, headers=headers, content=content,
                                  timeout=timeout)
            return response.status_code, response.text
        return send

    def ask(**fields):
        return post(files=[("files", ("scan.png", png, "image/png"))], data={"prompt": "What is shown?", **fields})

    def field_text(fields: dict) -> str:
        return ", ".join(f"{k}={v}" for k, v in fields.items())

    cases = [
        HttpCase("GET on the answer route", "GET /v1/answer", lambda: raw_request(port, b"GET /v1/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"), (405,)),
        HttpCase("JSON body instead of multipart", "POST /v1/answer, JSON {prompt}", post(content=b'{"prompt": "hi"}', headers={"content-type": "application/json"}), (415,)),
        HttpCase("no content type", "POST /v1/answer, raw bytes", post(content=b"hello"), (415,)),
        HttpCase("multipart without files", "POST prompt only", post(data={"prompt": "hi"}, files=[("x", ("", b"", "text/plain"))]), (400,)),
        HttpCase("no prompt", "POST files=scan.png", post(files=[("files", ("scan.png", png, "image/png"))]), (400,)),
        HttpCase("blank prompt", "POST prompt='   '", post(files=[("files", ("scan.png", png, "image/png"))], data={"prompt": "   "}), (400,)),
        HttpCase("prompt of 9000 characters", "POST prompt='x'*9000", post(files=[("files", ("scan.png", png, "image/png"))], data={"prompt": "x" * 9000}), (413,)),
        HttpCase("text file as scan", "POST files=notes.txt", post(files=[("files", ("notes.txt", b"hello", "text/plain"))], data={"prompt": "hi"}), (415,)),
        HttpCase("empty file", "POST files=empty.png (0 bytes)", post(files=[("files", ("empty.png", b"", "image/png"))], data={"prompt": "hi"}), (400,)),
        HttpCase("truncated PNG", "POST files=fake.png (PNG magic only)", post(files=[("files", ("fake.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png"))], data={"prompt": "hi"}), (422,)),
        HttpCase("not gzip but named .nii.gz", "POST files=bad.nii.gz", post(files=[("files", ("bad.nii.gz", b"not gzip", "application/gzip"))], data={"prompt": "hi"}), (415,)),
        HttpCase("broken DICOM", "POST files=broken.dcm (preamble + garbage)", post(files=[("files", ("broken.dcm", b"\0" * 128 + b"DICM" + b"\x02\x00garbage", "application/dicom"))], data={"prompt": "hi"}), (422,)),
        HttpCase("scan in the wrong field", "POST upload=scan.png", post(files=[("upload", ("scan.png", png, "image/png"))], data={"prompt": "hi"}), (400,)),
        HttpCase("file sent as the prompt", "POST prompt=<file>", post(files=[("files", ("scan.png", png, "image/png")), ("prompt", ("p.txt", b"hi", "text/plain"))]), (400,)),
        HttpCase("more scans than the model takes", "POST 11 x scan.png", post(files=[("files", (f"s{i}.png", png, "image/png")) for i in range(11)], data={"prompt": "hi"}), (413,)),
        *[HttpCase(f"hostile header {name} (22-H1)", f"POST files={name} (data file -> $W/host/passwd)",
                   post(files=[("files", (name, (work / "hostile" / name).read_bytes(), "application/octet-stream"))],
                        data={"prompt": "hi"}), (413, 415, 422))
          for name in hostile_headers("x")],
        HttpCase("deflated DICOM: 0.5 MB inflating to 512 MiB (22-H2)", "POST files=bomb.dcm",
                 post(files=[("files", ("bomb.dcm", (work / "hostile" / "bomb.dcm").read_bytes(), "application/dicom"))],
                      data={"prompt": "hi"}), (413,)),
        HttpCase("placeholders != scans", "POST prompt='<image> vs <image>', 1 scan", post(files=[("files", ("scan.png", png, "image/png"))], data={"prompt": "<image> vs <image>"}), (422,)),
    ]
    bad_fields = [
        {"max_new_tokens": "lots"}, {"max_new_tokens": "99999"}, {"max_new_tokens": "0"}, {"max_new_tokens": "-1"},
        {"do_sample": "true", "temperature": "inf"}, {"do_sample": "true", "temperature": "nan"},
        {"do_sample": "true", "temperature": "0"}, {"do_sample": "true", "temperature": "1e-300"},
        {"repetition_penalty": "inf"}, {"repetition_penalty": "1e308"}, {"num_beams": "96"},
        {"num_beams": "8", "max_new_tokens": "1024"}, {"top_p": "2"}, {"top_k": "-1"}, {"seed": "-1"},
        {"seed": "99999999999999999999999"}, {"do_sample": "maybe"},
    ]
    cases += [HttpCase(f"option {field_text(f)}", f"POST scan.png, {field_text(f)}", ask(**f), (422,)) for f in bad_fields]
    long_name = "a" * 296 + ".png"
    cases += [
        HttpCase("300-character file name", "POST files=('a'*296 + '.png')", post(files=[("files", (long_name, png, "image/png"))], data={"prompt": "hi", "max_new_tokens": "2"}), (200,)),
        HttpCase("path traversal in the file name", "POST files=('../../../../tmp/radfm_sweep_evil.png')", post(files=[("files", ("../../../../tmp/radfm_sweep_evil.png", png, "image/png"))], data={"prompt": "hi", "max_new_tokens": "2"}), (200,),
                 check=lambda: "wrote /tmp/radfm_sweep_evil.png" if Path("/tmp/radfm_sweep_evil.png").exists() else None),
        HttpCase("control characters in the file name", "POST files=('a\\r\\nb.png')", post(files=[("files", ("a\r\nb\x01.png", png, "image/png"))], data={"prompt": "hi", "max_new_tokens": "2"}), (200, 400)),
        HttpCase("body over the size limit (declared)", "POST Content-Length: 10 GB", lambda: raw_request(port, b"POST /v1/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 10000000000\r\nConnection: close\r\n\r\n"), (413,)),
        HttpCase("body over the size limit (sent)", "POST 5 MB scan", post(files=[("files", ("big.png", png + b"\0" * (5 << 20), "image/png"))], data={"prompt": "hi"}), (413,)),
        HttpCase("malformed multipart", "POST boundary=x, body without parts", post(content=b"--y\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=x"}), (400,)),
        HttpCase("DNS rebinding Host", "GET /health, Host: evil.example", lambda: raw_request(port, b"GET /health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"), (403,)),
        HttpCase("foreign Origin", "POST /v1/answer, Origin: http://evil.example", post(files=[("files", ("scan.png", png, "image/png"))], data={"prompt": "hi"}, headers={"Origin": "http://evil.example"}), (403,)),
        HttpCase("slowloris request head", "header lines 0.2 s apart, never finished", lambda: _slowloris_result(port), (408,)),
        HttpCase("slow upload body", "Content-Length 100000, 10 bytes, then silence", lambda: raw_request(port, b"POST /v1/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n", b"--x\r\nConte"), (408,)),
        HttpCase("NRRD header pointing at /etc/passwd", "POST files=evil.nrrd ('data file: /etc/passwd')", post(files=[("files", ("evil.nrrd", b"NRRD0004\ntype: uint8\ndimension: 2\nsizes: 8 8\nencoding: raw\ndata file: /etc/passwd\n\n", "application/octet-stream"))], data={"prompt": "hi", "max_new_tokens": "2"}), (422,),
                 forbidden=("root:x:0:0", str(_size_of("/etc/passwd")))),
    ]
    return cases


def _size_of(path: str) -> int | str:
    """A file's size (a reply that states it has read the file), or a marker that never matches."""
    try:
        return os.path.getsize(path)
    except OSError:
        return "\0no such file\0"


def _slowloris_result(port: int) -> tuple[int | None, str]:
    status, held = slow_head(port, budget_s=15)
    return status, f"connection closed after {held:.1f} s"


def run_http_cases(cases: list[HttpCase], progress: Callable[[str], None] = print) -> list[Result]:
    results = []
    for index, case in enumerate(cases, start=1):
        try:
            status, text = case.send()
        except Exception as error:  # the server hung up without an answer
            status, text = None, f"{type(error).__name__}: {error}"
        message = _message(text) if status != 408 or "closed after" not in text else text
        if case.what.startswith("slowloris"):
            message = f"{text}; status {status}"
        problems = []
        if status not in case.expect:
            problems.append(f"status {status}, expected {'/'.join(map(str, case.expect))}")
        if status is not None and status >= 500:
            problems.append("server error")
        if any(secret in text for secret in case.forbidden):
            problems.append("leaked the file's content or size")
        if case.check is not None and (problem := case.check()):
            problems.append(problem)
        result = Result(case.area, case.what, case.request, f"HTTP {status}", message, not problems, "; ".join(problems))
        results.append(result)
        progress(f"[{case.area} {index}/{len(cases)}] {'ok ' if result.ok else 'BAD'} {case.what}: {result.got} {result.why}")
    return results


# ------------------------------------------------------------------------ URL traversal ----
TRAVERSALS_SERVICE = [
    "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/docs/../../../etc/passwd", "//etc/passwd",
    "/v1/answer/..%2f..%2fetc%2fpasswd",
]
TRAVERSALS_RATING = [
    "/case/1/image/..%2f..%2f..%2fetc%2fpasswd.png", "/case/..%2f1/image/0.png", "/case/1/image/-1.png",
    "/case/1/image/999.png", "/case/99999", "/case/1/image/0.png?window=../../etc/passwd",
    "/api/case/1%00", "/static/..%2f..%2f..%2fetc%2fpasswd",
]


def traversal_cases(service_port: int, rating_port: int, session_cookie: str) -> list[HttpCase]:
    def get(port: int, path: str, cookie: str = ""):
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{cookie}\r\n".encode()
        return lambda: raw_request(port, head)

    cases = [HttpCase(f"service {path}", f"GET {path}", get(service_port, path), (400, 404, 405, 422), area="url")
             for path in TRAVERSALS_SERVICE]
    cookie = f"Cookie: {session_cookie}\r\n"
    cases += [HttpCase(f"rating app {path}", f"GET {path} (signed in)", get(rating_port, path, cookie),
                       (400, 404, 422), area="url") for path in TRAVERSALS_RATING]
    return cases


def rating_cases(rating_port: int, session_cookie: str) -> list[HttpCase]:
    """Hostile headers planted in a study's image folder (after create): the viewer refuses each (22-H1)."""
    def get(path: str):
        head = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{rating_port}\r\nConnection: close\r\n"
                f"Cookie: {session_cookie}\r\n\r\n").encode()
        return lambda: raw_request(rating_port, head)

    return [HttpCase(f"rating app: planted header {name} (22-H1)", f"GET /case/{number}/image/0.png (signed in)",
                     get(f"/case/{number}/image/0.png"), (422,), area="rating",
                     forbidden=("root:x:0:0", "320 bytes", "320,"))
            for number, name in enumerate(hostile_headers("x"), start=3)]


# ------------------------------------------------------------------------ servers ----
def start_service(work: Path):
    from radfm.answering.answerer import ModelAnswerer
    from radfm.answering.limits import Limits
    from radfm.http.http_guard import GuardLimits
    from radfm.http.service import BackgroundServer, create_app

    answerer = ModelAnswerer.from_model_dir(DEMO_MODEL, device="cpu", dtype="float32")
    limits = Limits(max_request_bytes=4 << 20, max_new_tokens=64, generation_timeout_s=60)
    guard = GuardLimits(header_timeout_s=2.0, body_idle_timeout_s=2.0, body_timeout_s=30.0)
    return BackgroundServer(create_app(answerer, limits), guard=guard).start()


def start_rating_app(work: Path):
    import httpx

    from radfm.http.http_guard import GuardLimits
    from radfm.http.service import BackgroundServer
    from radfm.rating.app import create_app
    from radfm.rating.study import create_study

    # cases 1-2 show the PNG; cases 3.. get a valid one-file NRRD/MetaImage, replaced below by a hostile header
    valid = {".nrrd": b"NRRD0004\ntype: uint8\ndimension: 2\nsizes: 4 4\nencoding: raw\n\n" + bytes(16),
             ".mha": b"ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\n"
                     b"ElementDataFile = LOCAL\n" + bytes(16)}
    planted = []
    for name in hostile_headers("x"):
        suffix = ".mha" if name.endswith(".mhd") else ".nrrd"
        placeholder = work / "planted" / f"{Path(name).stem}{suffix}"
        placeholder.parent.mkdir(exist_ok=True)
        placeholder.write_bytes(valid[suffix])
        planted.append((name, placeholder))
    images = [work / "scan.png"] * 2 + [path for _, path in planted]
    rows = [{"id": f"c{i}", "dataset": "d", "task": "vqa", "images": [str(image)],
             "instruction": "<image> What is shown?", "reference": "yes", "prediction": f"answer {i}",
             "model": "a", "error": None, "closed_set": None} for i, image in enumerate(images)]
    files = []
    for model in ("a", "b"):
        path = work / f"rate_{model}.jsonl"
        path.write_text("".join(json.dumps(dict(row, model=model)) + "\n" for row in rows))
        files.append(path)
    summary = create_study(work / "study", files, raters=["alice"])
    token = summary["tokens"]["alice"]
    hostile = hostile_headers(work / "host" / "passwd")
    for number, (name, _placeholder) in enumerate(planted, start=3):
        stored = next((work / "study" / "images" / f"c{number - 1:05d}").iterdir())
        stored.write_bytes(hostile[name])
    server = BackgroundServer(create_app(work / "study"), guard=GuardLimits(header_timeout_s=2.0)).start()
    response = httpx.post(f"{server.url}/signin", data={"token": token}, follow_redirects=False)
    cookie = "; ".join(f"{name}={value}" for name, value in response.cookies.items())
    return server, cookie


# ------------------------------------------------------------------------ report ----
def _clean(text: str, work: Path, ports: list[int]) -> str:
    text = text.replace(str(work.resolve()), "$W").replace(str(work), "$W").replace(str(REPO) + "/", "")
    for port in ports:
        text = text.replace(f":{port}", ":PORT")
    text = re.sub(r"pid \d+", "pid N", text)
    text = re.sub(r"/tmp/radfm-upload-\w+", "/tmp/radfm-upload-X", text)
    text = re.sub(r"after \d+\.\d s", "after N s", text)
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(results: list[Result], path: Path, work: Path, ports: list[int], seconds: float, mode: str) -> None:
    by_area: dict[str, list[Result]] = {}
    for result in results:
        by_area.setdefault(result.area, []).append(result)
    titles = {"cli": "Command line", "service": "Service requests (`radfm serve`)",
              "url": "URL traversal (service and rating app)",
              "rating": "Rating app: hostile headers planted in a study (`radfm rate serve`)"}
    bad = [r for r in results if not r.ok]
    lines = [
        "# Bad-input sweep",
        "",
        "Generated by `python scripts/bad_input_sweep.py` (do not edit by hand; rerun the script). "
        f"{len(results)} bad inputs: " + ", ".join(f"{len(v)} {k}" for k, v in by_area.items()) + f"; {len(bad)} not as expected.",
        "",
        f"CLI cases run `radfm.cli.main(argv)` {mode}. Expected for the CLI: the documented exit status "
        "(1 input error, 2 usage error), exactly one `radfm ...` line on stderr, no traceback, no output "
        "left where the command was asked to write. Expected for HTTP: the stated status, never a 5xx, no file "
        "content. `$W` is the sweep's scratch folder; the service runs the shipped demo model with "
        "test limits (4 MiB requests, 2 s header/body timeouts).",
        "",
    ]
    for area, rows in by_area.items():
        lines += [f"## {titles.get(area, area)}", "", "| # | bad input | command / request | got | message | as expected |",
                  "|---|---|---|---|---|---|"]
        for index, row in enumerate(rows, start=1):
            verdict = "yes" if row.ok else f"**no**: {row.why}"
            lines.append(f"| {index} | {_clean(row.what, work, ports)} | `{_clean(row.command, work, ports)}` | "
                         f"{row.got} | {_clean(row.message, work, ports)} | {verdict} |")
        lines.append("")
    lines.append(f"Sweep time: {seconds:.0f} s.")
    from radfm.utils.io import atomic_write_text

    atomic_write_text(path, "\n".join(lines) + "\n")


def run_sweep(only: set[str] | None = None, use_subprocess: bool = False, cli_filter: Callable[[CliCase], bool] | None = None,
              progress: Callable[[str], None] = print, work: Path | None = None,
              http_filter: Callable[[HttpCase], bool] | None = None) -> tuple[list[Result], Path, list[int]]:
    """Run the sweep (``only``: some of {"cli", "service", "url", "rating"}; filters pick cases); returns (results, workspace, ports)."""
    import radfm.cli  # noqa: F401  (imported once before forking)
    for module in ("radfm.doors.generate", "radfm.doors.evaluate", "radfm.metrics.score", "radfm.data.cli",
                   "radfm.rating.cli", "radfm.dicom.sr", "radfm.model.convert", "radfm.model.info",
                   "radfm.transforms.preprocess", "radfm.http.service", "radfm.engines.cli", "fire"):
        __import__(module)
    only = only or {"cli", "service", "url", "rating"}
    work = work or Path(tempfile.mkdtemp(prefix="radfm-sweep-"))
    make_workspace(work)
    results: list[Result] = []
    ports: list[int] = []
    if "cli" in only:
        cases = [case for case in cli_cases() if cli_filter is None or cli_filter(case)]
        results += run_cli_cases(work, cases, use_subprocess, progress)  # before any server thread exists (fork)
    if only & {"service", "url", "rating"}:
        service = start_service(work)
        rating, cookie = start_rating_app(work)
        ports = [service.port, rating.port]
        try:
            keep = http_filter or (lambda case: True)
            if "service" in only:
                results += run_http_cases([c for c in service_cases(service.url, service.port, work) if keep(c)], progress)
            if "url" in only:
                results += run_http_cases([c for c in traversal_cases(service.port, rating.port, cookie) if keep(c)], progress)
            if "rating" in only:
                results += run_http_cases([c for c in rating_cases(rating.port, cookie) if keep(c)], progress)
        finally:
            service.stop()
            rating.stop()
    return results, work, ports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown table to write")
    parser.add_argument("--only", default="cli,service,url,rating", help="comma-separated: cli, service, url, rating")
    parser.add_argument("--subprocess", action="store_true", help="run each CLI case as `python -m radfm.cli`")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    started = time.monotonic()
    results, work, ports = run_sweep(set(args.only.split(",")), args.subprocess)
    mode = "as `python -m radfm.cli` subprocesses" if args.subprocess else "in a forked child process each (the `radfm` executable's entry point)"
    write_report(results, args.output, work, ports, time.monotonic() - started, mode)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    bad = [r for r in results if not r.ok]
    print(f"{len(results)} cases, {len(bad)} not as expected; table: {args.output}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
