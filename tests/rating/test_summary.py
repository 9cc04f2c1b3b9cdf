"""Export: CSV, Markdown summary and plot, checked against a hand-computed example."""

from __future__ import annotations

import csv

import pytest

from radfm.rating import store
from radfm.rating.export import export_study
from radfm.rating.study import create_study
from radfm.rating.summary import Rating, bootstrap_mean_ci, score_summaries, win_tie_lose

# Two models A=radfm, B=baseline; cases case-1 and case-3 are vqa, case-2 is report.
#            case-1     case-3     case-2 (report)
#   r1:  A=4 B=2    A=3 B=3    A=1 B=5
#   r2:  A=5 B=2    A=2 B=–    A=0 B=0
SCORES = {
    ("r1", "case-1"): {"radfm": 4, "baseline": 2},
    ("r1", "case-3"): {"radfm": 3, "baseline": 3},
    ("r1", "case-2"): {"radfm": 1, "baseline": 5},
    ("r2", "case-1"): {"radfm": 5, "baseline": 2},
    ("r2", "case-3"): {"radfm": 2},
    ("r2", "case-2"): {"radfm": 0, "baseline": 0},
}
# By hand:
#   A vqa: (4+3+5+2)/4 = 3.5      B vqa: (2+3+2)/3 = 2.333…
#   A report: (1+0)/2 = 0.5       B report: (5+0)/2 = 2.5
#   A all: 15/6 = 2.5             B all: 12/5 = 2.4
#   A vs B (one comparison per rater and case scored for both):
#     vqa: r1c1 win, r1c3 tie, r2c1 win (r2c3 has no B)  -> 2/1/0
#     report: r1c2 lose, r2c2 tie                         -> 0/1/1
#     all: 2/2/1
#   CIs resample cases: A report has a single case -> [0.5, 0.5] (a rating-level bootstrap
#   would give [0, 1]); B vqa: cases {c1: 2,2} and {c3: 3} -> resampled means 2, 7/3, 3
#   -> 95% interval [2.0, 3.0].


@pytest.fixture
def rated_study(tmp_path, prediction_files):
    result = create_study(tmp_path / "study", prediction_files[:2], raters=["r1", "r2"])
    with store.connect(result["study"]) as conn:
        raters = {r["name"]: r["pk"] for r in conn.execute("SELECT pk, name FROM raters")}
        candidates = {
            (r["case_id"], r["model"]): r["pk"]
            for r in conn.execute("SELECT c.case_id, cand.model, cand.pk FROM candidates cand JOIN cases c ON c.pk = cand.case_pk")
        }
        for (rater, case_id), by_model in SCORES.items():
            for model, score in by_model.items():
                store.set_score(conn, raters[rater], candidates[(case_id, model)], score)
    return result["study"]


def _table_rows(markdown: str, header_start: str) -> list[list[str]]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_summary_matches_hand_computation(rated_study, tmp_path):
    written = export_study(rated_study, tmp_path / "out", n_resamples=1000, seed=0)
    markdown = written["markdown"].read_text()
    assert "11 ratings by 2 rater(s) of 2 model(s)" in markdown  # 6 for A + 5 for B
    means = {row[0]: row[1:] for row in _table_rows(markdown, "| model | report")}
    # columns: report, vqa, all
    assert means["radfm"][0] == "0.50 [0.50, 0.50] (n=2/1)"
    assert means["radfm"][1].startswith("3.50 [") and means["radfm"][1].endswith("(n=4/2)")
    assert means["radfm"][2].startswith("2.50 [") and means["radfm"][2].endswith("(n=6/3)")
    assert means["baseline"][0].startswith("2.50 [") and means["baseline"][0].endswith("(n=2/1)")
    assert means["baseline"][1] == "2.33 [2.00, 3.00] (n=3/2)"
    assert means["baseline"][2].startswith("2.40 [") and means["baseline"][2].endswith("(n=5/3)")

    pairs = {(r[0], r[1], r[2]): tuple(int(v) for v in r[3:]) for r in _table_rows(markdown, "| model | vs |")}
    assert pairs == {
        ("radfm", "baseline", "report"): (0, 1, 1),
        ("radfm", "baseline", "vqa"): (2, 1, 0),
        ("radfm", "baseline", "all"): (2, 2, 1),
    }

    with written["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 11
    assert {(r["rater"], r["case_id"], r["model"], r["score"]) for r in rows} == {
        (rater, case_id, model, str(score)) for (rater, case_id), s in SCORES.items() for model, score in s.items()
    }
    png = written["plot"].read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_reference_model_changes_the_point_of_view(rated_study, tmp_path):
    markdown = export_study(rated_study, tmp_path / "out", reference="baseline")["markdown"].read_text()
    pairs = {(r[0], r[1], r[2]): tuple(int(v) for v in r[3:]) for r in _table_rows(markdown, "| model | vs |")}
    assert pairs[("baseline", "radfm", "all")] == (1, 2, 2)
    with pytest.raises(ValueError, match="'gpt' is not in this study"):
        export_study(rated_study, tmp_path / "out", reference="gpt")


def test_bootstrap_is_seeded_and_brackets_the_mean():
    cases = [[1], [4], [2, 3], [5], [0, 1]]
    first = bootstrap_mean_ci(cases, seed=7)
    assert first == bootstrap_mean_ci(cases, seed=7)
    mean, low, high = first
    assert mean == pytest.approx(16 / 7) and low < mean < high
    assert bootstrap_mean_ci([[3], [3], [3]]) == (3.0, 3.0, 3.0)
    # two single-rating cases: resampled means are a, (a+b)/2, b -> interval [a, b]
    assert bootstrap_mean_ci([[1], [4]]) == (2.5, 1.0, 4.0)


def test_win_tie_lose_counts_each_rater_case_once():
    ratings = [Rating(rater, case, "d", "vqa", model, score, 0.0) for rater, case, model, score in [
        ("r1", "c1", "a", 3), ("r1", "c1", "b", 1), ("r1", "c1", "c", 3),
        ("r2", "c1", "a", 0), ("r2", "c1", "b", 1),
    ]]
    counts = {(p.model, p.other, p.task): (p.win, p.tie, p.lose) for p in win_tie_lose(ratings, ["a", "b", "c"])}
    assert counts[("a", "b", "all")] == (1, 0, 1)
    assert counts[("a", "c", "all")] == (0, 1, 0)
    assert counts[("b", "c", "all")] == (0, 0, 1)
    summaries = {(s.model, s.task): s for s in score_summaries(ratings)}
    assert summaries[("a", "vqa")].mean == 1.5 and summaries[("a", "vqa")].n_cases == 1


def test_empty_study_exports_csv_and_a_note(study, tmp_path):
    folder, _ = study
    written = export_study(folder, tmp_path / "out")
    assert written["csv"].read_text().startswith("rater,case_id")
    assert "No ratings yet" in written["markdown"].read_text()
