"""The node's durable state on disk: received instances, jobs and deliveries in one SQLite file.

A study's life, each step one committed transaction (so ``kill -9`` at any point loses nothing)::

    instances (job_id NULL)  --stable for stable_after_s-->  job 'queued'  (files moved to jobs/<id>/input)
    job 'queued' -> 'running' (a runner claimed it) -> 'sending' (SRs written, one delivery per
    destination and SR) -> 'done' when every delivery is delivered, or 'failed' with the reason.

A job found 'running' at start was interrupted (crash, kill): it goes back to 'queued' and runs
again, until ``max_job_attempts``. A study whose instances (SOP UIDs and file hashes) equal a
study already answered (or queued) is a duplicate: no second job. The SR of a job keeps its SOP
Instance UID across retries and restarts, so a PACS never receives two different reports.
Nothing here stores patient names: the tables hold UIDs, counts, times and reasons.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("radfm.node")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, sop_uid TEXT NOT NULL, path TEXT NOT NULL,
    sha256 TEXT NOT NULL, modality TEXT, description TEXT, calling_ae TEXT, received_at REAL NOT NULL,
    PRIMARY KEY (study_uid, sop_uid));
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, study_uid TEXT NOT NULL, fingerprint TEXT NOT NULL,
    state TEXT NOT NULL, reason TEXT, attempts INTEGER NOT NULL DEFAULT 0, n_instances INTEGER NOT NULL,
    first_received_at REAL, last_received_at REAL, queued_at REAL, started_at REAL, finished_at REAL,
    series TEXT NOT NULL, results TEXT, timings TEXT);
CREATE INDEX IF NOT EXISTS jobs_by_study ON jobs (study_uid, fingerprint);
CREATE TABLE IF NOT EXISTS deliveries (
    job_id INTEGER NOT NULL, destination TEXT NOT NULL, sr_path TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_try_at REAL NOT NULL, last_error TEXT, delivered_at REAL,
    PRIMARY KEY (job_id, destination, sr_path));
CREATE TABLE IF NOT EXISTS pulled (study_uid TEXT PRIMARY KEY, pulled_at REAL NOT NULL);
"""
# columns added to ``pulled`` after its first release (an older node.sqlite gets them at open; its
# rows were fetched studies): 'fetching' (now, or when the node stopped), 'done', 'retry' or 'failed'
_PULLED_COLUMNS = (("state", "TEXT NOT NULL DEFAULT 'done'"), ("attempts", "INTEGER NOT NULL DEFAULT 0"),
                   ("next_try_at", "REAL"), ("reason", "TEXT"))

JOB_STATES = ("queued", "running", "sending", "done", "failed")


def retry_wait(attempts: int, first_s: float, max_s: float) -> float:
    """The wait after ``attempts`` failed tries: ``first_s`` doubling each time, at most ``max_s``.

    Args:
        attempts: failed tries so far (>= 1).
        first_s: the wait after the first failure.
        max_s: the longest wait.

    Returns:
        Seconds to wait before the next try.
    """
    return min(first_s * 2 ** (attempts - 1), max_s)


@dataclass
class Job:
    id: int
    study_uid: str
    state: str
    attempts: int
    series: list[dict[str, Any]]  # [{"series_uid", "modality", "description", "instances"}]
    folder: Path  # jobs/<id>: input/<series>/<sop>.dcm and the SR files
    timings: dict[str, float]


def study_key(study_uid: str) -> str:
    """A fixed-length folder name for a study (the UID itself may be up to 64 characters)."""
    return hashlib.sha256(study_uid.encode()).hexdigest()[:20]


class JobQueue:
    """The SQLite file ``state_dir/node.sqlite`` and the spool folders beside it; safe across threads."""

    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir)
        self.incoming = self.root / "incoming"
        self.jobs_dir = self.root / "jobs"
        for folder in (self.root, self.incoming, self.jobs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.lock = self._lock  # held by a receiver while it moves a file into the spool and records it
        self._db = sqlite3.connect(self.root / "node.sqlite", check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed step survives power loss, not only kill -9
        self._db.executescript(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(pulled)")}
        for name, kind in _PULLED_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE pulled ADD COLUMN {name} {kind}")
        self._held: set[str] = set()  # studies being pulled: not sealed until their fetch ends

    # ---- helpers --------------------------------------------------------------------------------
    def _tx(self, statements: Iterable[tuple[str, tuple]]) -> list[sqlite3.Cursor]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursors = [self._db.execute(sql, args) for sql, args in statements]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return cursors

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            self._db.close()

    # ---- receiving --------------------------------------------------------------------------------
    def instance_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """Where an instance is spooled: ``incoming/<study key>/<series UID>/<SOP UID>.dcm``."""
        return self.incoming / study_key(study_uid) / series_uid / f"{sop_uid}.dcm"

    def pending_count(self, study_uid: str) -> int:
        """How many instances of ``study_uid`` wait in the spool (not yet sealed into a job)."""
        return self._rows("SELECT COUNT(*) FROM instances WHERE study_uid = ?", (study_uid,))[0][0]

    def add_instance(self, study_uid: str, series_uid: str, sop_uid: str, path: Path, sha256: str,
                     modality: str, description: str, calling_ae: str) -> None:
        """Record an instance already written to :meth:`instance_path` (the same SOP UID again replaces it)."""
        self._tx([("INSERT OR REPLACE INTO instances VALUES (?,?,?,?,?,?,?,?,?)",
                   (study_uid, series_uid, sop_uid, str(path), sha256, modality, description, calling_ae,
                    time.time()))])

    def seal_stable(self, stable_after_s: float, now: float | None = None) -> list[int]:
        """Turn every study with no new instance for ``stable_after_s`` into a job; returns the new job ids.

        A study equal to one already queued or answered (same SOP UIDs, same bytes) is dropped as a
        duplicate; a changed one (an instance added, replaced or missing) gets its own job.
        """
        now = time.time() if now is None else now
        created = []
        with self._lock:
            studies = self._rows("SELECT study_uid, MIN(received_at), MAX(received_at), COUNT(*) FROM instances "
                                 "GROUP BY study_uid HAVING MAX(received_at) <= ?", (now - stable_after_s,))
            for study_uid, first, last, count in studies:
                if study_uid in self._held:  # a pull still fetching it: a part of a study is not a study
                    continue
                rows = self._rows("SELECT series_uid, sop_uid, sha256, modality, description FROM instances "
                                  "WHERE study_uid = ? ORDER BY series_uid, sop_uid", (study_uid,))
                fingerprint = hashlib.sha256("\n".join(f"{r['sop_uid']}:{r['sha256']}" for r in rows).encode()).hexdigest()
                source = self.incoming / study_key(study_uid)
                same = self._rows("SELECT id, state FROM jobs WHERE study_uid = ? AND fingerprint = ? AND state != "
                                  "'failed' ORDER BY id DESC LIMIT 1", (study_uid, fingerprint))
                if same:
                    self._tx([("DELETE FROM instances WHERE study_uid = ?", (study_uid,))])
                    shutil.rmtree(source, ignore_errors=True)
                    logger.info("study %s: %d instances identical to job %d (%s): not queued again",
                                study_uid, count, same[0]["id"], same[0]["state"])
                    continue
                series: dict[str, dict[str, Any]] = {}
                for r in rows:
                    entry = series.setdefault(r["series_uid"], {"series_uid": r["series_uid"], "modality": r["modality"],
                                                                "description": r["description"], "instances": 0})
                    entry["instances"] += 1
                (cursor,) = self._tx([
                    ("INSERT INTO jobs (study_uid, fingerprint, state, n_instances, first_received_at, last_received_at,"
                     " queued_at, series) VALUES (?,?,?,?,?,?,?,?)",
                     (study_uid, fingerprint, "queued", count, first, last, now, json.dumps(list(series.values())))),
                ])
                job_id = int(cursor.lastrowid)
                self._tx([("DELETE FROM instances WHERE study_uid = ?", (study_uid,))])
                self._move_input(job_id, source)
                created.append(job_id)
                logger.info("study %s: complete (%d instances, %d series): job %d queued", study_uid, count,
                            len(series), job_id)
        return created

    def _move_input(self, job_id: int, source: Path) -> None:
        target = self.job_folder(job_id) / "input"
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir() and not target.exists():
            source.rename(target)

    def job_folder(self, job_id: int) -> Path:
        """The job's own folder (its input copy and its SRs)."""
        return self.jobs_dir / str(job_id)

    # ---- running ----------------------------------------------------------------------------------
    def recover(self, max_job_attempts: int) -> int:
        """At start: finish interrupted moves and requeue interrupted jobs; returns how many were requeued.

        A study the pull mode was fetching when the node stopped loses what it had fetched (a part of a
        study would be answered as if it were whole) and is fetched again at the next poll.
        """
        with self._lock:
            for row in self._rows("SELECT study_uid FROM pulled WHERE state = 'fetching'"):
                self._drop_pending(row["study_uid"])
                self._tx([("UPDATE pulled SET state = 'retry', next_try_at = 0 WHERE study_uid = ?",
                           (row["study_uid"],))])
                logger.info("study %s: its DICOMweb fetch was interrupted; fetched again at the next poll",
                            row["study_uid"])
            for row in self._rows("SELECT id, study_uid FROM jobs WHERE state = 'queued'"):
                source = self.incoming / study_key(row["study_uid"])
                if not (self.job_folder(row["id"]) / "input").exists() and source.exists():
                    self._move_input(row["id"], source)  # killed between the commit and the move
            interrupted = self._rows("SELECT id, attempts FROM jobs WHERE state = 'running'")
            for row in interrupted:
                if row["attempts"] >= max_job_attempts:
                    self.fail_job(row["id"], f"interrupted {row['attempts']} times (the node stopped while it ran)")
                else:
                    self._tx([("UPDATE jobs SET state = 'queued' WHERE id = ?", (row["id"],))])
                    logger.info("job %d: interrupted by a stop of the node; queued again", row["id"])
            return len(interrupted)

    def claim(self) -> Job | None:
        """The oldest queued job, now 'running' (its attempts counted), or ``None``."""
        with self._lock:
            rows = self._rows("SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1")
            if not rows:
                return None
            job_id = rows[0]["id"]
            self._tx([("UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ? WHERE id = ?",
                       (time.time(), job_id))])
            return self.job(job_id)

    def job(self, job_id: int) -> Job:
        """The job ``job_id`` as a :class:`Job` (state, attempts, series, folder, timings)."""
        row = self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))[0]
        return Job(row["id"], row["study_uid"], row["state"], row["attempts"], json.loads(row["series"]),
                   self.job_folder(row["id"]), json.loads(row["timings"] or "{}"))

    def jobs_row(self, job_id: int) -> sqlite3.Row:
        """The job's raw row of the ``jobs`` table (``radfm node status`` reads it)."""
        return self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))[0]

    def add_timings(self, job_id: int, timings: dict[str, float]) -> None:
        """Merge ``timings`` (seconds, by step name) into the job's recorded timings."""
        with self._lock:
            merged = {**self.job(job_id).timings, **{k: round(float(v), 4) for k, v in timings.items()}}
            self._tx([("UPDATE jobs SET timings = ? WHERE id = ?", (json.dumps(merged), job_id))])

    def answered(self, job_id: int, results: list[dict[str, Any]], destinations: list[str]) -> None:
        """The job's SRs are written (``results``: series, rule, sr_path, sop_uid): deliver each to each destination."""
        now = time.time()
        statements = [("UPDATE jobs SET state = ?, results = ? WHERE id = ?",
                       ("sending" if destinations and results else "done", json.dumps(results), job_id))]
        statements += [("INSERT OR IGNORE INTO deliveries (job_id, destination, sr_path, state, next_try_at) "
                        "VALUES (?,?,?,'pending',?)", (job_id, name, r["sr_path"], now))
                       for r in results for name in destinations]
        if not (destinations and results):
            statements.append(("UPDATE jobs SET finished_at = ? WHERE id = ?", (now, job_id)))
        self._tx(statements)
        self._drop_input(job_id)

    def fail_job(self, job_id: int, reason: str) -> None:
        """Mark the job failed with ``reason`` (names UIDs and causes, never the patient) and drop its input copy."""
        self._tx([("UPDATE jobs SET state = 'failed', reason = ?, finished_at = ? WHERE id = ?",
                   (reason[:2000], time.time(), job_id))])
        self._drop_input(job_id)
        logger.warning("job %d: failed: %s", job_id, reason)

    def _drop_input(self, job_id: int) -> None:
        shutil.rmtree(self.job_folder(job_id) / "input", ignore_errors=True)  # the PACS keeps the images

    # ---- delivering -------------------------------------------------------------------------------
    def due_deliveries(self, now: float | None = None) -> list[sqlite3.Row]:
        """The pending deliveries whose next try is due by ``now``, soonest first."""
        now = time.time() if now is None else now
        return self._rows("SELECT * FROM deliveries WHERE state = 'pending' AND next_try_at <= ? "
                          "ORDER BY next_try_at", (now,))

    def next_delivery_at(self) -> float | None:
        """When the next pending delivery is due (epoch seconds), or ``None`` when none is pending."""
        rows = self._rows("SELECT MIN(next_try_at) FROM deliveries WHERE state = 'pending'")
        return rows[0][0]

    def delivery_result(self, row: sqlite3.Row, error: str | None, retry_first_s: float, retry_max_s: float,
                        max_attempts: int) -> None:
        """Record one try: delivered, or wait ``retry_first_s * 2**(tries-1)`` (at most ``retry_max_s``)."""
        now = time.time()
        key = (row["job_id"], row["destination"], row["sr_path"])
        attempts = row["attempts"] + 1
        if error is None:
            self._tx([("UPDATE deliveries SET state = 'delivered', attempts = ?, delivered_at = ?, last_error = NULL "
                       "WHERE job_id = ? AND destination = ? AND sr_path = ?", (attempts, now, *key))])
            logger.info("job %d: report delivered to %s (try %d)", row["job_id"], row["destination"], attempts)
        elif attempts >= max_attempts:
            self._tx([("UPDATE deliveries SET state = 'failed', attempts = ?, last_error = ? "
                       "WHERE job_id = ? AND destination = ? AND sr_path = ?", (attempts, error[:2000], *key))])
            logger.warning("job %d: delivery to %s failed for good after %d tries: %s", row["job_id"],
                           row["destination"], attempts, error)
        else:
            wait = retry_wait(attempts, retry_first_s, retry_max_s)
            self._tx([("UPDATE deliveries SET attempts = ?, last_error = ?, next_try_at = ? "
                       "WHERE job_id = ? AND destination = ? AND sr_path = ?", (attempts, error[:2000], now + wait, *key))])
            logger.info("job %d: delivery to %s failed (try %d), retrying in %.1f s: %s", row["job_id"],
                        row["destination"], attempts, wait, error)
        self._settle(row["job_id"])

    def _settle(self, job_id: int) -> None:
        """A sending job whose deliveries are all finished becomes 'done' or 'failed' (naming what failed)."""
        with self._lock:
            rows = self._rows("SELECT destination, state, last_error, delivered_at FROM deliveries WHERE job_id = ?",
                              (job_id,))
            if any(r["state"] == "pending" for r in rows):
                return
            failed = [r for r in rows if r["state"] == "failed"]
            if failed:
                reason = "; ".join(f"delivery to {r['destination']} failed: {r['last_error']}" for r in failed)
                self._tx([("UPDATE jobs SET state = 'failed', reason = ?, finished_at = ? WHERE id = ?",
                           (reason[:2000], time.time(), job_id))])
                return
            self._tx([("UPDATE jobs SET state = 'done', finished_at = ? WHERE id = ? AND state = 'sending'",
                       (time.time(), job_id))])
            job = self._rows("SELECT started_at, timings FROM jobs WHERE id = ?", (job_id,))[0]
            timings = json.loads(job["timings"] or "{}")
            if "answered_at" in timings:
                self.add_timings(job_id, {"send": max(r["delivered_at"] for r in rows) - timings["answered_at"]})
            logger.info("job %d: done", job_id)

    # ---- reporting --------------------------------------------------------------------------------
    def jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest jobs as dicts (what ``radfm node status`` prints), deliveries included."""
        rows = self._rows("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        out = []
        for row in rows:
            record = {key: row[key] for key in row.keys() if key not in ("series", "results", "timings", "fingerprint")}
            record["series"] = json.loads(row["series"])
            record["results"] = json.loads(row["results"] or "[]")
            record["timings"] = json.loads(row["timings"] or "{}")
            record["deliveries"] = [dict(d) for d in self._rows(
                "SELECT destination, state, attempts, last_error, delivered_at FROM deliveries WHERE job_id = ?",
                (row["id"],))]
            out.append(record)
        return out

    # ---- DICOMweb pull --------------------------------------------------------------------------
    def pull_due(self, study_uid: str, now: float | None = None) -> bool:
        """Whether the pull mode should fetch ``study_uid`` now: never tried, or its retry wait is over."""
        now = time.time() if now is None else now
        rows = self._rows("SELECT state, next_try_at FROM pulled WHERE study_uid = ?", (study_uid,))
        return not rows or (rows[0]["state"] == "retry" and (rows[0]["next_try_at"] or 0) <= now)

    def pull_begin(self, study_uid: str) -> None:
        """A fetch of ``study_uid`` starts: recorded (so a stop mid-fetch is seen at the next start) and held
        from sealing until :meth:`mark_pulled`, :meth:`pull_failed` or :meth:`pull_abandoned`."""
        with self._lock:
            self._held.add(study_uid)
            self._tx([("INSERT INTO pulled (study_uid, pulled_at, state) VALUES (?, ?, 'fetching') "
                       "ON CONFLICT (study_uid) DO UPDATE SET state = 'fetching', pulled_at = excluded.pulled_at",
                       (study_uid, time.time()))])

    def mark_pulled(self, study_uid: str) -> None:
        """``study_uid`` was fetched whole: never fetched again; its instances seal into a job as usual."""
        with self._lock:
            self._tx([("INSERT INTO pulled (study_uid, pulled_at, state) VALUES (?, ?, 'done') "
                       "ON CONFLICT (study_uid) DO UPDATE SET state = 'done', reason = NULL, "
                       "pulled_at = excluded.pulled_at", (study_uid, time.time()))])
            self._held.discard(study_uid)

    def pull_failed(self, study_uid: str, reason: str, retry_first_s: float, retry_max_s: float,
                    max_attempts: int) -> None:
        """A fetch of ``study_uid`` failed for a reason of its own: what it fetched is dropped; it is tried
        again after :func:`retry_wait`, or marked failed (with ``reason``) after ``max_attempts`` tries."""
        with self._lock:
            self._drop_pending(study_uid)
            rows = self._rows("SELECT attempts FROM pulled WHERE study_uid = ?", (study_uid,))
            attempts = (rows[0]["attempts"] if rows else 0) + 1
            now = time.time()
            if attempts >= max_attempts:
                state, next_try = "failed", None
                logger.warning("study %s: DICOMweb fetch failed for good after %d tries: %s", study_uid, attempts,
                               reason)
            else:
                state, next_try = "retry", now + retry_wait(attempts, retry_first_s, retry_max_s)
                logger.warning("study %s: DICOMweb fetch failed (try %d), retrying in %.1f s: %s", study_uid,
                               attempts, next_try - now, reason)
            self._tx([("INSERT INTO pulled (study_uid, pulled_at, state, attempts, next_try_at, reason) "
                       "VALUES (?,?,?,?,?,?) ON CONFLICT (study_uid) DO UPDATE SET pulled_at = excluded.pulled_at, "
                       "state = excluded.state, attempts = excluded.attempts, next_try_at = excluded.next_try_at, "
                       "reason = excluded.reason", (study_uid, now, state, attempts, next_try, reason[:2000]))])
            self._held.discard(study_uid)

    def pull_abandoned(self, study_uid: str) -> None:
        """A fetch of ``study_uid`` stopped for a reason not its own (server unreachable, node stopping):
        what it fetched is dropped and it is fetched again at the next poll, no try counted."""
        with self._lock:
            self._drop_pending(study_uid)
            self._tx([("UPDATE pulled SET state = 'retry', next_try_at = 0 WHERE study_uid = ?", (study_uid,))])
            self._held.discard(study_uid)

    def pulls(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest studies the pull mode has not fetched whole (retrying, failed), as dicts."""
        rows = self._rows("SELECT study_uid, state, attempts, reason, pulled_at, next_try_at FROM pulled "
                          "WHERE state != 'done' ORDER BY pulled_at DESC LIMIT ?", (limit,))
        return [dict(row) for row in rows]

    def _drop_pending(self, study_uid: str) -> None:
        """Forget the received, not yet sealed instances of ``study_uid`` (rows and files)."""
        with self._lock:
            self._tx([("DELETE FROM instances WHERE study_uid = ?", (study_uid,))])
            shutil.rmtree(self.incoming / study_key(study_uid), ignore_errors=True)

    def waiting_instances(self) -> int:
        """How many received instances wait in the spool, over all studies."""
        return self._rows("SELECT COUNT(*) FROM instances")[0][0]
