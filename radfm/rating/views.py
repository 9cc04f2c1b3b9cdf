"""What one rater sees: blinded candidate order, their own scores, progress.

Everything here is scoped to one rater: every query that touches ratings filters on the
rater's key, so no function can return another rater's scores.
"""

from __future__ import annotations

import random
import re
import sqlite3
from dataclasses import dataclass, field

from radfm.rating.store import blinding_secret, keyed_seed

# "<image>" is the manifest's placeholder (radfm.model.tokenizer.IMAGE_PLACEHOLDER); "<image-2>"
# is the paper's numbered style. Not imported to keep the web app free of the model stack.
PLACEHOLDER_PATTERN = re.compile(r"<image(?:-(\d+))?>")


def readable_prompt(instruction: str) -> str:
    """The instruction with image placeholders shown as "[Scan 1]", "[Scan 2]", …"""
    counter = iter(range(1, 10_000))

    def label(match: re.Match) -> str:
        return f"[Scan {match.group(1) or next(counter)}]"

    return PLACEHOLDER_PATTERN.sub(label, instruction)


@dataclass
class CandidateView:
    """One blinded answer: its slot letter on this rater's page and this rater's score."""

    slot: int
    label: str
    answer: str
    score: int | None
    candidate_pk: int = field(repr=False)  # never sent to the browser


@dataclass
class CaseView:
    number: int  # 1-based position in the study, used in URLs
    case_pk: int
    case_id: str
    dataset: str
    task: str
    instruction: str
    reference: str
    images: list[dict]  # {"index", "available", "error"}
    candidates: list[CandidateView]
    skipped: bool


def blinded_order(candidate_pks: list[int], rater_pk: int, case_id: str, secret: bytes) -> list[int]:
    """Candidates in a random order that is fixed per (rater, case) and differs between raters.

    Seeded by HMAC(study secret, rater, case): without the secret (server side, in
    ``study.sqlite``) the order cannot be recomputed from the rater number and case id.
    """
    if len(secret) < 16:
        raise ValueError("blinding secret: expected at least 16 random bytes")
    seed = keyed_seed(secret, rater_pk, case_id)
    order = sorted(candidate_pks)
    random.Random(seed).shuffle(order)
    return order


def slot_label(slot: int) -> str:
    """'Answer A', 'Answer B', ... (AA after Z, for very many models)."""
    letters = ""
    slot += 1
    while slot:
        slot, rest = divmod(slot - 1, 26)
        letters = chr(65 + rest) + letters
    return f"Answer {letters}"


def load_case(conn: sqlite3.Connection, rater_pk: int, number: int) -> CaseView | None:
    """Case ``number`` (1-based) as rater ``rater_pk`` sees it, or None when out of range."""
    row = conn.execute("SELECT * FROM cases WHERE position=?", (number - 1,)).fetchone()
    if row is None:
        return None
    candidates = {
        r["pk"]: r for r in conn.execute("SELECT pk, answer FROM candidates WHERE case_pk=?", (row["pk"],))
    }
    scores = {
        r["candidate_pk"]: r["score"]
        for r in conn.execute(
            "SELECT ra.candidate_pk, ra.score FROM ratings ra JOIN candidates c ON c.pk = ra.candidate_pk "
            "WHERE ra.rater_pk=? AND c.case_pk=?",
            (rater_pk, row["pk"]),
        )
    }
    order = blinded_order(list(candidates), rater_pk, row["case_id"], blinding_secret(conn))
    views = [
        CandidateView(slot, slot_label(slot), candidates[pk]["answer"], scores.get(pk), pk)
        for slot, pk in enumerate(order)
    ]
    images = [
        {"index": r["image_index"], "available": r["rel_path"] is not None, "error": r["error"]}
        for r in conn.execute(
            "SELECT image_index, rel_path, error FROM case_images WHERE case_pk=? ORDER BY image_index", (row["pk"],)
        )
    ]
    skipped = conn.execute("SELECT 1 FROM skips WHERE rater_pk=? AND case_pk=?", (rater_pk, row["pk"])).fetchone()
    return CaseView(
        number=number,
        case_pk=row["pk"],
        case_id=row["case_id"],
        dataset=row["dataset"],
        task=row["task"],
        instruction=readable_prompt(row["instruction"]),
        reference=row["reference"],
        images=images,
        candidates=views,
        skipped=skipped is not None,
    )


def case_statuses(conn: sqlite3.Connection, rater_pk: int) -> list[dict]:
    """Per case, this rater's status: 'done' (all answers scored), 'partial', 'skipped' or 'todo'."""
    rows = conn.execute(
        """
        SELECT c.position, c.task, COUNT(DISTINCT cand.pk) AS n_candidates, COUNT(DISTINCT ra.candidate_pk) AS n_scored,
               EXISTS(SELECT 1 FROM skips s WHERE s.rater_pk=:r AND s.case_pk=c.pk) AS skipped
        FROM cases c
        JOIN candidates cand ON cand.case_pk = c.pk
        LEFT JOIN ratings ra ON ra.candidate_pk = cand.pk AND ra.rater_pk = :r
        GROUP BY c.pk ORDER BY c.position
        """,
        {"r": rater_pk},
    ).fetchall()
    statuses = []
    for r in rows:
        if r["n_scored"] and r["n_scored"] == r["n_candidates"]:
            status = "done"
        elif r["skipped"]:
            status = "skipped"
        elif r["n_scored"]:
            status = "partial"
        else:
            status = "todo"
        statuses.append({"number": r["position"] + 1, "task": r["task"], "status": status})
    return statuses


def progress(statuses: list[dict]) -> dict:
    """Counts for the progress bar."""
    total = len(statuses)
    done = sum(s["status"] == "done" for s in statuses)
    skipped = sum(s["status"] == "skipped" for s in statuses)
    return {"total": total, "done": done, "skipped": skipped, "percent": round(100 * (done + skipped) / max(total, 1))}


def next_open_case(statuses: list[dict], after: int = 0) -> int | None:
    """The first case after ``after`` (wrapping around) that is neither done nor skipped."""
    open_numbers = [s["number"] for s in statuses if s["status"] in ("todo", "partial")]
    later = [n for n in open_numbers if n > after]
    return (later or open_numbers or [None])[0]
