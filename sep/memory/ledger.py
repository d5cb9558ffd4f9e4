"""The ledger of pre-registered forecasts (`sep.ledger`): append-only, hash-chained, its outcomes apart."""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from sep.memory.db import now_iso, transaction

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
