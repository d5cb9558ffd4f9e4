"""Ingest: read real price and text files as they come, and write them to memory.

Each reader (`readers`; rows, parsers and the format registry in `base`) turns one file (or tweet
folder) into rows plus a count of what it skipped and why. `import_prices` / `import_texts` write every file of one command in a single
transaction: a bad file leaves the database as it was.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path

import sqlite_utils

from sep.errors import BadInput
from sep.guard import injection_of
from sep.memory import transaction
from sep.memory.stocks import (add_prices, add_texts, allow_text, closes_of, ensure_stocks, log_import, stock_names,
                               text_row)
from sep.ingest.base import (SN2_TICKERS, ImportReport, ParsedFile, PriceFormat, PriceRow, StockRow, TextFormat,
                             TextRow, add_price, local_timestamp, normalise_stock, parse_date, price_formats,
                             register_format, text_formats)
from sep.ingest.readers import read_prices, read_texts

__all__ = ["ImportReport", "ParsedFile", "add_price", "parse_date", "PriceFormat", "PriceRow", "StockRow", "TextFormat", "TextRow", "import_prices",
           "import_texts", "local_timestamp", "normalise_stock", "price_formats", "read_prices", "read_texts", "register_format", "text_formats",
           "unflag", "write_day", "write_texts"]
from sep.tradingdays import KRX_CODE, market_of

# ---------------------------------------------------------------- writing to memory


def _ensure_stocks(db: sqlite_utils.Database, stocks: Iterable[str], names: dict[str, str] | None = None) -> None:
    ensure_stocks(db, {s: ((names or {}).get(s), market_of(s)) for s in set(stocks)})


def _log_import(db: sqlite_utils.Database, kind: str, report: ImportReport) -> None:
    log_import(db, kind, report.path, report.format, report.rows_read, report.rows_added, sum(report.skipped.values()))


def write_stock_list(db: sqlite_utils.Database, parsed: ParsedFile) -> ImportReport:
    """Name every listed stock (a later list's name wins); no prices are touched."""
    rows: list[StockRow] = parsed.rows
    names = {r.stock: r.name for r in rows}
    before = stock_names(db)
    _ensure_stocks(db, names, names)
    changed = sum(1 for s, n in names.items() if before.get(s) != n)
    return ImportReport(str(parsed.path), parsed.format, sorted(names), len(rows), changed,
                        len(names) - changed, parsed.skipped, None, None)


def write_prices(db: sqlite_utils.Database, parsed: ParsedFile) -> ImportReport:
    if parsed.format == "stock-list":
        return write_stock_list(db, parsed)
    rows: list[PriceRow] = parsed.rows
    existing: dict[tuple[str, str], float] = {}
    for s in {r.stock for r in rows}:
        existing.update(((s, d), c) for d, c in closes_of(db, s).items())
    added = add_prices(db, [(r.stock, r.date, r.open, r.high, r.low, r.close, r.volume, parsed.path.name) for r in rows])
    conflicts = sum(
        1 for r in rows if (r.stock, r.date) in existing and abs(existing[(r.stock, r.date)] - r.close) > 1e-9 * r.close
    )
    _ensure_stocks(db, {r.stock for r in rows}, parsed.names)
    dates = sorted(r.date for r in rows)
    return ImportReport(str(parsed.path), parsed.format, sorted({r.stock for r in rows}), len(rows), added,
                        len(rows) - added, parsed.skipped, dates[0], dates[-1], conflicts)


def write_texts(db: sqlite_utils.Database, parsed: ParsedFile) -> ImportReport:
    rows: list[TextRow] = parsed.rows
    added, injections = add_texts(db, [(r.stock, r.source, r.published_at, r.date, r.title, r.body, r.url, r.author,
                                        parsed.path.name, r.content_key(), injection_of(r.title, r.body, semantic=False))
                                       for r in rows])
    _ensure_stocks(db, {r.stock for r in rows})
    dates = sorted(r.date for r in rows)
    return ImportReport(str(parsed.path), parsed.format, sorted({r.stock for r in rows}), len(rows), added,
                        len(rows) - added, parsed.skipped, dates[0], dates[-1], injections=injections)


def read_all(paths: list[Path], read: Callable[[Path], ParsedFile],
             progress: Callable[[Path], None] | None = None) -> list[ParsedFile]:
    """Read every file before anything is written, so a bad file fails fast and harmlessly."""
    if not paths:
        raise BadInput("No files given.")
    for p in paths:
        if not p.exists():
            raise BadInput(f"{p} does not exist.")
    parsed = []
    for p in paths:
        parsed.append(read(p))
        if progress:
            progress(p)
    return parsed


def check_codes(db: sqlite_utils.Database, parsed: list[ParsedFile], new_stock: bool = False) -> None:
    """Refuse a code that is neither a KRX code nor a known ticker, unless `new_stock`.

    A typo such as 00593A would otherwise file rows under a stock nobody asked for. Known:
    the stocks table, stock lists of this same import, and the sn2 dataset's tickers."""
    if new_stock:
        return
    listed = {r.stock for p in parsed if p.format == "stock-list" for r in p.rows}
    codes = {r.stock for p in parsed if p.format != "stock-list" for r in p.rows}
    unknown = sorted(c for c in codes - listed - SN2_TICKERS if not KRX_CODE.fullmatch(c))
    if unknown:
        stored = set(stock_names(db))
        unknown = [c for c in unknown if c not in stored]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise BadInput(
            f"Unknown stock code {unknown[0]}{more}: KRX codes are six digits (005930) and other tickers must be "
            "in an imported stock list; pass --new-stock if it is really a new stock."
        )


def write_all(db: sqlite_utils.Database, kind: str, parsed: list[ParsedFile], *,
              new_stock: bool = False) -> list[ImportReport]:
    """Write parsed files in one transaction and log each in `imports`."""
    check_codes(db, parsed, new_stock)
    write = {"prices": write_prices, "texts": write_texts}[kind]
    reports = []
    try:
        with transaction(db):
            for item in parsed:
                report = write(db, item)
                _log_import(db, kind, report)
                reports.append(report)
    except sqlite3.DatabaseError as exc:
        raise BadInput(f"The memory database refused the import, nothing was written: {exc}.") from None
    return reports


def write_day(db: sqlite_utils.Database, prices: ParsedFile, texts: ParsedFile) -> list[ImportReport]:
    """A fetched day's prices and texts in one transaction, each logged in `imports`: all or nothing."""
    reports = []
    with transaction(db):
        for kind, parsed, write in (("prices", prices, write_prices), ("texts", texts, write_texts)):
            if parsed.rows:
                reports.append(write(db, parsed))
                _log_import(db, kind, reports[-1])
    return reports


def import_prices(
    db: sqlite_utils.Database, paths: list[Path], *, fmt: str | None = None, stock: str | None = None,
    new_stock: bool = False, progress: Callable[[Path], None] | None = None,
) -> list[ImportReport]:
    """Import price files and stock lists (format auto-detected unless `fmt`); all or nothing."""
    return write_all(db, "prices", read_all(paths, lambda p: read_prices(p, fmt, stock), progress), new_stock=new_stock)


def import_texts(
    db: sqlite_utils.Database, paths: list[Path], *, source: str | None = None, stock: str | None = None,
    new_stock: bool = False, progress: Callable[[Path], None] | None = None,
) -> list[ImportReport]:
    """Import text files (Naver board/news/report, sn2 tweets, generic CSV/JSONL); all or nothing."""
    return write_all(db, "texts", read_all(paths, lambda p: read_texts(p, source, stock), progress), new_stock=new_stock)


def unflag(db: sqlite_utils.Database, text_id: int) -> dict:
    """Clear a text's injection flag for good: no later import or dedup flags it again, and its day
    is left for the next `sep dedup` to decide anew, with the text among the candidates."""
    row = text_row(db, text_id)
    if row is None:
        raise BadInput(f"No text {text_id} in memory.")
    text = {k: row[k] for k in ("id", "stock", "date", "source", "title")}
    text["was"] = row["injection"] or injection_of(row["title"], row["body"])  # the detector's verdict is not stored
    allow_text(db, text_id, text["stock"], text["date"])
    return text
