"""Stocks and their prices as the stages read them."""

from __future__ import annotations

import sqlite_utils


def stock_name(db: sqlite_utils.Database, stock: str) -> str:
    """The name prompts call a stock by (the stock list's), else its code."""
    row = db.execute("SELECT name FROM stocks WHERE stock = ?", [stock]).fetchone()
    return row[0] if row and row[0] else stock


def has_prices(db: sqlite_utils.Database, stock: str) -> bool:
    """Whether memory holds any close of `stock` (else its trading days are unknown)."""
    return db.execute("SELECT 1 FROM prices WHERE stock = ? LIMIT 1", [stock]).fetchone() is not None
