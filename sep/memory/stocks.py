"""Stocks, their prices and texts: what `sep data import` writes (and logs in `imports`), what the
stages ask about them, and the board pages crawled."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlite_utils

from sep.memory.db import now_iso, transaction


def stock_name(db: sqlite_utils.Database, stock: str) -> str:
    """The name prompts call a stock by (the stock list's), else its code."""
    row = db.execute("SELECT name FROM stocks WHERE stock = ?", [stock]).fetchone()
    return row[0] if row and row[0] else stock


def has_prices(db: sqlite_utils.Database, stock: str) -> bool:
    """Whether memory holds any close of `stock` (else its trading days are unknown)."""
    return db.execute("SELECT 1 FROM prices WHERE stock = ? LIMIT 1", [stock]).fetchone() is not None


def has_texts(db: sqlite_utils.Database, stock: str) -> bool:
    """Whether memory holds any text of `stock` (else there is nothing to deduplicate)."""
    return db.execute("SELECT 1 FROM texts WHERE stock = ? LIMIT 1", [stock]).fetchone() is not None


def crawled_pages(db: sqlite_utils.Database, stock: str, day: str) -> set[int]:
    """The board list pages of `stock` already stored on `day` (a rerun skips them)."""
    return {r[0] for r in db.execute("SELECT page FROM crawl_pages WHERE stock = ? AND day = ?", [stock, day])}


def record_crawled_page(db: sqlite_utils.Database, stock: str, day: str, page: int, posts: int) -> None:
    """One list page stored (call inside the transaction that stored its posts)."""
    db.execute("INSERT OR REPLACE INTO crawl_pages (stock, day, page, posts, at) VALUES (?,?,?,?,?)",
               [stock, day, page, posts, now_iso()])


def closes_before(db: sqlite_utils.Database, stock: str, day: str, n: int, *, inclusive: bool = True) -> list[float]:
    """The last `n` closes of `stock` on or before `day` (before it when not `inclusive`), oldest first."""
    op = "<=" if inclusive else "<"
    return [c for (c,) in db.execute(f"SELECT close FROM prices WHERE stock = ? AND date {op} ? ORDER BY date DESC "
                                     "LIMIT ?", [stock, day, n]).fetchall()][::-1]


def ensure_stocks(db: sqlite_utils.Database, stocks: dict[str, tuple[str | None, str]]) -> None:
    """stock → (name, market): each known afterwards (a given name replaces the stored one)."""
    for stock in sorted(stocks):
        name, market = stocks[stock]
        db.execute("INSERT INTO stocks (stock, name, market) VALUES (?, ?, ?) "
                   "ON CONFLICT(stock) DO UPDATE SET name = coalesce(excluded.name, stocks.name)", [stock, name, market])


def stock_names(db: sqlite_utils.Database) -> dict[str, str]:
    """Every known stock and its name ('' when it has none)."""
    return dict(db.execute("SELECT stock, coalesce(name, '') FROM stocks").fetchall())


def log_import(db: sqlite_utils.Database, kind: str, path: str, fmt: str, read: int, added: int, skipped: int) -> None:
    db.execute("INSERT INTO imports (kind, path, format, rows_read, rows_added, rows_skipped, at) VALUES (?,?,?,?,?,?,?)",
               [kind, path, fmt, read, added, skipped, now_iso()])


def closes_of(db: sqlite_utils.Database, stock: str) -> dict[str, float]:
    """date → close of every stored day of `stock`."""
    return dict(db.execute("SELECT date, close FROM prices WHERE stock = ?", [stock]).fetchall())


def add_prices(db: sqlite_utils.Database, rows: Sequence[tuple]) -> int:
    """(stock, date, open, high, low, close, volume, source) rows, a stored day kept as it is; how many were new."""
    before = db.execute("SELECT count(*) FROM prices").fetchone()[0]
    db.conn.executemany("INSERT OR IGNORE INTO prices (stock, date, open, high, low, close, volume, source) "
                        "VALUES (?,?,?,?,?,?,?,?)", rows)
    return db.execute("SELECT count(*) FROM prices").fetchone()[0] - before


def add_texts(db: sqlite_utils.Database, rows: Iterable[tuple]) -> tuple[int, int]:
    """(stock, source, published_at, date, title, body, url, author, imported_from, content_key, injection) rows,
    a stored text (same content key) kept as it is; (new texts, new ones flagged as injections)."""
    def counts() -> tuple[int, int]:
        return db.execute("SELECT count(*), count(injection) FROM texts").fetchone()

    before = counts()
    db.conn.executemany("INSERT OR IGNORE INTO texts (stock, source, published_at, date, title, body, url, author, "
                        "imported_from, content_key, injection) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    after = counts()
    return after[0] - before[0], after[1] - before[1]


def text_row(db: sqlite_utils.Database, text_id: int) -> dict | None:
    row = db.execute("SELECT id, stock, date, source, title, injection, body FROM texts WHERE id = ?",
                     [text_id]).fetchone()
    return dict(zip(("id", "stock", "date", "source", "title", "injection", "body"), row)) if row else None


def allow_text(db: sqlite_utils.Database, text_id: int, stock: str, date: str) -> None:
    """A text's injection flag cleared for good, and its day left for the next dedup to decide anew."""
    with transaction(db):
        db.execute("UPDATE texts SET injection = NULL, injection_allowed = 1, "
                   "flag = CASE WHEN flag = 'injection' THEN NULL ELSE flag END WHERE id = ?", [text_id])
        db.execute("UPDATE texts SET is_representative = NULL WHERE stock = ? AND date = ?", [stock, date])


def price_days(db: sqlite_utils.Database, stock: str) -> list[str]:
    """Every day with a close of `stock`, in order."""
    return [r[0] for r in db.execute("SELECT date FROM prices WHERE stock = ? ORDER BY date", [stock])]


def priced_stocks(db: sqlite_utils.Database, limit: int = 20) -> list[str]:
    """The first `limit` stocks with prices (for a hint), in order."""
    return [r[0] for r in db.execute("SELECT DISTINCT stock FROM prices ORDER BY stock LIMIT ?", [limit])]


def closes_on(db: sqlite_utils.Database, stock: str, days: Sequence[str]) -> dict[str, float]:
    """date → close of `stock` on these days (the ones it has)."""
    return dict(db.execute(f"SELECT date, close FROM prices WHERE stock = ? AND date IN ({','.join('?' * len(days))})",
                           [stock, *days]).fetchall())


def texts_between(db: sqlite_utils.Database, stock: str, start: str, end: str) -> list[tuple]:
    """(id, source, date, published_at, title, body, url, is_representative, injection, injection_allowed) of the
    texts of `stock` dated start..end, by date, time and id."""
    return db.execute("SELECT id, source, date, published_at, title, body, url, is_representative, injection, "
                      "injection_allowed FROM texts WHERE stock = ? AND date >= ? AND date <= ? "
                      "ORDER BY date, published_at, id", [stock, start, end]).fetchall()
