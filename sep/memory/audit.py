"""What `sep audit` reads across the stores (flags of every generated text in scope, the texts' kinds)
and its own cache: the faithfulness variants the model answered."""

from __future__ import annotations

import sqlite_utils

from sep.memory.db import now_iso, scope, transaction

# each kind of generated text an audit counts flags on: its table and the rows of that kind
FLAGGED = {"summary": ("summaries", ""), "forecast": ("predictions", "trial = 0 AND "),
           "retry": ("predictions", "trial > 0 AND "), "reflection": ("reflections", "")}


def stored_flags(db: sqlite_utils.Database, kind: str, stocks: list[str], start: str | None,
                 end: str | None) -> list[tuple[str, str | None]]:
    """(model, flags) of every stored text of `kind` (FLAGGED) of these stocks in [start, end]."""
    table, only = FLAGGED[kind]
    where, args = scope(stocks, start, end)
    return db.execute(f"SELECT model, flags FROM {table} WHERE {only}{where}", args).fetchall()


def text_sources(db: sqlite_utils.Database, ids: list[int]) -> list[str]:
    """The distinct kinds (sources) of these texts, sorted."""
    if not ids:
        return []
    return sorted({k for (k,) in db.execute(f"SELECT DISTINCT source FROM texts WHERE id IN ({','.join('?' * len(ids))})",
                                            ids)})


class FaithfulnessStore:
    """The faithfulness test's answers, one per (stock, day, model, evidence key, variant): asked once."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def get(self, stock: str, date: str, model: str, key: str, variant: str) -> tuple[str | None, float | None] | None:
        row = self.db.execute("SELECT label, p_up FROM faithfulness WHERE stock = ? AND date = ? AND model = ? AND key = ? "
                              "AND variant = ?", [stock, date, model, key, variant]).fetchone()
        return (row[0], row[1]) if row else None

    def put(self, stock: str, date: str, model: str, key: str, variant: str, label: str | None, p_up: float | None,
            response: str) -> None:
        with transaction(self.db):
            self.db.execute("INSERT OR REPLACE INTO faithfulness (stock, date, model, key, variant, label, p_up, response, "
                            "created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                            [stock, date, model, key, variant, label, p_up, response, now_iso()])
