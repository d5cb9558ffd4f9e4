"""What a reader makes (price, stock and text rows, a parsed file and its skips), the small parsers
every reader shares, and the registry of file formats (built-in and `sep.formats` plugins)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo


from sep.errors import BadInput
from sep.settings import plugins
from sep.tradingdays import market_tz

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


def to_number(value: object) -> float | None:
    if value is None:
        return None
    text = str(value).strip().replace(",", "")
    if text in ("", "null", "NaN", "nan", "-"):
        return None
    return float(text)


def stock_from_name(path: Path) -> str | None:
    """005930.csv, 005930_D.csv or AAPL.csv name their stock."""
    stem = path.stem.split("_")[0]
    if re.fullmatch(r"\d{6}", stem) or re.fullmatch(r"[A-Z][A-Z.\-]{0,9}", stem):
        return normalise_stock(stem)
    return None


def read_file_text(path: Path) -> str:
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


def add_price(parsed: ParsedFile, row: PriceRow) -> None:
    """A price row a reader found: kept, or counted as skipped (a holiday's empty row, a halt); a negative
    price is bad data and fails the file."""
    if any(v is not None and v < 0 for v in (row.open, row.high, row.low, row.close, row.volume)):
        raise ValueError(f"a negative price or volume on {row.date}")  # bad data, not a holiday
    if row.close is None or row.close <= 0:
        parsed.skip("no close (holiday/zero row)")
    elif row.volume == 0:
        parsed.skip("zero volume (halt)")
    else:
        parsed.rows.append(row)



@dataclass(frozen=True)
class PriceFormat:
    """A price file format: how its first line is recognised and how the file is read.

    `read(parsed, text, stock)` appends `PriceRow`s (via `add_price`) or `StockRow`s to `parsed`.
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


