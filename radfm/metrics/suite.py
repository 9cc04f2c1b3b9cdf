"""All of the paper's metrics for a list of prediction records, per (dataset, task), with 95% CIs.

Closed groups (yes/no or label-list answers) get ``ACC``, ``F1`` (binary F1 of "yes" for
yes/no, macro F1 otherwise) and ``Macro_F1``. Open groups get the paper's ``BLEU`` (BLEU-1),
``ROUGE`` (ROUGE-1), ``UMLS_Precision``, ``UMLS_Recall``, ``BERT-Sim`` and ``AVG`` (mean of the
first four, Fig. 3a), plus sentence ``BLEU-2..4``, corpus ``Corpus-BLEU-1..4`` and ``ROUGE-L``.
All values lie in [0, 1]; reports print them as percentages like the paper.

Failed cases (``error`` set) are not scored; they are counted in ``n_failed``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from radfm.metrics import closed as closed_metrics
from radfm.metrics import text as text_metrics
from radfm.metrics.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Bootstrap,
    Estimate,
    mean_stats,
    reduce_mean,
)
from radfm.metrics.predictions import PredictionRecord
from radfm.metrics.terms import TermExtractor, term_precision_recall

# Tasks whose answers are yes/no by construction (spec §3).
CLOSED_TASKS = frozenset({"modality_inductive", "diagnosis_inductive"})
# The four word-overlap metrics averaged into Fig. 3a's AVG.
AVG_PARTS = ("BLEU", "ROUGE", "UMLS_Precision", "UMLS_Recall")
# Rows shown in the report tables, in order (metrics.json holds every metric).
CLOSED_HEADLINE = ("ACC", "F1")
OPEN_HEADLINE = ("BLEU", "ROUGE", "UMLS_Precision", "UMLS_Recall", "BERT-Sim", "AVG")
REPORT_TASK_EXTRA = ("Corpus-BLEU-1", "Corpus-BLEU-2", "Corpus-BLEU-3", "Corpus-BLEU-4", "ROUGE-L")


@dataclass
class ScoringOptions:
    """How to score: bootstrap plan, the BERTScore model (None = skip) and the term extractor (None = skip)."""

    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    confidence: float = DEFAULT_CONFIDENCE
    bertscore: Callable[[Sequence[str], Sequence[str]], np.ndarray] | None = None
    term_extractor: TermExtractor | None = None
    rouge_stemmer: bool = False
    closed_datasets: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)

    def settings(self) -> dict[str, object]:
        """What was used, for metrics.json and the report."""
        return {
            "bootstrap": {"resamples": self.n_resamples, "seed": self.seed, "confidence": self.confidence,
                          "interval": "percentile"},
            "bleu": text_metrics.bleu_settings(),
            "rouge": text_metrics.rouge_settings(self.rouge_stemmer),
            "bertscore": getattr(self.bertscore, "name", None) if self.bertscore else "skipped",
            "medical_terms": self.term_extractor.name if self.term_extractor else "skipped",
            "closed_match": "difflib.SequenceMatcher ratio, most similar choice wins",
            "paper_defaults": "BLEU = BLEU-1 and ROUGE = ROUGE-1 (F-measure), averaged over cases",
            "notes": list(self.notes),
        }


@dataclass
class GroupResult:
    """Metrics of one (dataset, task) group of one model."""

    dataset: str
    task: str
    kind: str  # "closed" or "open"
    n_cases: int
    n_failed: int
    metrics: dict[str, Estimate]
    labels: list[str] | None = None

    def as_dict(self) -> dict[str, object]:
        return {"dataset": self.dataset, "task": self.task, "kind": self.kind, "n_cases": self.n_cases,
                "n_failed": self.n_failed, "labels": self.labels,
                "metrics": {name: estimate.as_dict() for name, estimate in self.metrics.items()}}


def closed_choices(records: Sequence[PredictionRecord], closed_datasets: Iterable[str] = ()) -> list[str] | None:
    """The group's closed label set, or None for an open-answer group.

    Closed when cases carry ``closed_set``, the task is an inductive (yes/no) task, the dataset
    is listed in ``closed_datasets``, or every reference is "yes"/"no".
    """
    labels: list[str] = []
    for record in records:
        for choice in record.closed_set or []:
            if choice not in labels:
                labels.append(choice)
    if labels:
        return labels
    references = {closed_metrics.normalise_answer(r.reference) for r in records}
    yes_no_only = bool(records) and references <= set(closed_metrics.YES_NO)
    if any(r.task in CLOSED_TASKS for r in records) or yes_no_only:
        return list(closed_metrics.YES_NO)
    if records and records[0].dataset in set(closed_datasets):
        # Label list = the distinct references, in order of appearance.
        return list(dict.fromkeys(closed_metrics.normalise_answer(r.reference) for r in records))
    return None


def score_closed(records: Sequence[PredictionRecord], labels: list[str], plan: Bootstrap) -> dict[str, Estimate]:
    """ACC, F1, Macro_F1 of SequenceMatcher-matched outputs."""
    y_true: list[str] = []
    y_pred: list[str] = []
    for record in records:
        choices = record.closed_set or labels
        y_true.append(closed_metrics.match_reference(record.reference, choices, where=f"case {record.id}"))
        y_pred.append(closed_metrics.match_closed_set(record.prediction, choices))
    all_labels = list(dict.fromkeys(labels + y_true + y_pred))
    n_labels = len(all_labels)
    stats = closed_metrics.confusion_stats(y_true, y_pred, all_labels)
    results = {
        "ACC": plan.estimate(stats, lambda s: closed_metrics.reduce_accuracy(s, n_labels)),
        "Macro_F1": plan.estimate(stats, lambda s: closed_metrics.reduce_macro_f1(s, n_labels)),
    }
    if set(all_labels) == set(closed_metrics.YES_NO):
        positive = all_labels.index("yes")
        results["F1"] = plan.estimate(stats, lambda s: closed_metrics.reduce_binary_f1(s, n_labels, positive))
    else:
        results["F1"] = results["Macro_F1"]
    return results


def open_per_case(records: Sequence[PredictionRecord], options: ScoringOptions) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-case word-overlap metrics (BLEU-n, ROUGE, UMLS P/R; not BERT-Sim) and the BLEU statistics."""
    predictions = [r.prediction for r in records]
    references = [r.reference for r in records]
    per_case: dict[str, np.ndarray] = {}
    bleu_stats = text_metrics.bleu_statistics(predictions, references)
    for order in range(1, text_metrics.MAX_ORDER + 1):
        per_case[f"BLEU-{order}"] = text_metrics.sentence_bleu_from_stats(bleu_stats, order)
    per_case["BLEU"] = per_case["BLEU-1"]
    rouge = text_metrics.rouge_scores(predictions, references, use_stemmer=options.rouge_stemmer)
    per_case["ROUGE"], per_case["ROUGE-L"] = rouge["rouge1"], rouge["rougeL"]
    if options.term_extractor is not None:
        per_case["UMLS_Precision"], per_case["UMLS_Recall"] = term_precision_recall(
            predictions, references, options.term_extractor)
    return per_case, bleu_stats


def summarize_open(per_case: dict[str, np.ndarray], bleu_stats: np.ndarray, n_cases: int,
                   plan: Bootstrap) -> dict[str, Estimate]:
    """Means with CIs of per-case metrics, corpus BLEU-1..4 and AVG."""
    results: dict[str, Estimate] = {}
    resampled: dict[str, np.ndarray] = {}
    for name, values in per_case.items():
        point, draws = plan.point_and_resampled(mean_stats(values), reduce_mean)
        resampled[name] = draws
        results[name] = plan.estimate_from(point, draws, int(np.isfinite(values).sum()))
    for order in range(1, text_metrics.MAX_ORDER + 1):
        results[f"Corpus-BLEU-{order}"] = plan.estimate(
            bleu_stats, lambda s, n=order: text_metrics.corpus_bleu_from_sums(s, n))
    if all(part in results for part in AVG_PARTS):
        point = float(np.mean([results[part].value for part in AVG_PARTS]))
        draws = np.mean(np.stack([resampled[part] for part in AVG_PARTS]), axis=0)  # NaN if a part is undefined
        results["AVG"] = plan.estimate_from(point, draws, n_cases)
    return results


def score_open(records: Sequence[PredictionRecord], plan: Bootstrap, options: ScoringOptions,
               bert_sim: np.ndarray | None = None) -> dict[str, Estimate]:
    """BLEU/ROUGE/UMLS/BERTScore per case, means with CIs, corpus BLEU-1..4 and AVG.

    ``bert_sim``: BERT-Sim per case if already computed (else ``options.bertscore`` is called).
    """
    per_case, bleu_stats = open_per_case(records, options)
    if bert_sim is not None:
        per_case["BERT-Sim"] = np.asarray(bert_sim, dtype=np.float64)
    elif options.bertscore is not None:
        per_case["BERT-Sim"] = options.bertscore([r.prediction for r in records], [r.reference for r in records])
    return summarize_open(per_case, bleu_stats, len(records), plan)


def group_records(records: Sequence[PredictionRecord]) -> dict[tuple[str, str], list[PredictionRecord]]:
    """Records by (dataset, task), in order of first appearance."""
    groups: dict[tuple[str, str], list[PredictionRecord]] = {}
    for record in records:
        groups.setdefault((record.dataset, record.task), []).append(record)
    return groups


def _partition(group: list[PredictionRecord], closed_datasets: frozenset[str]) -> list[tuple[list[PredictionRecord], list[str] | None]]:
    """Split a (dataset, task) group into its closed-set and open-answer parts (either may be absent).

    A VQA set can mix closed questions (cases with ``closed_set``) with open ones; each part is
    scored with its own metrics.
    """
    with_set = [r for r in group if r.closed_set]
    without = [r for r in group if not r.closed_set]
    if with_set and without:
        return [(with_set, closed_choices(with_set)), (without, closed_choices(without, closed_datasets))]
    return [(group, closed_choices(group, closed_datasets))]


def score_records(records: Sequence[PredictionRecord], options: ScoringOptions) -> list[GroupResult]:
    """One :class:`GroupResult` per (dataset, task, closed/open) group.

    BERT-Sim is computed once for every open-answer case of every group (so each distinct
    sentence is embedded once overall) in a background thread, while the word-overlap metrics
    and the closed groups are scored (torch releases the GIL during the forward).
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from radfm.utils.progress import tqdm_options

    groups = group_records(records)
    parts: list[tuple[str, str, list[PredictionRecord], list[str] | None, list[PredictionRecord]]] = []
    for (dataset, task), group in groups.items():
        for part, labels in _partition(group, options.closed_datasets):
            parts.append((dataset, task, part, labels, [r for r in part if r.error is None]))
    open_groups = [([r.prediction for r in scored], [r.reference for r in scored])
                   for _, _, _, labels, scored in parts if labels is None and scored]

    with ThreadPoolExecutor(max_workers=1) as executor:
        bert_future = None
        if options.bertscore is not None and open_groups:
            bert_future = executor.submit(_bert_sim_groups, options.bertscore, open_groups)
        pending: list[tuple[int, dict[str, np.ndarray], np.ndarray, Bootstrap]] = []
        results: list[GroupResult] = []
        for dataset, task, part, labels, scored in tqdm(parts, desc="scoring groups", disable=len(parts) < 2, **tqdm_options()):
            plan = Bootstrap(len(scored), n_resamples=options.n_resamples, seed=options.seed,
                             confidence=options.confidence)
            if labels is not None:
                metrics = score_closed(scored, labels, plan) if scored else {}
                results.append(GroupResult(dataset, task, "closed", len(scored), len(part) - len(scored), metrics, labels))
            else:
                if scored:
                    per_case, bleu_stats = open_per_case(scored, options)
                    pending.append((len(results), per_case, bleu_stats, plan))
                results.append(GroupResult(dataset, task, "open", len(scored), len(part) - len(scored), {}, None))
        bert_sim = bert_future.result() if bert_future is not None else None

    for number, (index, per_case, bleu_stats, plan) in enumerate(pending):
        if bert_sim is not None:
            per_case["BERT-Sim"] = np.asarray(bert_sim[number], dtype=np.float64)
        results[index].metrics = summarize_open(per_case, bleu_stats, results[index].n_cases, plan)
    return results


def _bert_sim_groups(bertscore: Callable[[Sequence[str], Sequence[str]], np.ndarray],
                     groups: list[tuple[list[str], list[str]]]) -> list[np.ndarray]:
    """BERT-Sim per case of each group: in one pass when the scorer can (``score_groups``), else group by group."""
    if hasattr(bertscore, "score_groups"):
        return bertscore.score_groups(groups)
    return [bertscore(predictions, references) for predictions, references in groups]
