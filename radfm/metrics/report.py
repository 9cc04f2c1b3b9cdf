"""Result files people look at: metrics.json, report.md (dataset × metric × model, like the
paper's Tables 1–2) and a bar plot PNG (like Fig. 3a: ACC for closed sets, AVG otherwise,
95% CI error bars). Every file is written to a temporary name and renamed, so a crash never
leaves a half-written result behind.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from radfm.metrics.suite import CLOSED_HEADLINE, OPEN_HEADLINE, REPORT_TASK_EXTRA, GroupResult
from radfm.utils.io import atomic_path, atomic_write_text

# model name -> its group results
ModelResults = dict[str, list[GroupResult]]


def metrics_document(results: ModelResults, settings: dict[str, object]) -> dict[str, object]:
    """The JSON-serialisable content of metrics.json (values in [0, 1])."""
    return {"settings": settings,
            "models": {model: [group.as_dict() for group in groups] for model, groups in results.items()}}


def write_metrics_json(path: Path, results: ModelResults, settings: dict[str, object]) -> None:
    document = metrics_document(results, settings)
    atomic_write_text(path, json.dumps(document, indent=2, allow_nan=True) + "\n")


def _group_keys(results: ModelResults) -> list[tuple[str, str, str]]:
    """(dataset, task, kind) of every group of any model, in order of first appearance."""
    keys: dict[tuple[str, str, str], None] = {}
    for groups in results.values():
        for group in groups:
            keys.setdefault((group.dataset, group.task, group.kind), None)
    return list(keys)


def _mixed_tasks(keys: list[tuple[str, str, str]]) -> set[tuple[str, str]]:
    """(dataset, task) pairs that have both a closed and an open part."""
    seen = Counter((dataset, task) for dataset, task, _ in keys)
    return {pair for pair, count in seen.items() if count > 1}


def _task_label(dataset: str, task: str, kind: str, mixed: set[tuple[str, str]]) -> str:
    return f"{task} ({kind})" if (dataset, task) in mixed else task


def _find(groups: list[GroupResult], dataset: str, task: str, kind: str) -> GroupResult | None:
    return next((g for g in groups if g.dataset == dataset and g.task == task and g.kind == kind), None)


def _cell(group: GroupResult | None, metric: str) -> str:
    if group is None or metric not in group.metrics:
        return "–"
    estimate = group.metrics[metric]
    if not math.isfinite(estimate.value):
        return "n/a"
    if not math.isfinite(estimate.ci_low):
        return f"{100 * estimate.value:.2f}"
    return f"{100 * estimate.value:.2f} ({100 * estimate.ci_low:.2f}, {100 * estimate.ci_high:.2f})"


def _rows_for(kind: str, task: str) -> tuple[str, ...]:
    if kind == "closed":
        return CLOSED_HEADLINE
    return OPEN_HEADLINE + (REPORT_TASK_EXTRA if task == "report" else ())


def render_markdown(results: ModelResults, settings: dict[str, object], sources: dict[str, str] | None = None) -> str:
    """report.md: one table, rows dataset × metric, one column per model; values in %."""
    models = list(results)
    lines = ["# Evaluation report", ""]
    lines.append("Values are percentages; parentheses give the 95% bootstrap confidence interval "
                 f"({settings.get('bootstrap', {}).get('resamples', '?')} seeded resamples).")  # type: ignore[union-attr]
    lines.append("")
    if sources:
        lines += ["| Model | Predictions |", "|---|---|"] + [f"| {m} | `{sources[m]}` |" for m in models if m in sources] + [""]
    lines.append("| Dataset | Task | Metric | " + " | ".join(models) + " |")
    lines.append("|---|---|---|" + "---|" * len(models))
    keys = _group_keys(results)
    mixed = _mixed_tasks(keys)
    for dataset, task, kind in keys:
        groups = {model: _find(results[model], dataset, task, kind) for model in models}
        counts = [f"{g.n_cases}" + (f" ({g.n_failed} failed)" if g.n_failed else "") if g else "–" for g in groups.values()]
        lines.append(f"| {dataset} | {_task_label(dataset, task, kind, mixed)} | n | " + " | ".join(counts) + " |")
        for metric in _rows_for(kind, task):
            if not any(g and metric in g.metrics for g in groups.values()):
                continue
            lines.append(f"| | | {metric} | " + " | ".join(_cell(groups[m], metric) for m in models) + " |")
    lines += ["", "## Settings", ""]
    for key, value in settings.items():
        if key == "notes":
            for note in value or []:  # type: ignore[union-attr]
                lines.append(f"- note: {note}")
        else:
            lines.append(f"- {key}: {json.dumps(value) if isinstance(value, dict) else value}")
    lines.append("- metrics.json holds every metric (sentence BLEU-1..4, corpus BLEU-1..4, ROUGE-L, Macro_F1) with CIs.")
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, results: ModelResults, settings: dict[str, object], sources: dict[str, str] | None = None) -> None:
    text = render_markdown(results, settings, sources)
    atomic_write_text(path, text)


def headline_metric(group: GroupResult) -> str | None:
    """Fig. 3a: ACC for closed groups, AVG for open ones (ROUGE if AVG is unavailable)."""
    for name in (("ACC",) if group.kind == "closed" else ("AVG", "ROUGE")):
        if name in group.metrics and math.isfinite(group.metrics[name].value):
            return name
    return None


def write_bar_plot(path: Path, results: ModelResults) -> None:
    """One panel per (dataset, task), one bar per model, 95% CI error bars (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = _group_keys(results) or [("no data", "", "open")]
    mixed = _mixed_tasks(keys)
    models = list(results) or ["none"]
    columns = min(4, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.0 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for axis, (dataset, task, kind) in zip(axes.flat, keys):
        heights, lows, highs, metric_names, counts = [], [], [], set(), set()
        for model in models:
            group = _find(results.get(model, []), dataset, task, kind)
            metric = headline_metric(group) if group else None
            if metric is None:
                heights.append(0.0), lows.append(0.0), highs.append(0.0)
                continue
            estimate = group.metrics[metric]  # type: ignore[union-attr]
            metric_names.add(metric)
            counts.add(group.n_cases)  # type: ignore[union-attr]
            value = 100 * estimate.value
            low = 100 * estimate.ci_low if math.isfinite(estimate.ci_low) else value
            high = 100 * estimate.ci_high if math.isfinite(estimate.ci_high) else value
            heights.append(value), lows.append(value - low), highs.append(high - value)
        positions = np.arange(len(models))
        axis.bar(positions, heights, yerr=[lows, highs], capsize=3, color=[colours(i % 10) for i in range(len(models))])
        axis.set_xticks(positions, models, rotation=30, ha="right", fontsize=7)
        axis.set_ylim(0, 100)
        axis.set_ylabel("/".join(sorted(metric_names)) or "no metric", fontsize=8)
        n_text = "n=" + "/".join(str(c) for c in sorted(counts)) if counts else "n=0"
        axis.set_title(f"{dataset}: {_task_label(dataset, task, kind, mixed)}\n{n_text}", fontsize=8)
    for axis in list(axes.flat)[len(keys):]:
        axis.axis("off")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
