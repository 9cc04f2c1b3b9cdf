"""Medical-term spans in text, for the loss weights of paper eq. 3–4.

The paper marks medical words with a UMLS entity linker. UMLS needs a licence, so the
toolkit ships an offline vocabulary instead: ICD-10-CM phrases (public domain, built by
``scripts/build_medical_vocab.py``) plus a hand-curated radiology list, both under
``radfm/data/vocab/``. Matching is case-insensitive, on whole words, longest phrase first.
If scispacy with its UMLS linker is installed, ``UmlsTermMatcher`` can be used instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from radfm.utils.io import read_text

VOCAB_DIR = Path(__file__).resolve().parent / "vocab"
# words as the vocabulary builder splits them: letters/digits with inner hyphens
_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")


def _normalise(phrase: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _WORD_RE.findall(phrase))


class MedicalTermMatcher:
    """Finds vocabulary phrases in text; ``spans(text)`` gives ``(start, end)`` character spans."""

    def __init__(self, terms: Iterable[str]):
        self.phrases: set[tuple[str, ...]] = set()
        for term in terms:
            words = _normalise(term)
            if words:
                self.phrases.add(words)
        self.max_words = max((len(p) for p in self.phrases), default=0)

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> MedicalTermMatcher:
        """Read one phrase a line; ``#`` starts a comment line."""
        terms = []
        for path in paths:
            for line in read_text(path).splitlines():  # not UTF-8: a ValueError naming file and line
                line = line.strip()
                if line and not line.startswith("#"):
                    terms.append(line)
        return cls(terms)

    def __contains__(self, phrase: str) -> bool:
        return _normalise(phrase) in self.phrases

    def __len__(self) -> int:
        return len(self.phrases)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Non-overlapping ``(start, end)`` spans of vocabulary phrases, longest match first."""
        matches = list(_WORD_RE.finditer(text))
        words = [m.group().lower() for m in matches]
        out = []
        i, n = 0, len(words)
        while i < n:
            for length in range(min(self.max_words, n - i), 0, -1):
                if tuple(words[i:i + length]) in self.phrases:
                    out.append((matches[i].start(), matches[i + length - 1].end()))
                    i += length
                    break
            else:
                i += 1
        return out

    def terms(self, text: str) -> list[str]:
        """The matched phrases, lower-cased, in order of appearance."""
        return [text[s:e].lower() for s, e in self.spans(text)]


@lru_cache(maxsize=1)
def default_matcher() -> MedicalTermMatcher:
    """The shipped vocabulary: every ``vocab/*.txt`` file."""
    return MedicalTermMatcher.from_files(sorted(VOCAB_DIR.glob("*.txt")))


class UmlsTermMatcher:
    """scispacy's UMLS entity linker as a matcher (optional: ``pip install scispacy`` + model).

    Entities linked to a UMLS concept with score >= ``threshold`` count as medical terms.
    """

    def __init__(self, model: str = "en_core_sci_sm", threshold: float = 0.85):
        try:
            import spacy
            from scispacy.linking import EntityLinker  # noqa: F401  (registers the pipe)
        except ImportError as err:
            raise ImportError("UmlsTermMatcher needs scispacy: pip install scispacy and a scispacy model") from err
        self.nlp = spacy.load(model)
        self.nlp.add_pipe("scispacy_linker", config={"resolve_abbreviations": True, "linker_name": "umls"})
        self.threshold = threshold

    def spans(self, text: str) -> list[tuple[int, int]]:
        doc = self.nlp(text)
        return [(ent.start_char, ent.end_char) for ent in doc.ents
                if any(score >= self.threshold for _, score in ent._.kb_ents)]

    def terms(self, text: str) -> list[str]:
        return [text[s:e].lower() for s, e in self.spans(text)]
