"""The summary cache (`sep.agents`): each (stock, day, texts, model, prompt version) summarised once."""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from sep.memory.db import insert_row, transaction

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

    def texts_between(self, stock: str, start: str, end: str) -> list[str]:
        """Every stored summary of `stock` on the days start..end (any model or prompt version)."""
        return [r[0] for r in self.db.execute("SELECT summary FROM summaries WHERE stock = ? AND date >= ? AND date <= ?",
                                              [stock, start, end])]

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM summaries").fetchone()[0]

    def put(self, row: SummaryRow) -> None:
        """Stored once (a concurrent writer of the same key wins; both wrote the same answer)."""
        with transaction(self.db):
            insert_row(self.db, "INSERT OR IGNORE", "summaries", row)
