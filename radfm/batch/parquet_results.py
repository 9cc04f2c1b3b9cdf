"""The output of ``radfm batch``: Parquet parts written atomically, read back deduplicated, and the summary.

``OUTPUT/results/part-<run>-<n>.parquet`` holds one finished block of rows each; a part is written under
a temp name in the same folder, fsync'ed, then renamed, so a part is whole or absent: a driver killed
mid-run (``kill -9``) loses only the blocks in flight. A rerun reads the keys of every part
(:func:`finished_keys`) and skips them, so each item is answered once. :func:`read_results` returns the
rows with one row per key (an answer wins over an earlier error kept by ``--retry_failed``; then the
newest), so the output never holds a study twice, whatever was interrupted when.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RESULTS_DIR = "results"
SUMMARY_NAME = "summary.md"

# (column, Arrow type name): the schema of every part, so parts of different runs read as one table
COLUMNS = (
    ("key", "string"), ("study_uid", "string"), ("series_uid", "string"), ("origin", "string"),
    ("sources", "string"), ("modality", "string"), ("rule", "string"), ("prompt", "string"),
    ("answer", "string"), ("error", "string"), ("model_name", "string"), ("model_version", "string"),
    ("weights_sha256", "string"), ("engine", "string"), ("read_s", "float64"), ("read_wait_s", "float64"),
    ("generate_s", "float64"), ("read_started", "float64"), ("read_finished", "float64"),
    ("generate_started", "float64"), ("generate_finished", "float64"), ("read_node", "string"),
    ("generate_node", "string"), ("sr_path", "string"), ("run_id", "string"), ("finished_at", "float64"),
)


def schema():
    """The Arrow schema of a results part."""
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in COLUMNS])


def results_dir(output: str | os.PathLike) -> Path:
    return Path(output) / RESULTS_DIR


def new_run_id() -> str:
    """A run's id: its parts' name prefix (two runs never write the same file name)."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def as_table(rows: Iterable[Mapping[str, Any]]):
    """Rows (dicts) as an Arrow table of :func:`schema` (missing columns null, extra ones dropped)."""
    import pyarrow as pa

    rows = list(rows)
    return pa.table({name: [row.get(name) for row in rows] for name, _ in COLUMNS}, schema=schema())


def write_part(output: str | os.PathLike, run_id: str, number: int, table) -> Path:
    """Write one finished block atomically as ``results/part-<run_id>-<number>.parquet``.

    Args:
        output: the batch output folder.
        run_id: this run's id (:func:`new_run_id`).
        number: the part's number within the run.
        table: the rows, an Arrow table of :func:`schema`.

    Returns:
        The part's path (present only once complete).
    """
    import pyarrow.parquet as pq

    from radfm.utils.io import atomic_path

    path = results_dir(output) / f"part-{run_id}-{number:06d}.parquet"
    with atomic_path(path) as temp:
        pq.write_table(table.cast(schema()), temp)
        with open(temp, "rb") as handle:  # on disk before the rename makes it count as done
            os.fsync(handle.fileno())
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)
    return path


def part_files(output: str | os.PathLike) -> list[Path]:
    """The complete parts (temp files of an interrupted write start with ``.`` and are not listed)."""
    folder = results_dir(output)
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def _read_all(output: str | os.PathLike, columns: list[str] | None = None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(path, columns=columns).cast(
        schema() if columns is None else pa.schema([schema().field(c) for c in columns])) for path in part_files(output)]
    if not tables:
        return schema().empty_table() if columns is None else pa.schema(
            [schema().field(c) for c in columns]).empty_table()
    return pa.concat_tables(tables)


def finished_keys(output: str | os.PathLike, retry_failed: bool = False) -> set[str]:
    """Keys already in the output (only answered ones with ``retry_failed``): a rerun skips them."""
    table = _read_all(output, ["key", "error"])
    keys, errors = table.column("key").to_pylist(), table.column("error").to_pylist()
    return {k for k, e in zip(keys, errors) if e is None or not retry_failed}


def read_results(output: str | os.PathLike):
    """Every result row of ``output`` as a pandas DataFrame, one row per key.

    Where a key was written more than once (a failed row retried with ``--retry_failed``), the answered
    row wins over an error, then the newest. Sorted by study, series and prompt.
    """
    frame = _read_all(output).to_pandas()
    if frame.empty:
        return frame
    frame["_failed"] = frame["error"].notna()
    frame = frame.sort_values(["key", "_failed", "finished_at"], ascending=[True, True, False])
    frame = frame.drop_duplicates("key", keep="first").drop(columns="_failed")
    for name, kind in COLUMNS:  # a missing text is None (pandas reads it as NaN)
        if kind == "string":
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame.sort_values(["study_uid", "series_uid", "prompt"]).reset_index(drop=True)


# ---------------------------------------------------------------- summary -----
def _per_minute(count: int, starts: list[float], ends: list[float]) -> float | None:
    """Items per minute of a stage: items over the span from its first start to its last end."""
    spans = [(s, e) for s, e in zip(starts, ends) if s is not None and e is not None and s == s and e == e]
    if not spans or count == 0:
        return None
    seconds = max(e for _, e in spans) - min(s for s, _ in spans)
    return count / seconds * 60.0 if seconds > 0 else None


def reason_of(error: str) -> str:
    """The kind of an error row (``ScanReadError``, ``invalid_scan`` ...): the text before its first colon."""
    return error.split(":", 1)[0].strip()[:80] or "error"


def summary_markdown(rows, *, wall_s: float, skipped: int, counts: Mapping[str, int] | None = None,
                     title: str = "radfm batch") -> str:
    """The end-of-run summary: done, failed with reasons, studies per minute per stage.

    Args:
        rows: this run's rows (a pandas DataFrame of the results schema).
        wall_s: the run's wall time (driver), seconds.
        skipped: items skipped because the output already held them.
        counts: extra counts of the input (series not selected, files skipped, pulls failed).

    Returns:
        Markdown text.
    """
    done = int(rows["error"].isna().sum()) if len(rows) else 0
    failed = len(rows) - done
    lines = [f"# {title}", "", "| | count |", "|---|---|", f"| answered | {done} |", f"| failed | {failed} |",
             f"| already in the output (skipped) | {skipped} |"]
    for name, value in sorted((counts or {}).items()):
        lines.append(f"| {name.replace('_', ' ')} | {value} |")
    lines += ["", f"Wall time {wall_s:.1f} s: {len(rows) / wall_s * 60.0 if wall_s > 0 else 0:.1f} studies/min overall.",
              "", "| stage | studies | studies/min (first start to last end) | mean s per study |", "|---|---|---|---|"]
    if len(rows):
        read = rows[rows["read_started"].notna()]
        generated = rows[rows["generate_started"].notna()]
        for name, part, start, end, seconds in (("read + guard + preprocess (CPU tasks)", read, "read_started",
                                                  "read_finished", "read_s"),
                                                 ("generate (model actors)", generated, "generate_started",
                                                  "generate_finished", "generate_s")):
            rate = _per_minute(len(part), part[start].tolist(), part[end].tolist())
            mean = part[seconds].mean() if len(part) else None
            lines.append(f"| {name} | {len(part)} | {'-' if rate is None else f'{rate:.1f}'} | "
                         f"{'-' if mean is None or mean != mean else f'{mean:.3f}'} |")
    if failed:
        reasons = Counter(reason_of(e) for e in rows["error"].dropna())
        lines += ["", "Failed, by reason (the rows' `error` column has each message):", "", "| reason | studies |",
                  "|---|---|"]
        lines += [f"| {reason} | {n} |" for reason, n in reasons.most_common()]
    return "\n".join(lines) + "\n"
