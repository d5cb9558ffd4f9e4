"""Ingest: read real price and text files as they come, and write them to memory.

Each reader turns one file (or tweet folder) into rows plus a count of what it skipped and
why. `import_prices` / `import_texts` write every file of one command in a single
transaction: a bad file leaves the database as it was.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlite_utils

from sep.errors import BadInput
from sep.guard import injection_of
from sep.memory import transaction
from sep.memory.stocks import (add_prices, add_texts, allow_text, closes_of, ensure_stocks, log_import, stock_names,
                               text_row)
from sep.settings import plugins
from sep.tradingdays import KRX_CODE, market_of, market_tz

TEXT_SOURCES = ("naver-board", "news", "report", "tweet")
CODE_IN_URL = re.compile(r"[?&]code=(\d{6})")
# The 55 tickers of the SEP paper's sn2 dataset (koa-fin/sn2 @ b58aa27, price/*.txt): known
# without a stock list, so its price files and tweet folders import as they come.
SN2_TICKERS = frozenset(
    "AAPL ABBV AEP AMT AMZN APD AVGO BABA BAC BHP BRK-A CAT CCI CMCSA COP COST CVX D DIS DUK EQIX GOOG HD HON "
    "JNJ JPM KO LLY LMT MA META MSFT NEE NVDA PEP PFE PG PLD PSA RIO SHEL SHW SO TM TSLA TSM TTE UNH UNP UPS V "
    "VALE VZ WMT XOM".split()
)


@dataclass
class PriceRow:
    stock: str
    date: str
    open: float | None
    high: float | None
    low: float | None
    close: float
    volume: float | None


@dataclass
class StockRow:
    """One line of a stock list: a code and the name prompts call it by."""

    stock: str
    name: str


@dataclass
class TextRow:
    stock: str
    source: str
    date: str
    title: str
    published_at: str | None = None
    body: str | None = None
    url: str | None = None
    author: str | None = None

    def content_key(self) -> str:
        """Same content, same key: re-importing a file adds nothing."""
        parts = (self.stock, self.source, self.published_at or self.date, self.title, self.body or "", self.url or "")
        return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()


@dataclass
class ParsedFile:
    """One input file read into rows, with what was skipped and why."""

    path: Path
    format: str
    rows: list = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    line: int = 0  # the line being read, for error messages
    names: dict[str, str] = field(default_factory=dict)  # company names the file states (QuantKang `name`)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n


@dataclass
class ImportReport:
    """What one file did to memory; printed by the CLI and stored in `imports`."""

    path: str
    format: str
    stocks: list[str]
    rows_read: int
    rows_added: int
    already_present: int
    skipped: dict[str, int]
    first_date: str | None
    last_date: str | None
    conflicts: int = 0  # price rows already present with a different close (the first kept)
    injections: int = 0  # texts that address the model, flagged and kept out of every prompt (sep.guard)


# ---------------------------------------------------------------- small parsers


def normalise_stock(value: object) -> str:
    """KRX codes are six digits (spreadsheets drop leading zeros); tickers are upper-case."""
    text = str(value).strip()
    if re.fullmatch(r"\d{1,6}(\.0)?", text):
        return text.removesuffix(".0").zfill(6)
    if re.fullmatch(r"[Aa]\d{6}", text):  # HTS/DART style "A005930"
        return text[1:]
    return text.upper()


def parse_date(value: object) -> str:
    """Dates as the sources write them: 2022-06-01, 20220601, 2022.06.01(.), 2022/06/01."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, Date):
        return value.isoformat()
    text = str(value).strip().rstrip(".")
    m = re.fullmatch(r"(\d{4})[-./]?(\d{1,2})[-./]?(\d{1,2})", text)
    if not m:
        raise ValueError(f"not a date: {value!r}")
    return Date(int(m[1]), int(m[2]), int(m[3])).isoformat()


def local_timestamp(value: str, stock: str) -> tuple[str, str]:
    """(published_at ISO with offset, local day) for a timestamp; naive ones are local time."""
    text = value.strip().replace("Z", "+00:00")
    m = re.fullmatch(r"(\d{4})\.(\d{2})\.(\d{2})[T ](\d{2}):(\d{2})", text)  # Naver board
    if m:
        text = f"{m[1]}-{m[2]}-{m[3]}T{m[4]}:{m[5]}"
    moment = datetime.fromisoformat(text)
    zone = ZoneInfo(market_tz(stock))
    moment = moment.replace(tzinfo=zone) if moment.tzinfo is None else moment.astimezone(zone)
    return moment.isoformat(timespec="minutes"), moment.date().isoformat()


def _number(value: object) -> float | None:
    if value is None:
        return None
    text = str(value).strip().replace(",", "")
    if text in ("", "null", "NaN", "nan", "-"):
        return None
    return float(text)


def _stock_from_name(path: Path) -> str | None:
    """005930.csv, 005930_D.csv or AAPL.csv name their stock."""
    stem = path.stem.split("_")[0]
    if re.fullmatch(r"\d{6}", stem) or re.fullmatch(r"[A-Z][A-Z.\-]{0,9}", stem):
        return normalise_stock(stem)
    return None


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"Can't read {path}: {exc.strerror or exc}.") from None
    for encoding in ("utf-8-sig", "cp949"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise BadInput(f"{path} is not text in UTF-8 or CP949; is it the right file?")


# ---------------------------------------------------------------- prices


@dataclass(frozen=True)
class PriceFormat:
    """A price file format: how its first line is recognised and how the file is read.

    `read(parsed, text, stock)` appends `PriceRow`s (via `_add_price`) or `StockRow`s to `parsed`.
    With `needs_stock` the file doesn't name its stock, so `stock` is --stock or the file's name."""

    name: str
    detect: Callable[[str], bool]  # the first non-empty line
    read: Callable[[ParsedFile, str, str | None], None]
    needs_stock: bool = True


@dataclass(frozen=True)
class TextFormat:
    """A text file format: which paths it takes (tried in registration order) and how it reads one."""

    name: str
    accepts: Callable[[Path], bool]
    read: Callable[[Path, str | None, str | None], ParsedFile]  # (path, source, stock) -> rows


PRICE_READERS: dict[str, PriceFormat] = {}
TEXT_READERS: dict[str, TextFormat] = {}


def register_format(fmt: PriceFormat | TextFormat) -> PriceFormat | TextFormat:
    """Add a reader; third parties use the `sep.formats` entry point group (an object of either class)."""
    (PRICE_READERS if isinstance(fmt, PriceFormat) else TEXT_READERS)[fmt.name] = fmt
    return fmt


def _load_plugins() -> None:
    """Formats of installed plugins (`sep.formats`), each an object of either class; a built-in name wins."""
    for fmt in plugins("sep.formats").values():
        if fmt.name not in (PRICE_READERS if isinstance(fmt, PriceFormat) else TEXT_READERS):
            register_format(fmt)


def price_formats() -> dict[str, PriceFormat]:
    _load_plugins()
    return PRICE_READERS


def text_formats() -> dict[str, TextFormat]:
    _load_plugins()
    return TEXT_READERS


def detect_price_format(path: Path, text: str) -> str:
    first = next((line for line in text.splitlines() if line.strip()), "")
    found = next((f.name for f in price_formats().values() if f.detect(first)), None)
    if found is None:
        raise BadInput(
            f"Unrecognised price file {path}: expected FinanceDataReader, QuantKang, Yahoo CSV, sn2 TXT or a stock "
            "list (see `sep data import prices --help`).")
    return found


def _head(line: str) -> str:
    """A header line as the detectors compare it: lower case, no spaces."""
    return line.lower().replace(" ", "")


def _is_stock_list(head: str) -> bool:
    """A `code,name[,market]` header, or arclien's headerless watchlist `name,code,added,...`."""
    cols = next(csv.reader([head]), [])
    if {"code", "name"} <= set(cols) and "close" not in cols:
        return True
    return len(cols) >= 3 and bool(re.fullmatch(r"\d{6}|[a-z][a-z0-9.\-]{0,9}", cols[1])) \
        and bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", cols[2]))


def read_prices(path: Path, fmt: str | None = None, stock: str | None = None) -> ParsedFile:
    """Read one price file in any supported format into rows (zero and halt rows skipped).

    A stock list (`stock_list.csv` beside the price files) reads as `StockRow`s, so a folder
    glob imports the names with the prices."""
    text = _read_text(path)
    if not text.strip():
        raise BadInput(f"{path} is empty.")
    fmt = fmt or detect_price_format(path, text)
    reader = price_formats().get(fmt)
    if reader is None:
        raise BadInput(f"Unknown price format '{fmt}': choose one of {', '.join(price_formats())}.")
    parsed = ParsedFile(path, fmt)
    try:
        reader.read(parsed, text, _require_stock(stock or _stock_from_name(path), path) if reader.needs_stock else stock)
    except (ValueError, KeyError, IndexError) as exc:
        where = f" (line {parsed.line})" if parsed.line else ""
        raise BadInput(f"{path} does not read as {fmt} prices{where}: {str(exc).rstrip('.')}.") from None
    if not parsed.rows:
        raise BadInput(f"{path} holds no usable price rows.")
    return parsed


def _read_stock_list(parsed: ParsedFile, text: str, stock: str | None = None) -> None:
    """`code,name` with a header, or arclien's headerless `name,code,added,lang,n,targets`."""
    records = list(csv.reader(io.StringIO(text)))
    header = [c.strip().lower() for c in records[0]]
    if {"code", "name"} <= set(header):
        code_at, name_at, records, first = header.index("code"), header.index("name"), records[1:], 2
    else:
        code_at, name_at, first = 1, 0, 1
    for parsed.line, rec in enumerate(records, first):
        if not any(c.strip() for c in rec):
            continue
        code, name = normalise_stock(rec[code_at]), rec[name_at].strip()
        if not code or not name:
            raise ValueError("a row without a code or a name")
        parsed.rows.append(StockRow(code, name))


def _require_stock(stock: str | None, path: Path) -> str:
    if not stock:
        raise BadInput(f"Can't tell which stock {path} is: pass --stock CODE.")
    return normalise_stock(stock)


def _add_price(parsed: ParsedFile, row: PriceRow) -> None:
    if any(v is not None and v < 0 for v in (row.open, row.high, row.low, row.close, row.volume)):
        raise ValueError(f"a negative price or volume on {row.date}")  # bad data, not a holiday
    if row.close is None or row.close <= 0:
        parsed.skip("no close (holiday/zero row)")
    elif row.volume == 0:
        parsed.skip("zero volume (halt)")
    else:
        parsed.rows.append(row)


def _read_fdr(parsed: ParsedFile, text: str, stock: str) -> None:
    """Headerless Date,Open,High,Low,Close,Volume,Change; weekends and holidays are all zeros."""
    for parsed.line, rec in enumerate(csv.reader(io.StringIO(text)), 1):
        if not rec:
            continue
        d, o, h, lo, c, v = rec[0], *map(_number, rec[1:6])
        if not any((o, h, lo, c, v)):
            parsed.skip("all-zero row (weekend/holiday)")
            continue
        _add_price(parsed, PriceRow(stock, parse_date(d), o, h, lo, c, v))


def _read_quantkang(parsed: ParsedFile, text: str, stock: str | None) -> None:
    """date as YYYYMMDD, open, high, low, close, volume, ticker, code, name, interval."""
    for parsed.line, rec in enumerate(csv.DictReader(io.StringIO(text)), 2):
        code = normalise_stock(stock or rec["code"])
        if (rec.get("name") or "").strip():
            parsed.names[code] = rec["name"].strip()
        _add_price(
            parsed,
            PriceRow(code, parse_date(rec["date"]), _number(rec["open"]), _number(rec["high"]),
                     _number(rec["low"]), _number(rec["close"]), _number(rec["volume"])),
        )


def _read_yahoo(parsed: ParsedFile, text: str, stock: str) -> None:
    """Date,Open,High,Low,Close,Adj Close,Volume (Close is split-adjusted)."""
    for parsed.line, rec in enumerate(csv.DictReader(io.StringIO(text)), 2):
        close = _number(rec["Close"])
        if close is None:
            parsed.skip("null row")
            continue
        _add_price(
            parsed,
            PriceRow(stock, parse_date(rec["Date"]), _number(rec["Open"]), _number(rec["High"]),
                     _number(rec["Low"]), close, _number(rec["Volume"])),
        )


def _read_sn2(parsed: ParsedFile, text: str, stock: str) -> None:
    """sn2 preprocessed TXT, newest first: date, close, open, high, low (each relative to the
    previous close, p/p_prev - 1), change, volume. Rebuilt as a close index starting at 100,
    so returns and labels are exact even though price levels are not."""
    recs = [line.split("\t") for line in text.splitlines() if line.strip()]
    recs.sort(key=lambda r: r[0])
    prev = 100.0
    for r in recs:
        c, o, h, lo = (float(x) for x in r[1:5])
        close = prev * (1 + c)
        _add_price(parsed, PriceRow(stock, parse_date(r[0]), prev * (1 + o), prev * (1 + h),
                                    prev * (1 + lo), close, _number(r[6])))
        prev = close


# ---------------------------------------------------------------- texts


def read_texts(path: Path, source: str | None = None, stock: str | None = None) -> ParsedFile:
    """Read one text file (or sn2 tweet folder) into rows; the format is told by its columns."""
    if source is not None and source not in TEXT_SOURCES:
        raise BadInput(f"Unknown source '{source}': choose one of {', '.join(TEXT_SOURCES)}.")
    if not path.exists():
        raise BadInput(f"{path} does not exist.")
    formats = text_formats()
    fallback = formats["csv"]  # takes any file: tried last, after plugins
    reader = next(f for f in [*(f for f in formats.values() if f is not fallback), fallback] if f.accepts(path))
    parsed = reader.read(path, source, stock)
    if not parsed.rows:
        raise BadInput(f"{path} holds no usable texts.")
    return parsed


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _read_csv_texts(path: Path, source: str | None, stock: str | None) -> ParsedFile:
    text = _read_text(path)
    if not text.strip():
        raise BadInput(f"{path} is empty.")
    reader = csv.DictReader(io.StringIO(text))
    cols = {c.strip().lower() for c in (reader.fieldnames or [])}
    if {"date", "title", "content", "url"} <= cols:
        return _read_naver_board(path, reader, source, stock)
    if "title" in cols and ({"date", "published_at"} & cols):
        return _read_generic(path, reader, source, stock, "csv")
    raise BadInput(
        f"Unrecognised text file {path}: expected a Naver board CSV or columns "
        "stock, date|published_at, title[, body, url, source]."
    )


def _read_naver_board(path: Path, reader: csv.DictReader, source: str | None, stock: str | None) -> ParsedFile:
    """종목토론방 export: date (YYYY.MM.DDTHH:MM, KST), title, content, url, prev/next links."""
    parsed = ParsedFile(path, "naver-board-csv")
    for rec in reader:
        rec = {k.strip().lower(): v for k, v in rec.items() if k}
        title = _clean(rec.get("title"))
        url = _clean(rec.get("url"))
        code = stock or _code_in(url)
        if not title:
            parsed.skip("no title")
            continue
        if not code:
            raise BadInput(f"{path}: no code= in the post links; pass --stock CODE.")
        code = normalise_stock(code)
        try:
            published, day = local_timestamp(rec["date"], code)
        except (ValueError, KeyError):
            parsed.skip("unreadable date")
            continue
        parsed.rows.append(TextRow(code, source or "naver-board", day, title, published, _clean(rec.get("content")), url))
    return parsed


def _code_in(url: str | None) -> str | None:
    m = CODE_IN_URL.search(url or "")
    return m[1] if m else None


def _read_naver_xlsx(path: Path, source: str | None, stock: str | None) -> ParsedFile:
    """Naver news / news-search / analyst-report spreadsheets (kr-finbert layout)."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a broken file
        raise BadInput(f"Can't open {path} as a spreadsheet: {exc}.") from None
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    book.close()
    if not rows or not any(rows[0] or ()):
        raise BadInput(f"{path} is empty.")
    header = [str(c).strip().lower() if c is not None else "" for c in rows[0]]
    if "title" not in header or "date" not in header:
        raise BadInput(f"Unrecognised spreadsheet {path}: expected columns date and title (and link, press).")
    col = {name: i for i, name in enumerate(header)}
    kind = source or ("report" if "report" in path.stem.lower() else "news")
    parsed = ParsedFile(path, f"naver-{kind}-xlsx")
    for rec in rows[1:]:
        get = lambda name: rec[col[name]] if name in col and col[name] < len(rec) else None  # noqa: E731
        title = _clean(get("title"))
        if not title:
            parsed.skip("no title")
            continue
        url = _clean(get("link"))
        code = stock or _code_in(url)
        if not code:
            raise BadInput(f"Can't tell which stock {path} is about: its rows have no code= link; pass --stock CODE.")
        try:
            day = parse_date(get("date"))
        except ValueError:
            parsed.skip("unreadable date")
            continue
        parsed.rows.append(TextRow(normalise_stock(code), kind, day, title, None, None, url, _clean(get("press"))))
    return parsed


def _jsonl_records(path: Path) -> Iterable[dict]:
    text = _read_text(path)
    if not text.strip():
        raise BadInput(f"{path} is empty.")
    if text.lstrip().startswith("["):
        try:
            yield from json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}.") from None
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise BadInput(f"{path} line {n} is not JSON.") from None


def _read_generic(path: Path, records: Iterable[dict], source: str | None, stock: str | None, fmt: str) -> ParsedFile:
    """Columns stock, date|published_at, title[, body, url, source]; one row per text."""
    parsed = ParsedFile(path, f"generic-{fmt}")
    for rec in records:
        if not isinstance(rec, dict):
            raise BadInput(f"{path}: each record must be an object with stock, date and title.")
        rec = {str(k).strip().lower(): v for k, v in rec.items()}
        code = stock or _clean(rec.get("stock"))
        title = _clean(rec.get("title"))
        if not code:
            raise BadInput(f"{path}: a row has no stock; add a stock column or pass --stock CODE.")
        if not title:
            parsed.skip("no title")
            continue
        code = normalise_stock(code)
        try:
            if _clean(rec.get("published_at")):
                published, day = local_timestamp(str(rec["published_at"]), code)
            else:
                published, day = None, parse_date(rec.get("date"))
        except ValueError:
            parsed.skip("unreadable date")
            continue
        src = source or _clean(rec.get("source")) or "news"
        parsed.rows.append(TextRow(code, src, day, title, published, _clean(rec.get("body")), _clean(rec.get("url")),
                                   _clean(rec.get("author"))))
    return parsed


def _read_tweet_folder(path: Path, stock: str | None) -> ParsedFile:
    """sn2 raw tweets: <TICKER>/<YYYY-MM-DD> files of JSON lines (id, text, created_at UTC).

    The day is re-taken from created_at in the market's time zone, not from the file name.
    """
    parsed = ParsedFile(path, "sn2-tweets")
    day_files = [p for p in path.iterdir() if p.is_file() and re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.name)]
    folders = [(path.name, day_files)] if day_files else [
        (sub.name, [p for p in sub.iterdir() if p.is_file()]) for sub in sorted(path.iterdir()) if sub.is_dir()
    ]
    if not any(files for _, files in folders):
        raise BadInput(f"{path} has no tweet files (expected TICKER/YYYY-MM-DD JSON lines).")
    for ticker, files in folders:
        code = normalise_stock(stock or ticker)
        for f in sorted(files):
            for line in f.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    tweet = json.loads(line)
                    published, day = local_timestamp(tweet["created_at"], code)
                except (json.JSONDecodeError, KeyError, ValueError):
                    parsed.skip("unreadable tweet")
                    continue
                text = _clean(tweet.get("text"))
                if not text:
                    parsed.skip("empty tweet")
                    continue
                url = f"https://twitter.com/i/status/{tweet['id']}" if tweet.get("id") else None
                parsed.rows.append(TextRow(code, "tweet", day, text, published, None, url, _clean(tweet.get("author_id"))))
    return parsed


# The built-in readers, in the order they are tried (plugins come after them).
for _fmt in (
    PriceFormat("quantkang", lambda line: _head(line).startswith("date,open,high,low,close,volume,ticker,code"),
                _read_quantkang, needs_stock=False),
    PriceFormat("yahoo", lambda line: _head(line).startswith("date,open,high,low,close,adjclose,volume"), _read_yahoo),
    PriceFormat("fdr", lambda line: bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}(,[-+0-9.eE]+){6}", line.strip())), _read_fdr),
    PriceFormat("sn2", lambda line: bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}(\t[-+0-9.eE]+){6}", line.strip())), _read_sn2),
    PriceFormat("stock-list", lambda line: _is_stock_list(_head(line)), _read_stock_list, needs_stock=False),
    TextFormat("sn2-tweets", Path.is_dir, lambda path, source, stock: _read_tweet_folder(path, stock)),
    TextFormat("naver-xlsx", lambda path: path.suffix.lower() in (".xlsx", ".xlsm"), _read_naver_xlsx),
    TextFormat("generic-jsonl", lambda path: path.suffix.lower() in (".jsonl", ".json", ".ndjson"),
               lambda path, source, stock: _read_generic(path, _jsonl_records(path), source, stock, "jsonl")),
    TextFormat("csv", lambda path: True, _read_csv_texts),
):
    register_format(_fmt)


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
