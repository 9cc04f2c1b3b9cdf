"""Medical-term precision and recall (the paper's UMLS_Precision / UMLS_Recall).

Per case: terms T_pred and T_ref are extracted from prediction and reference;
precision = |T_pred ∩ T_ref| / |T_pred|, recall = |T_pred ∩ T_ref| / |T_ref|. A case whose
prediction (reference) has no terms has no defined precision (recall) and is left out of that
mean, as a ratio with a zero denominator is undefined; the number of cases used is reported.

Term extraction is pluggable: anything with a ``name`` and ``extract_terms(text) -> set[str]``.
:func:`default_term_extractor` picks, in order: scispaCy's UMLS linker (if installed and its
knowledge base is available offline; terms are UMLS CUIs), else the data package's offline
vocabulary (``radfm/data/vocab/*.txt``: ICD-10-CM phrases + a radiology list, matched by
:class:`radfm.data.medical_terms.MedicalTermMatcher`), else ``None`` (metrics skipped, reason
stated).
Every output names the extractor used.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class TermExtractor(Protocol):
    """Finds medical terms in free text; ``name`` says which vocabulary/linker it is."""

    name: str

    def extract_terms(self, text: str) -> set[str]: ...


class VocabularyTermExtractor:
    """Terms = phrases of an offline vocabulary, found by the data package's matcher
    (:class:`radfm.data.medical_terms.MedicalTermMatcher`: whole words, case-insensitive,
    longest phrase first), so evaluation and the training loss weights agree on what a
    medical term is."""

    def __init__(self, matcher, name: str) -> None:
        if len(matcher) == 0:
            raise ValueError(f"term vocabulary {name!r} is empty")
        self._matcher = matcher
        self.name = name

    def __len__(self) -> int:
        return len(self._matcher)

    def extract_terms(self, text: str) -> set[str]:
        return set(self._matcher.terms(text))

    @classmethod
    def from_terms(cls, terms: Iterable[str], name: str = "vocabulary") -> VocabularyTermExtractor:
        from radfm.data.medical_terms import MedicalTermMatcher

        return cls(MedicalTermMatcher(terms), name)

    @classmethod
    def from_files(cls, paths: Sequence[Path], name: str | None = None) -> VocabularyTermExtractor:
        """One term per line; blank lines and lines starting with ``#`` are skipped."""
        from radfm.data.medical_terms import MedicalTermMatcher

        label = name or "vocabulary:" + ",".join(Path(p).name for p in paths)
        return cls(MedicalTermMatcher.from_files(paths), label)

    @classmethod
    def shipped(cls) -> VocabularyTermExtractor:
        """The vocabulary shipped in ``radfm/data/vocab/`` (ICD-10-CM phrases + a radiology list)."""
        from radfm.data.medical_terms import VOCAB_DIR, default_matcher

        files = ",".join(p.name for p in sorted(VOCAB_DIR.glob("*.txt")))
        return cls(default_matcher(), f"radfm.data offline vocabulary ({files}; {len(default_matcher())} phrases)")


class ScispacyUmlsExtractor:
    """scispaCy NER + UMLS entity linker; terms are the top candidate's CUI of each entity."""

    def __init__(self, model: str = "en_core_sci_sm", threshold: float = 0.85) -> None:
        import spacy  # noqa: F401  (optional dependency)
        from scispacy.linking import EntityLinker  # noqa: F401  registers the pipe

        self._nlp = spacy.load(model)
        self._nlp.add_pipe("scispacy_linker", config={"resolve_abbreviations": False, "linker_name": "umls",
                                                      "threshold": threshold})
        self.name = f"scispacy:{model}+umls"

    def extract_terms(self, text: str) -> set[str]:
        document = self._nlp(text)
        return {entity._.kb_ents[0][0] for entity in document.ents if entity._.kb_ents}


def default_term_extractor(prefer_scispacy: bool = True) -> tuple[TermExtractor | None, str]:
    """(extractor or None, a sentence saying which one was chosen or why none was)."""
    notes: list[str] = []
    if prefer_scispacy:
        try:
            extractor = ScispacyUmlsExtractor()
            return extractor, f"medical terms: {extractor.name}"
        except Exception as error:  # not installed, or its UMLS knowledge base is not available offline
            notes.append(f"scispacy UMLS linker unavailable ({type(error).__name__}), using the offline vocabulary")
    try:
        extractor = VocabularyTermExtractor.shipped()
    except (ImportError, ValueError) as error:
        notes.append(f"no offline vocabulary ({error})")
        return None, "UMLS_Precision/UMLS_Recall skipped: " + "; ".join(notes)
    return extractor, "; ".join([f"medical terms: {extractor.name}"] + notes)


def term_precision_recall(predictions: Sequence[str], references: Sequence[str],
                          extractor: TermExtractor) -> tuple[np.ndarray, np.ndarray]:
    """Per-case term precision and recall [N] each; NaN where the denominator is zero."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
    precision = np.full(len(predictions), np.nan)
    recall = np.full(len(predictions), np.nan)
    for row, (prediction, reference) in enumerate(zip(predictions, references)):
        predicted_terms = extractor.extract_terms(prediction)
        reference_terms = extractor.extract_terms(reference)
        shared = len(predicted_terms & reference_terms)
        if predicted_terms:
            precision[row] = shared / len(predicted_terms)
        if reference_terms:
            recall[row] = shared / len(reference_terms)
    return precision, recall
