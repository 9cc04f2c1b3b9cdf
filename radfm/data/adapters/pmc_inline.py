"""PMC Open Access articles (JATS XML) -> interleaved samples (PMC-Inline).

Each body paragraph that mentions figures ("Fig. 2", "Figure 3B", "Figs. 2 and 4") becomes
one interleaved sample: an ``<image>`` placeholder is inserted right after the first
mention of each figure, linked to that figure's file. Figures come from ``<fig>`` elements:
the number in ``<label>`` and the file named by ``<graphic xlink:href>`` (with or without
extension), searched next to the XML file and in a folder named like the XML file.
Panel letters map to the whole figure. Paragraphs without a resolvable figure are skipped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from radfm.data.adapters._common import AdapterError
from radfm.data.manifest import ImageRef, Sample
from radfm.model.tokenizer import IMAGE_PLACEHOLDER

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
FIGURE_SUFFIXES = ("", ".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff")
# "Fig. 2", "Figure 3B", "Figs 2 and 3", "Figures 1, 2 and 4a"
_REF_RE = re.compile(
    r"\b(?:Fig(?:ure)?s?\.?)\s*(\d+[A-Za-z]?(?:\s*(?:,|and|&)\s*\d+[A-Za-z]?)*)"
)
_NUM_RE = re.compile(r"\d+")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(elem: ET.Element) -> str:
    return re.sub(r"\s+", " ", "".join(elem.itertext())).strip()


def _figure_files(root: ET.Element, xml_path: Path) -> dict[int, str]:
    """Figure number -> absolute image path, for every figure whose file exists."""
    folders = [xml_path.parent, xml_path.parent / xml_path.stem.split(".")[0]]
    found = {}
    for fig in root.iter():
        if _local(fig.tag) != "fig":
            continue
        label = next((_text(c) for c in fig if _local(c.tag) == "label"), "") or fig.get("id", "")
        number = _NUM_RE.search(label)
        graphic = next((g for g in fig.iter() if _local(g.tag) == "graphic"), None)
        if number is None or graphic is None or not graphic.get(XLINK_HREF):
            continue
        href = graphic.get(XLINK_HREF)
        for folder in folders:
            hit = next((folder / (href + s) for s in FIGURE_SUFFIXES if (folder / (href + s)).is_file()), None)
            if hit is not None:
                found.setdefault(int(number.group()), str(hit.resolve()))
                break
    return found


def link_paragraph(text: str, figures: dict[int, str]) -> tuple[str, list[str]]:
    """Insert ``<image>`` after the first mention of each known figure; returns (text, image paths)."""
    text = text.replace(IMAGE_PLACEHOLDER, "(image)")  # a literal "<image>" is not a placeholder
    pieces, images, used, last = [], [], set(), 0
    for match in _REF_RE.finditer(text):
        numbers = [int(n) for n in _NUM_RE.findall(match.group(1))]
        new = [n for n in numbers if n in figures and n not in used]
        if not new:
            continue
        pieces.append(text[last:match.end()])
        for n in new:
            used.add(n)
            images.append(figures[n])
            pieces.append(" " + IMAGE_PLACEHOLDER)
        last = match.end()
    pieces.append(text[last:])
    return "".join(pieces), images


def convert_article(xml_path: Path) -> list[Sample]:
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise AdapterError(f"{xml_path}: not well-formed XML ({err})") from None
    pmcid = next((_text(e) for e in root.iter() if _local(e.tag) == "article-id" and e.get("pub-id-type") in ("pmc", "pmcid")),
                 xml_path.stem)
    figures = _figure_files(root, xml_path)
    body = next((e for e in root.iter() if _local(e.tag) == "body"), None)
    if body is None:
        raise AdapterError(f"{xml_path}: no <body> element (is this a JATS article?)")
    samples = []
    for k, para in enumerate(e for e in body.iter() if _local(e.tag) == "p"):
        text, images = link_paragraph(_text(para), figures)
        if images:
            pmc = pmcid if pmcid.upper().startswith("PMC") else f"PMC{pmcid}"
            samples.append(Sample(id=f"pmc-inline-{pmc}-p{k}", dataset="pmc-inline",
                                  images=[ImageRef(p) for p in images], text=text))
    return samples


def convert(src: str | Path) -> list[Sample]:
    """One JATS file, or every ``*.xml``/``*.nxml`` file under a folder."""
    src = Path(src)
    files = sorted([*src.rglob("*.xml"), *src.rglob("*.nxml")]) if src.is_dir() else [src]
    if not files:
        raise AdapterError(f"{src}: no .xml/.nxml articles found")
    samples = []
    for path in files:
        samples.extend(convert_article(path))
    return samples
