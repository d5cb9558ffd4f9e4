"""Long-term memory: one SQLite file, WAL mode, numbered migrations (the simonw/llm pattern).

Plain tables so that Datasette or the sqlite3 shell can browse them. Every stage reads and
writes through `open_memory`, so the schema is always current.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path

import sqlite_utils

BUSY_TIMEOUT_MS = 30_000


class MemoryError_(RuntimeError):
    """The database can't be used as asked (missing, not a database)."""


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every migration, in number order."""
    folder = files("sep").joinpath("migrations")
    items = sorted(p for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in items]


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply migrations not yet recorded in `_migrations`; return the names applied."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    done = {row[0] for row in db.execute("SELECT name FROM _migrations").fetchall()}
    applied = []
    for name, sql in migration_files():
        if name in done:
            continue
        with transaction(db):  # one migration, one transaction
            for statement in _split_sql(sql):
                db.conn.execute(statement)
            db.conn.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, now_iso())
            )
        applied.append(name)
    return applied


def _split_sql(sql: str) -> list[str]:
    """Split a migration into statements (sqlite3.complete_statement knows where each ends)."""
    statements, buf = [], ""
    for line in sql.splitlines(keepends=True):
        if line.strip().startswith("--") and not buf.strip():
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements


def open_memory(path: Path | str, *, must_exist: bool = False) -> sqlite_utils.Database:
    """Open (and migrate) the memory database. `must_exist` refuses to create a new file."""
    path = Path(path)
    if str(path) != ":memory:":
        if must_exist and not path.exists():
            raise MemoryError_(f"No memory database at {path}: import data first (sep data import ...).")
        path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode: transactions are explicit (see `transaction`), so DDL is transactional too.
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise MemoryError_(f"{path} is not a SQLite database ({exc}).") from exc
    db = sqlite_utils.Database(conn)
    migrate(db)
    return db


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """All or nothing: an exception inside rolls every write back.

    Write with `db.execute`/`executemany` inside; sqlite-utils' own writers commit on
    their own and would end the transaction early.
    """
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the stance cache (sep.stances)

StanceKey = tuple[str, str, str]  # (text key, model, prompt version)


def cached_stances(db: sqlite_utils.Database, keys: list[StanceKey]) -> dict[StanceKey, list[float]]:
    """The stored raw probabilities (positive, neutral, negative) of the keys memory has."""
    out: dict[StanceKey, list[float]] = {}
    wanted = list(dict.fromkeys(keys))
    for i in range(0, len(wanted), 300):  # SQLite caps the parameters of one statement
        chunk = wanted[i:i + 300]
        where = " OR ".join(["(text_key = ? AND model = ? AND prompt_version = ?)"] * len(chunk))
        for row in db.execute(f"SELECT text_key, model, prompt_version, p_positive, p_neutral, p_negative "
                              f"FROM stances WHERE {where}", [v for k in chunk for v in k]).fetchall():
            out[(row[0], row[1], row[2])] = [row[3], row[4], row[5]]
    return out


def store_stances(db: sqlite_utils.Database, rows: list[tuple[StanceKey, list[float]]]) -> None:
    """Judgements stored in one transaction (a repeat of a stored key is ignored)."""
    with transaction(db):
        for key, probs in rows:
            db.execute("INSERT OR IGNORE INTO stances (text_key, model, prompt_version, p_positive, p_neutral, "
                       "p_negative, created_at) VALUES (?,?,?,?,?,?,?)", [*key, *probs, now_iso()])


# ---------------------------------------------------------------- the ledger (sep.ledger)

GENESIS = "0" * 64  # the prev_hash of a ledger's first entry


def canonical(entry: dict) -> str:
    """The one serialisation an entry is hashed in: sorted keys, no spaces, UTF-8 characters as they are."""
    import json

    return json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def entry_hash(prev_hash: str, entry_json: str) -> str:
    """sha256 over the previous entry's hash, a newline and this entry's canonical JSON."""
    import hashlib

    return hashlib.sha256(f"{prev_hash}\n{entry_json}".encode()).hexdigest()


@dataclass
class LedgerRow:
    """One stored ledger entry as it is in the table (verify reads the raw row, not a re-serialisation)."""

    id: int
    stock: str
    date: str
    model: str
    entry_json: str
    prev_hash: str
    hash: str

    @property
    def entry(self) -> dict:
        import json

        return json.loads(self.entry_json)


class LedgerStore:
    """Every statement of the ledger and its outcomes: append in one transaction, read, score."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def exists(self, stock: str, date: str, model: str | None = None) -> bool:
        """Whether (stock, D) has an entry: by `model`, or by any model when None."""
        if model is None:
            return self.db.execute("SELECT 1 FROM ledger WHERE stock = ? AND date = ?", [stock, date]).fetchone() \
                is not None
        return self.db.execute("SELECT 1 FROM ledger WHERE stock = ? AND date = ? AND model = ?",
                               [stock, date, model]).fetchone() is not None

    def append(self, entry: dict) -> LedgerRow:
        """Chain `entry` to the current head and insert it, all in one transaction (a crash leaves nothing)."""
        text = canonical(entry)
        with transaction(self.db):
            head = self.db.execute("SELECT hash FROM ledger ORDER BY id DESC LIMIT 1").fetchone()
            prev = head[0] if head else GENESIS
            digest = entry_hash(prev, text)
            cur = self.db.conn.execute(
                "INSERT INTO ledger (stock, date, model, entry, prev_hash, hash) VALUES (?,?,?,?,?,?)",
                [entry["stock"], entry["date"], entry["model"], text, prev, digest])
            return LedgerRow(cur.lastrowid, entry["stock"], entry["date"], entry["model"], text, prev, digest)

    def rows(self) -> list[LedgerRow]:
        """Every entry in append order."""
        return [LedgerRow(*r) for r in self.db.execute(
            "SELECT id, stock, date, model, entry, prev_hash, hash FROM ledger ORDER BY id").fetchall()]

    def outcomes(self) -> dict[int, dict]:
        """entry id -> its outcome (target_day, last_close, target_close, ret, actual, scored_at)."""
        cols = ("target_day", "last_close", "target_close", "ret", "actual", "scored_at")
        return {r[0]: dict(zip(cols, r[1:])) for r in self.db.execute(
            f"SELECT entry_id, {', '.join(cols)} FROM ledger_outcomes").fetchall()}

    def store_outcomes(self, rows: list[tuple[int, str, float, float, float, str]]) -> int:
        """(entry id, target day, last close, target close, return, actual) stored once each; returns how
        many were new."""
        with transaction(self.db):
            before = self.db.execute("SELECT COUNT(*) FROM ledger_outcomes").fetchone()[0]
            for row in rows:
                self.db.execute("INSERT OR IGNORE INTO ledger_outcomes (entry_id, target_day, last_close, target_close, "
                                "ret, actual, scored_at) VALUES (?,?,?,?,?,?,?)", [*row, now_iso()])
            return self.db.execute("SELECT COUNT(*) FROM ledger_outcomes").fetchone()[0] - before

    def has_close_after(self, stock: str, date: str) -> str | None:
        """The first day after `date` with a close of `stock` in memory, if any (then it is too late)."""
        row = self.db.execute("SELECT MIN(date) FROM prices WHERE stock = ? AND date > ?", [stock, date]).fetchone()
        return row[0] if row else None


# ---------------------------------------------------------------- predictions, reflections, pairs (sep.agents, sep.predict)


@dataclass
class PredictionRow:
    """One row of `predictions`: a trial of the reflect loop (trial 0 is the forecast) or a best-of-n answer."""

    stock: str
    date: str
    trial: int
    target_day: str
    actual: str | None
    label: str | None
    explanation: str
    confidence: float | None
    correct: bool
    response: str
    prompt: str
    model: str
    created_at: str
    method: str = "reflect"
    flags: str | None = None  # comma-joined quality flags
    evidence: str | None = None  # JSON of the cited items
    candidates: str | None = None  # best-of-n: JSON of every candidate
    data_end: str | None = None
    window_stance: float | None = None


@dataclass
class ReflectionRow:
    """A lesson written after a miss (only an unflagged one is ever recalled)."""

    stock: str
    date: str
    target_day: str
    trial: int
    reflection: str
    model: str
    created_at: str
    flags: str | None = None
    detail: str | None = None  # JSON: the misled item and why, the overlooked one, the text as written


@dataclass
class PairRow:
    """A wrong→right retry: training data for the reward model and the policies."""

    stock: str
    date: str
    prompt: str
    chosen: str
    rejected: str
    chosen_label: str | None
    rejected_label: str | None
    model: str
    created_at: str


def _insert(db: sqlite_utils.Database, verb: str, table: str, row: object) -> None:
    from dataclasses import asdict

    values = asdict(row)
    db.execute(f"{verb} INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
               list(values.values()))


class PredictionStore:
    """Every write of `predictions`, `reflections` and `pairs`: a decision is stored in one transaction,
    and a rerun of the same (stock, D, method, model) replaces its predictions."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def lessons(self, stock: str, date: str, before: str | None = None, limit: int = 200) -> list[tuple[str, str]]:
        """(lesson, day) of the unflagged reflections a decision at the end of `date` may recall: the outcome
        was known by D (target day <= D), newest first; `before`: only those stored before that moment."""
        since = "AND created_at < ? " if before else ""
        return [tuple(r) for r in self.db.execute(
            "SELECT reflection, date FROM reflections WHERE stock = ? AND target_day <= ? AND date < ? "
            f"AND flags IS NULL {since}ORDER BY date DESC LIMIT ?",
            [stock, date, date, *([before] if before else []), limit]).fetchall()]

    def pairs(self) -> list[tuple[str, str, str, str, str]]:
        """(prompt, chosen, rejected, stock, date) of every pair, in stock and day order."""
        return [tuple(r) for r in self.db.execute(
            "SELECT prompt, chosen, rejected, stock, date FROM pairs ORDER BY stock, date, id").fetchall()]

    def save(self, predictions: list[PredictionRow], reflections: list[ReflectionRow] = (),
             pairs: list[PairRow] = ()) -> None:
        """One decision's rows (all of one stock, D, method and model), replacing an earlier run's."""
        if not predictions:
            return
        first = predictions[0]
        with transaction(self.db):
            self.db.execute("DELETE FROM predictions WHERE stock = ? AND date = ? AND method = ? AND model = ?",
                            [first.stock, first.date, first.method, first.model])
            for row in predictions:
                _insert(self.db, "INSERT", "predictions", row)
            for row in reflections:
                _insert(self.db, "INSERT OR REPLACE", "reflections", row)
            for row in pairs:
                _insert(self.db, "INSERT OR IGNORE", "pairs", row)


# ---------------------------------------------------------------- summaries (sep.agents)


@dataclass
class SummaryRow:
    """One cached summary of a (stock, day): keyed by the texts it read, the model and the prompt version."""

    stock: str
    date: str
    text_hash: str
    n_texts: int
    model: str
    prompt_version: str
    summary: str
    created_at: str
    method: str = "model"  # model, or extractive (asked for, or standing in for a flagged answer)
    flags: str | None = None  # the flags of the model's answer that was replaced
    attempt: str | None = None  # that answer as written


class SummaryStore:
    """The summary cache: each (stock, day, texts, model, prompt version) is asked for once."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def get(self, stock: str, date: str, text_hash: str, model: str, prompt_version: str) -> SummaryRow | None:
        row = self.db.execute(
            "SELECT stock, date, text_hash, n_texts, model, prompt_version, summary, created_at, method, flags, attempt "
            "FROM summaries WHERE stock=? AND date=? AND text_hash=? AND model=? AND prompt_version=?",
            [stock, date, text_hash, model, prompt_version]).fetchone()
        return SummaryRow(*row) if row else None

    def put(self, row: SummaryRow) -> None:
        """Stored once (a concurrent writer of the same key wins; both wrote the same answer)."""
        with transaction(self.db):
            _insert(self.db, "INSERT OR IGNORE", "summaries", row)


def stock_name(db: sqlite_utils.Database, stock: str) -> str:
    """The name prompts call a stock by (the stock list's), else its code."""
    row = db.execute("SELECT name FROM stocks WHERE stock = ?", [stock]).fetchone()
    return row[0] if row and row[0] else stock
