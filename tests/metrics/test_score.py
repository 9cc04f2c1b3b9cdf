import csv
import json

import pytest

from radfm.metrics.predictions import read_predictions
from radfm.metrics.score import score


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _case(i, dataset, task, reference, prediction, error=None):
    return {"id": str(i), "dataset": dataset, "task": task, "images": [], "instruction": "<image> q?",
            "reference": reference, "prediction": prediction, "model": "ours", "error": error, "closed_set": None}


@pytest.fixture()
def prediction_files(tmp_path):
    ours = tmp_path / "ours.jsonl"
    _write_jsonl(ours, [
        _case(0, "RadBench", "vqa", "Left pleural effusion.", "left pleural effusion"),
        _case(1, "RadBench", "vqa", "Pneumothorax on the right.", "right pneumothorax"),
        _case(2, "RadBench", "vqa", "Liver mass.", "", error="ScanReadError: unreadable scan"),
        _case(3, "VinDr", "diagnosis_inductive", "yes", "Yes, it does."),
        _case(4, "VinDr", "diagnosis_inductive", "no", "yes"),
        _case(5, "VinDr", "diagnosis_inductive", "no", "No."),
    ])
    baseline = tmp_path / "medflamingo_fewshot.csv"
    with baseline.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Question", "Ground Truth", "Pred", "belong_to"])
        writer.writerow(["q", "Left pleural effusion.", "a normal chest", "RadBench"])
        writer.writerow(["q", "Pneumothorax on the right.", "pneumothorax", "RadBench"])
    return ours, baseline


def test_two_models_side_by_side(prediction_files, tmp_path):
    ours, baseline = prediction_files
    report = score(str(ours), str(baseline), output=str(tmp_path / "out"), n_resamples=100, bertscore=False)
    text = (tmp_path / "out" / "report.md").read_text()
    assert report.endswith("report.md")
    assert "| Dataset | Task | Metric | ours | medflamingo_fewshot |" in text
    assert "| RadBench | vqa | n | 2 (1 failed) |" in text  # failed case counted, not scored
    assert (tmp_path / "out" / "metrics.png").stat().st_size > 1000
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    groups = {(g["dataset"], g["task"]): g for g in document["models"]["ours"]}
    closed = groups[("VinDr", "diagnosis_inductive")]
    assert closed["kind"] == "closed" and closed["metrics"]["ACC"]["value"] == pytest.approx(2 / 3)
    assert closed["metrics"]["F1"]["value"] == pytest.approx(2 / 3)  # yes: tp 1, fp 1, fn 0
    vqa = groups[("RadBench", "vqa")]["metrics"]
    assert vqa["ROUGE"]["value"] == pytest.approx((1.0 + 2 / 3) / 2)  # "right pneumothorax" vs 4 words: P 1, R .5, F 2/3
    assert {"UMLS_Precision", "UMLS_Recall", "AVG", "Corpus-BLEU-4"} <= set(vqa)
    assert "BERT-Sim" not in vqa and "BERT-Sim skipped" in text
    assert document["settings"]["medical_terms"].startswith("radfm.data offline vocabulary")
    baseline_vqa = document["models"]["medflamingo_fewshot"][0]
    assert baseline_vqa["task"] == "unknown" and baseline_vqa["n_cases"] == 2


def test_cli_dispatch_and_bertscore(prediction_files, tmp_path):
    from radfm.cli import main

    ours, _ = prediction_files
    main(["score", str(ours), "--output", str(tmp_path / "cli"), "--n_resamples", "50", "--names", "RadFM"])
    document = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    vqa = document["models"]["RadFM"][0]["metrics"]
    assert 0.5 < vqa["BERT-Sim"]["value"] <= 1.0


def test_bad_inputs_are_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "reference": "a"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing field\(s\) prediction"):
        read_predictions(bad)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("Question,Answer\nq,a\n")
    with pytest.raises(ValueError, match="missing column"):
        read_predictions(bad_csv)
    with pytest.raises(ValueError, match="unknown predictions format"):
        (tmp_path / "x.txt").write_text("")
        read_predictions(tmp_path / "x.txt")
