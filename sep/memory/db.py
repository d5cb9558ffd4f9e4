"""The database itself: one SQLite file, WAL mode, numbered migrations (migrations/, the simonw/llm
pattern), explicit all-or-nothing transactions."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path

import sqlite_utils

BUSY_TIMEOUT_MS = 30_000


class MemoryError_(RuntimeError):
    """The database can't be used as asked (missing, not a database)."""


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every migration, in number order."""
    folder = files("sep.memory").joinpath("migrations")
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
            if db.conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                continue  # another process opening the same new memory applied it while this one waited
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
        _wal(conn)
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise MemoryError_(f"{path} is held by another process ({exc}); try again when it is done." if _locked(exc)
                           else f"{path} is not a SQLite database ({exc}).") from exc
    db = sqlite_utils.Database(conn)
    migrate(db)
    return db


def _locked(exc: sqlite3.DatabaseError) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _wal(conn: sqlite3.Connection) -> None:
    """WAL mode, which the file keeps once any connection has set it. While another process sets up
    the same new file, SQLite answers "database is locked" at once (it skips the busy handler where
    waiting could deadlock), so this waits and tries again, up to the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if not _locked(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# a write that must land in the same transaction as a store's own (a batch's record that its day is done)
AlsoWrite = Callable[[sqlite_utils.Database], None]


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


def insert_row(db: sqlite_utils.Database, verb: str, table: str, row: object) -> None:
    values = asdict(row)
    db.execute(f"{verb} INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
               list(values.values()))


def database_path(db: sqlite_utils.Database) -> str | None:
    """The file behind an open memory (None for an in-memory one, which other threads can't open)."""
    row = next((r for r in db.execute("PRAGMA database_list").fetchall() if r[1] == "main"), None)
    return row[2] if row and row[2] else None


def scope(stocks: Sequence[str], start: str | None, end: str | None, prefix: str = "") -> tuple[str, list]:
    """The WHERE condition for rows of these stocks dated start..end (a bound left None is open), and
    its parameters; `prefix` qualifies the columns ("p.")."""
    where, args = [f"{prefix}stock IN ({','.join('?' * len(stocks))})"], list(stocks)
    if start:
        where.append(f"{prefix}date >= ?"), args.append(start)
    if end:
        where.append(f"{prefix}date <= ?"), args.append(end)
    return " AND ".join(where), args
