"""SQLite storage of a rating study: cases, blinded candidates, raters, sessions, ratings.

One file, ``DIR/study.sqlite``, in WAL mode so the web server can write each answer as it
arrives (one short transaction per request) while an export reads. Tokens are never stored:
only their SHA-256, which is enough because tokens are 256-bit random strings (no
dictionary to guess from, so a slow password hash adds nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DB_NAME = "study.sqlite"
SCHEMA_VERSION = "1"
MIN_SCORE, MAX_SCORE = 0, 5
DEFAULT_SESSION_TTL_S = 12 * 3600.0  # a browser session lasts one working day, then the token is asked again
BLINDING_SECRET_KEY = "blinding_secret"  # meta key: 256-bit random, seeds every rater's answer order

# The paper's rubric (Methods, "Human rating"), mapped onto 0..5.
RUBRIC: list[tuple[int, str, str]] = [
    (0, "Garbled", "The content is incomprehensible and lacks any readability."),
    (1, "Inaccurate", "While readable, the content is entirely incorrect and lacks meaningful information."),
    (2, "Partially informative", "The content holds some reference value, yet its correctness is subpar."),
    (3, "Moderately accurate", "The content provides reference points, with approximately half of the information being correct, but containing several errors."),
    (4, "Mostly accurate", "The content is almost entirely correct, with only a few omissions or errors present."),
    (5, "Completely correct", "The content is accurate in its entirety, without any mistakes."),
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    pk INTEGER PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    case_id TEXT NOT NULL UNIQUE,
    dataset TEXT NOT NULL,
    task TEXT NOT NULL,
    instruction TEXT NOT NULL,
    reference TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS case_images (
    case_pk INTEGER NOT NULL REFERENCES cases(pk),
    image_index INTEGER NOT NULL,
    rel_path TEXT,            -- relative to the study folder; NULL when the copy failed
    error TEXT,               -- why the image is unavailable
    PRIMARY KEY (case_pk, image_index)
);
CREATE TABLE IF NOT EXISTS candidates (
    pk INTEGER PRIMARY KEY,
    case_pk INTEGER NOT NULL REFERENCES cases(pk),
    model TEXT NOT NULL,
    answer TEXT NOT NULL,
    UNIQUE (case_pk, model)
);
CREATE TABLE IF NOT EXISTS raters (
    pk INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    rater_pk INTEGER NOT NULL REFERENCES raters(pk),
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ratings (
    rater_pk INTEGER NOT NULL REFERENCES raters(pk),
    candidate_pk INTEGER NOT NULL REFERENCES candidates(pk),
    score INTEGER NOT NULL CHECK (score BETWEEN 0 AND 5),
    updated_at REAL NOT NULL,
    PRIMARY KEY (rater_pk, candidate_pk)
);
CREATE TABLE IF NOT EXISTS skips (
    rater_pk INTEGER NOT NULL REFERENCES raters(pk),
    case_pk INTEGER NOT NULL REFERENCES cases(pk),
    updated_at REAL NOT NULL,
    PRIMARY KEY (rater_pk, case_pk)
);
"""


def hash_token(token: str) -> str:
    """Hex SHA-256 of a rater or session token (what the database keeps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh URL-safe 256-bit random token."""
    return secrets.token_urlsafe(32)


def db_path(study_dir: str | Path) -> Path:
    return Path(study_dir) / DB_NAME


def open_db(path: str | Path, *, must_exist: bool = True) -> sqlite3.Connection:
    """Open the study database (WAL, foreign keys, 10 s busy timeout, rows as ``sqlite3.Row``)."""
    path = Path(path)
    if must_exist and not path.is_file():
        raise FileNotFoundError(f"{path}: no rating study database here (create one with `radfm rate create`)")
    # check_same_thread=False: a connection is opened per request, but FastAPI may finish it
    # on another worker thread than the one that opened it.
    conn = sqlite3.connect(path, timeout=10.0, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL is durable across app crashes
    return conn


@contextmanager
def connect(study_dir: str | Path) -> Iterator[sqlite3.Connection]:
    """A connection that commits on success, rolls back on error, and is always closed."""
    conn = open_db(db_path(study_dir))
    try:
        yield conn
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


def init_schema(conn: sqlite3.Connection, models: list[str]) -> None:
    """Create the tables and record the schema version and the model order."""
    import json

    conn.executescript(SCHEMA)
    conn.executemany(
        "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
        [("schema_version", SCHEMA_VERSION), ("models", json.dumps(models)), ("created_at", str(time.time())),
         (BLINDING_SECRET_KEY, secrets.token_hex(32))],
    )


def blinding_secret(conn: sqlite3.Connection) -> bytes:
    """The study's secret for the blinded answer order (created on first use in studies made before it existed).

    Kept only in ``study.sqlite``: without it the order of a (rater, case) cannot be recomputed.
    """
    conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (BLINDING_SECRET_KEY, secrets.token_hex(32)))
    row = conn.execute("SELECT value FROM meta WHERE key=?", (BLINDING_SECRET_KEY,)).fetchone()
    return bytes.fromhex(row["value"])


def keyed_seed(secret: bytes, *parts: object) -> int:
    """A 64-bit seed from HMAC-SHA256(secret, parts): fixed for the same parts, unguessable without the secret."""
    message = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hmac.new(secret, message, hashlib.sha256).digest()[:8], "big")


def models_in_order(conn: sqlite3.Connection) -> list[str]:
    """Model names in the order their prediction files were given to ``create``."""
    import json

    row = conn.execute("SELECT value FROM meta WHERE key='models'").fetchone()
    return json.loads(row["value"]) if row else []


def add_rater(conn: sqlite3.Connection, name: str) -> str:
    """Register rater ``name``; returns the plain token (shown once, only its hash is kept)."""
    name = name.strip()
    if not name:
        raise ValueError("rater name: expected a non-empty string")
    if conn.execute("SELECT 1 FROM raters WHERE name=?", (name,)).fetchone():
        raise ValueError(f"rater {name!r} already exists in this study")
    token = new_token()
    conn.execute(
        "INSERT INTO raters(name, token_hash, created_at) VALUES (?, ?, ?)", (name, hash_token(token), time.time())
    )
    return token


def rater_for_token(conn: sqlite3.Connection, token: str) -> sqlite3.Row | None:
    """The rater row whose token this is, or None."""
    return conn.execute("SELECT pk, name FROM raters WHERE token_hash=?", (hash_token(token.strip()),)).fetchone()


def open_session(conn: sqlite3.Connection, rater_pk: int) -> str:
    """Start a browser session for a rater; returns the cookie value."""
    session = new_token()
    conn.execute(
        "INSERT INTO sessions(token_hash, rater_pk, created_at) VALUES (?, ?, ?)",
        (hash_token(session), rater_pk, time.time()),
    )
    return session


def rater_for_session(conn: sqlite3.Connection, session: str | None,
                      max_age_s: float | None = DEFAULT_SESSION_TTL_S) -> sqlite3.Row | None:
    """The signed-in rater for a session cookie value, or None (also when older than ``max_age_s``)."""
    if not session:
        return None
    oldest = -float("inf") if max_age_s is None else time.time() - float(max_age_s)
    return conn.execute(
        "SELECT r.pk, r.name FROM sessions s JOIN raters r ON r.pk = s.rater_pk WHERE s.token_hash=? "
        "AND s.created_at >= ?",
        (hash_token(session), oldest),
    ).fetchone()


def purge_expired_sessions(conn: sqlite3.Connection, max_age_s: float) -> int:
    """Delete sessions older than ``max_age_s``; returns how many."""
    return conn.execute("DELETE FROM sessions WHERE created_at < ?", (time.time() - float(max_age_s),)).rowcount


def close_session(conn: sqlite3.Connection, session: str) -> None:
    conn.execute("DELETE FROM sessions WHERE token_hash=?", (hash_token(session),))


def set_score(conn: sqlite3.Connection, rater_pk: int, candidate_pk: int, score: int | None) -> None:
    """Store (or with ``None`` clear) one rater's score of one candidate; rating un-skips the case."""
    now = time.time()
    if score is None:
        conn.execute("DELETE FROM ratings WHERE rater_pk=? AND candidate_pk=?", (rater_pk, candidate_pk))
        return
    if not (isinstance(score, int) and not isinstance(score, bool) and MIN_SCORE <= score <= MAX_SCORE):
        raise ValueError(f"score: expected an integer {MIN_SCORE}..{MAX_SCORE}, got {score!r}")
    conn.execute(
        "INSERT INTO ratings(rater_pk, candidate_pk, score, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(rater_pk, candidate_pk) DO UPDATE SET score=excluded.score, updated_at=excluded.updated_at",
        (rater_pk, candidate_pk, score, now),
    )
    conn.execute(
        "DELETE FROM skips WHERE rater_pk=? AND case_pk=(SELECT case_pk FROM candidates WHERE pk=?)",
        (rater_pk, candidate_pk),
    )


def set_skipped(conn: sqlite3.Connection, rater_pk: int, case_pk: int, skipped: bool = True) -> None:
    if skipped:
        conn.execute(
            "INSERT OR REPLACE INTO skips(rater_pk, case_pk, updated_at) VALUES (?, ?, ?)",
            (rater_pk, case_pk, time.time()),
        )
    else:
        conn.execute("DELETE FROM skips WHERE rater_pk=? AND case_pk=?", (rater_pk, case_pk))
