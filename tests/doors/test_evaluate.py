"""The evaluation runner: resumable, per-case failures recorded, each case scored exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from types import SimpleNamespace

import pytest

from radfm.doors.evaluate import EvalCase, build_cases, run_predictions, select_samples


class Interrupted(BaseException):
    """Stands in for a kill: not an Exception, so the runner's per-case handling cannot swallow it."""


def _cases(n: int) -> list[EvalCase]:
    return [EvalCase(id=f"c{i}", dataset="ds", task="vqa", prompt=f"<image> question {i}?", image_paths=[f"img{i}.png"],
                     reference=f"answer {i}", instruction=f"<image> question {i}?") for i in range(n)]


def _echo_predictor(calls: list[list[str]], fail_after: int | None = None):
    def predict(prompts, images):
        if fail_after is not None and sum(len(c) for c in calls) + len(prompts) > fail_after:
            raise Interrupted()
        calls.append(list(prompts))
        return [p.replace("question", "answer").replace("<image> ", "").rstrip("?") for p in prompts]
    return predict


def _ids(path) -> Counter:
    return Counter(json.loads(line)["id"] for line in path.read_text().splitlines())


def test_interrupted_run_resumes_and_each_case_is_recorded_once(tmp_path):
    path = tmp_path / "predictions.jsonl"
    cases = _cases(10)
    with pytest.raises(Interrupted):
        run_predictions(cases, _echo_predictor([], fail_after=5), lambda p: p, path, model_name="m",
                        batch_size=2, progress=False)
    assert sum(_ids(path).values()) == 4  # two full batches were written before the "kill"
    calls: list[list[str]] = []
    counts = run_predictions(cases, _echo_predictor(calls), lambda p: p, path, model_name="m", batch_size=2,
                             progress=False)
    assert counts == {"skipped": 4, "predicted": 6, "failed": 0}
    assert sum(len(c) for c in calls) == 6  # finished cases were not redone
    assert _ids(path) == Counter({case.id: 1 for case in cases})


def test_torn_last_line_from_a_kill_is_dropped_and_redone(tmp_path):
    path = tmp_path / "predictions.jsonl"
    cases = _cases(3)
    run_predictions(cases[:2], _echo_predictor([]), lambda p: p, path, model_name="m", progress=False)
    path.write_text(path.read_text() + '{"id": "c2", "predic')  # killed mid-write
    run_predictions(cases, _echo_predictor([]), lambda p: p, path, model_name="m", progress=False)
    assert _ids(path) == Counter({"c0": 1, "c1": 1, "c2": 1})


def test_failures_are_recorded_and_the_run_carries_on(tmp_path):
    path = tmp_path / "predictions.jsonl"
    cases = _cases(4)

    def load_image(image_path):
        if image_path == "img1.png":
            raise ValueError("img1.png: cannot read scan")
        return image_path

    def predict(prompts, images):
        if any("question 2" in p for p in prompts):
            raise RuntimeError("prompt too long")
        return ["fine"] * len(prompts)

    counts = run_predictions(cases, predict, load_image, path, model_name="m", batch_size=4, progress=False)
    assert counts == {"skipped": 0, "predicted": 2, "failed": 2}
    records = {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert records["c1"]["error"] == "ValueError: img1.png: cannot read scan"
    assert records["c2"]["error"] == "RuntimeError: prompt too long"
    assert records["c0"]["prediction"] == records["c3"]["prediction"] == "fine"
    # failures count as finished unless retried
    retried = run_predictions(cases, lambda p, i: ["ok"] * len(p), lambda p: p, path, model_name="m",
                              retry_failed=True, progress=False)
    assert retried == {"skipped": 2, "predicted": 2, "failed": 0}


def test_a_real_sigkill_halfway_then_rerun_records_each_case_once(tmp_path):
    path = tmp_path / "predictions.jsonl"
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from radfm.doors.evaluate import EvalCase, run_predictions
        cases = [EvalCase(f"c{{i}}", "ds", "vqa", "q", [], "a", "q") for i in range(40)]
        def slow(prompts, images):
            time.sleep(0.05)
            return ["x"] * len(prompts)
        run_predictions(cases, slow, lambda p: p, {str(path)!r}, model_name="m", batch_size=2, progress=False)
    """))
    worker = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 60
    while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < 10):
        time.sleep(0.02)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    written = sum(_ids(path).values())
    assert 10 <= written < 40, "the worker should have been killed halfway"
    subprocess.run([sys.executable, str(script)], check=True, timeout=120)
    assert _ids(path) == Counter({f"c{i}": 1 for i in range(40)})


def _sample(i, task="vqa", split="test", dataset="ds", images=1):
    return SimpleNamespace(id=f"s{i}", dataset=dataset, task=task, split=split, is_interleaved=False,
                           instruction="<image>" * images + f" question {i}?", response=f"answer {i}",
                           images=[SimpleNamespace(path=f"/data/s{i}_{k}.png") for k in range(images)], extra={})


def test_case_selection_and_prompts():
    samples = [_sample(0), _sample(1, task="diagnosis_inductive"), _sample(2, split="train"), _sample(3, dataset="other")]
    chosen = select_samples(samples, tasks=["vqa", "diagnosis_inductive"], datasets=["ds"])
    assert [s.id for s in chosen] == ["s0", "s1"]
    cases = build_cases(chosen)
    assert cases[0].prompt == "<image> question 0?" and cases[0].closed_set is None
    assert cases[1].closed_set == ["yes", "no"]
    with pytest.raises(ValueError, match="twice"):
        build_cases([_sample(0), _sample(0)])


def test_few_shot_cases_put_exemplar_images_first():
    pool = [_sample(i, split="train", images=2) for i in range(10, 14)]
    (case,) = build_cases([_sample(0)], prompt_format="flamingo", shots=2, exemplar_pool=pool, seed=3)
    assert case.prompt.count("<image>") == len(case.image_paths) == 5
    assert case.image_paths[-1] == "/data/s0_0.png"
    assert case.prompt.endswith("<image>Question: question 0? Answer:")
    assert case.prompt.count("<|endofchunk|>") == 2
    with pytest.raises(ValueError, match="flamingo"):
        build_cases([_sample(0)], shots=1)


# ------------------------------------------------------------ end to end, tiny model ----
@pytest.fixture(scope="module")
def phantom_manifest(tmp_path_factory):
    from radfm.data.phantoms import make_phantoms

    folder = tmp_path_factory.mktemp("phantoms")
    make_phantoms(folder / "data", n=12, seed=0, progress=False)
    return folder / "data" / "test.jsonl"


def test_evaluate_killed_halfway_then_rerun_scores_each_case_once(phantom_manifest, tmp_path, monkeypatch):
    import radfm.doors.evaluate as runner

    output = tmp_path / "eval"
    options = dict(manifest=str(phantom_manifest), model="tiny", output=str(output), batch_size=3, max_new_tokens=3,
                   bertscore=False, n_resamples=50)
    real_predictor = runner.model_predictor
    made: list[int] = []

    def dying_predictor(*args, **kwargs):
        predict = real_predictor(*args, **kwargs)

        def wrapped(prompts, images):
            if sum(made) + len(prompts) > 4:
                raise Interrupted()
            made.append(len(prompts))
            return predict(prompts, images)
        return wrapped

    monkeypatch.setattr(runner, "model_predictor", dying_predictor)
    with pytest.raises(Interrupted):
        runner.evaluate(**options)
    assert sum(_ids(output / "predictions.jsonl").values()) == 3
    monkeypatch.setattr(runner, "model_predictor", real_predictor)
    report = runner.evaluate(**options)

    n_test = len((phantom_manifest).read_text().splitlines())
    ids = _ids(output / "predictions.jsonl")
    assert len(ids) == n_test and set(ids.values()) == {1}
    document = json.loads((output / "metrics.json").read_text())
    (groups,) = document["models"].values()
    assert sum(g["n_cases"] + g["n_failed"] for g in groups) == n_test  # each case scored exactly once
    assert {g["kind"] for g in groups} == {"closed", "open"}
    assert report == str(output / "report.md") and "| phantoms |" in (output / "report.md").read_text()
    assert (output / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bundle_config_runs_with_overrides(phantom_manifest, tmp_path):
    from pathlib import Path

    from monai.bundle import run

    config = Path(__file__).resolve().parents[2] / "bundles" / "radfm" / "configs" / "radbench.json"
    run(config_file=str(config), manifest=str(phantom_manifest), model_dir="tiny", output_dir=str(tmp_path / "b"),
        tasks="diagnosis_inductive", max_new_tokens=2, bertscore=False, n_resamples=20)
    document = json.loads((tmp_path / "b" / "metrics.json").read_text())
    (groups,) = document["models"].values()
    assert [g["task"] for g in groups] == ["diagnosis_inductive"]
    assert {p.name for p in (tmp_path / "b").iterdir()} >= {"predictions.jsonl", "metrics.json", "report.md", "metrics.png"}


def test_second_evaluate_on_the_same_output_is_refused(phantom_manifest, tmp_path):
    """Two runs writing one folder would interleave their predictions; the second fails before any work."""
    import radfm.doors.evaluate as runner
    from radfm.utils.lock import FolderLockedError, lock_folder

    output = tmp_path / "eval"
    first_run = lock_folder(output, "radfm evaluate")  # what a running `radfm evaluate` holds
    with pytest.raises(FolderLockedError, match="radfm evaluate is already writing here"):
        runner.evaluate(manifest=str(phantom_manifest), model="tiny", output=str(output), max_new_tokens=2,
                        bertscore=False, n_resamples=10)
    assert [p.name for p in output.iterdir()] == [".radfm.lock"]  # nothing written
    first_run.release()
