"""``radfm rate export``: ratings CSV, Markdown summary and a Fig. 3b–style PNG.

Files are written to temporary names and renamed, so an interrupted export never leaves a
half-written report next to a complete one.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

from radfm.rating import store
from radfm.rating.summary import (
    ALL_TASKS,
    PairCounts,
    Rating,
    ScoreSummary,
    flip,
    load_ratings,
    score_summaries,
    win_tie_lose,
)
from radfm.utils.io import atomic_write_bytes

CSV_FIELDS = ["rater", "case_id", "dataset", "task", "model", "score", "updated_at"]


def ratings_csv(ratings: list[Rating]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in ratings:
        row = {name: getattr(r, name) for name in CSV_FIELDS}
        row["updated_at"] = datetime.fromtimestamp(r.updated_at, tz=UTC).isoformat(timespec="seconds")
        writer.writerow(row)
    return buffer.getvalue()


def summary_markdown(
    summaries: list[ScoreSummary],
    pairs: list[PairCounts],
    *,
    models: list[str],
    reference: str,
    n_ratings: int,
    n_raters: int,
    n_resamples: int,
    seed: int,
) -> str:
    """The human-readable report."""
    tasks = sorted({s.task for s in summaries if s.task != ALL_TASKS}) + [ALL_TASKS]
    by_key = {(s.model, s.task): s for s in summaries}
    lines = [
        "# Rating study summary",
        "",
        f"{n_ratings} ratings by {n_raters} rater(s) of {len(models)} model(s). "
        "Scores use the paper's 0–5 rubric (0 garbled … 5 completely correct).",
        "",
        "## Mean score per model and task",
        "",
        f"Mean ± 95% CI (percentile bootstrap over cases, {n_resamples} resamples, seed {seed}); "
        "n = ratings / cases.",
        "",
        "| model | " + " | ".join(tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    for model in models:
        cells = []
        for task in tasks:
            s = by_key.get((model, task))
            cells.append(
                "–" if s is None else f"{s.mean:.2f} [{s.ci_low:.2f}, {s.ci_high:.2f}] (n={s.n_ratings}/{s.n_cases})"
            )
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Win / tie / lose",
        "",
        "One comparison per rater and case where the rater scored both models; "
        "win = higher score than the other model.",
        "",
        "| model | vs | task | win | tie | lose |",
        "|---|---|---|---|---|---|",
    ]
    ordered = [p if p.model == reference or p.other != reference else flip(p) for p in pairs]
    ordered.sort(key=lambda p: (p.model != reference, models.index(p.model), models.index(p.other), p.task == ALL_TASKS, p.task))
    for p in ordered:
        lines.append(f"| {p.model} | {p.other} | {p.task} | {p.win} | {p.tie} | {p.lose} |")
    lines += ["", "![mean scores and win/tie/lose](summary.png)", ""]
    return "\n".join(lines)


def summary_plot(
    summaries: list[ScoreSummary], pairs: list[PairCounts], *, models: list[str], reference: str
) -> bytes:
    """PNG like Fig. 3b: mean scores per task (bars with 95% CIs) and reference-vs-others counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = sorted({s.task for s in summaries if s.task != ALL_TASKS})
    by_key = {(s.model, s.task): s for s in summaries}
    others = [m for m in models if m != reference]
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(12, max(3.5, 0.6 * len(others) + 2)), gridspec_kw={"width_ratios": [3, 2]}
    )
    width = 0.8 / max(len(models), 1)
    positions = np.arange(len(tasks))
    for i, model in enumerate(models):
        means, errors = [], [[], []]
        for task in tasks:
            s = by_key.get((model, task))
            means.append(s.mean if s else np.nan)
            errors[0].append(s.mean - s.ci_low if s else 0.0)
            errors[1].append(s.ci_high - s.mean if s else 0.0)
        left.bar(positions + (i - (len(models) - 1) / 2) * width, means, width, yerr=errors, capsize=3, label=model)
    left.set_xticks(positions, tasks)
    left.set_ylim(0, 5)
    left.set_ylabel("mean human rating (0–5)")
    left.set_title("Scores per task (95% CI)")
    left.legend(fontsize=8)

    overall = {(p.model, p.other): p for p in pairs if p.task == ALL_TASKS}
    rows = []
    for other in others:
        p = overall.get((reference, other)) or flip(overall[(other, reference)])
        rows.append(p)
    y = np.arange(len(rows))
    wins = np.array([p.win for p in rows], dtype=float)
    ties = np.array([p.tie for p in rows], dtype=float)
    loses = np.array([p.lose for p in rows], dtype=float)
    right.barh(y, wins, color="#3a8d3a", label="win")
    right.barh(y, ties, left=wins, color="#b0b0b0", label="tie")
    right.barh(y, loses, left=wins + ties, color="#c0392b", label="lose")
    for row, p in enumerate(rows):
        right.text(p.total, row, f"  {p.win}/{p.tie}/{p.lose}", va="center", fontsize=8)
    right.set_yticks(y, [f"vs {p.other}" for p in rows])
    right.invert_yaxis()
    right.set_xlim(0, max([p.total for p in rows] + [1]) * 1.3)
    right.set_xlabel("comparisons (rater × case)")
    right.set_title(f"{reference}: win / tie / lose")
    right.legend(fontsize=8, loc="upper right", ncol=3, frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def export_study(
    study_dir: str | Path, output_dir: str | Path, *, reference: str | None = None, n_resamples: int = 1000, seed: int = 0
) -> dict[str, Path]:
    """Write ``ratings.csv``, ``summary.md`` and ``summary.png`` (the plot needs ≥2 models) to ``output_dir``."""
    output_dir = Path(output_dir)
    with store.connect(study_dir) as conn:
        models = store.models_in_order(conn)
        ratings = load_ratings(conn)
    if reference is None:
        reference = models[0] if models else ""
    elif reference not in models:
        raise ValueError(f"reference: model {reference!r} is not in this study ({', '.join(models)})")
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {"csv": output_dir / "ratings.csv"}
    atomic_write_bytes(written["csv"], ratings_csv(ratings).encode("utf-8"))
    if not ratings:
        written["markdown"] = output_dir / "summary.md"
        atomic_write_bytes(written["markdown"], b"# Rating study summary\n\nNo ratings yet.\n")
        return written
    summaries = score_summaries(ratings, n_resamples=n_resamples, seed=seed)
    pairs = win_tie_lose(ratings, models)
    markdown = summary_markdown(
        summaries,
        pairs,
        models=models,
        reference=reference,
        n_ratings=len(ratings),
        n_raters=len({r.rater for r in ratings}),
        n_resamples=n_resamples,
        seed=seed,
    )
    if len(models) >= 2:
        written["plot"] = output_dir / "summary.png"
        atomic_write_bytes(written["plot"], summary_plot(summaries, pairs, models=models, reference=reference))
    else:
        markdown = markdown.replace("![mean scores and win/tie/lose](summary.png)\n", "")
    written["markdown"] = output_dir / "summary.md"
    atomic_write_bytes(written["markdown"], markdown.encode("utf-8"))
    return written
