"""The built-in readers: price files (FinanceDataReader, quantkang, Yahoo, sn2, a stock list) and
text files (Naver board CSV and Finance xlsx, generic JSONL/CSV, sn2 tweet folders), each turning
one file into rows plus a count of what it skipped and why."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from pathlib import Path


from sep.errors import BadInput
from sep.ingest.base import (add_price, CODE_IN_URL, TEXT_SOURCES, ParsedFile, PriceFormat, PriceRow, StockRow, TextFormat,
                             TextRow, local_timestamp, normalise_stock, parse_date, price_formats, read_file_text,
                             register_format, stock_from_name, text_formats, to_number)

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
    text = read_file_text(path)
    if not text.strip():
        raise BadInput(f"{path} is empty.")
    fmt = fmt or detect_price_format(path, text)
    reader = price_formats().get(fmt)
    if reader is None:
        raise BadInput(f"Unknown price format '{fmt}': choose one of {', '.join(price_formats())}.")
    parsed = ParsedFile(path, fmt)
    try:
        reader.read(parsed, text, _require_stock(stock or stock_from_name(path), path) if reader.needs_stock else stock)
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


def _read_fdr(parsed: ParsedFile, text: str, stock: str) -> None:
    """Headerless Date,Open,High,Low,Close,Volume,Change; weekends and holidays are all zeros."""
    for parsed.line, rec in enumerate(csv.reader(io.StringIO(text)), 1):
        if not rec:
            continue
        d, o, h, lo, c, v = rec[0], *map(to_number, rec[1:6])
        if not any((o, h, lo, c, v)):
            parsed.skip("all-zero row (weekend/holiday)")
            continue
        add_price(parsed, PriceRow(stock, parse_date(d), o, h, lo, c, v))


def _read_quantkang(parsed: ParsedFile, text: str, stock: str | None) -> None:
    """date as YYYYMMDD, open, high, low, close, volume, ticker, code, name, interval."""
    for parsed.line, rec in enumerate(csv.DictReader(io.StringIO(text)), 2):
        code = normalise_stock(stock or rec["code"])
        if (rec.get("name") or "").strip():
            parsed.names[code] = rec["name"].strip()
        add_price(
            parsed,
            PriceRow(code, parse_date(rec["date"]), to_number(rec["open"]), to_number(rec["high"]),
                     to_number(rec["low"]), to_number(rec["close"]), to_number(rec["volume"])),
        )


def _read_yahoo(parsed: ParsedFile, text: str, stock: str) -> None:
    """Date,Open,High,Low,Close,Adj Close,Volume (Close is split-adjusted)."""
    for parsed.line, rec in enumerate(csv.DictReader(io.StringIO(text)), 2):
        close = to_number(rec["Close"])
        if close is None:
            parsed.skip("null row")
            continue
        add_price(
            parsed,
            PriceRow(stock, parse_date(rec["Date"]), to_number(rec["Open"]), to_number(rec["High"]),
                     to_number(rec["Low"]), close, to_number(rec["Volume"])),
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
        add_price(parsed, PriceRow(stock, parse_date(r[0]), prev * (1 + o), prev * (1 + h),
                                    prev * (1 + lo), close, to_number(r[6])))
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
    text = read_file_text(path)
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
    text = read_file_text(path)
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


