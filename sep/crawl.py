"""Naver Finance discussion board (종목토론방) crawler: online only, polite, resumable.

The parser (`parse_board_list`) is pure and tested offline on a copy of the list-page
markup. The fetcher waits between requests, retries with backoff, and writes each page in
its own transaction with a checkpoint, so a crash loses at most one page and a rerun on the
same day picks up where it stopped.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date as Date
from pathlib import Path

import sqlite_utils

from sep.ingest import ParsedFile, PriceRow, TextRow, local_timestamp, write_day, write_texts
from sep.memory import crawled_pages, record_crawled_page, transaction

BOARD_URL = "https://finance.naver.com/item/board.naver?code={code}&page={page}"
USER_AGENT = "sep/0.1 (research; polite crawler; +https://github.com/)"

_ROW = re.compile(r"<tr[^>]*>(.*?)</tr>", re.S | re.I)
_DATE = re.compile(r'<span class="tah p10 gray03">\s*(\d{4}\.\d{2}\.\d{2} \d{2}:\d{2})\s*</span>')
_TITLE = re.compile(r'<td class="title">\s*<a href="([^"]*board_read[^"]*)"[^>]*?(?:title="([^"]*)")?[^>]*>(.*?)</a>', re.S)
_AUTHOR = re.compile(r'<td class="p11[^"]*">\s*(?:<a[^>]*>)?\s*(.*?)\s*(?:</a>)?\s*</td>', re.S)
_COUNTS = re.compile(r'<(?:span|strong) class="tah p10[^"]*">\s*([\d,]+)\s*</(?:span|strong)>')
_NID = re.compile(r"[?&]nid=(\d+)")
_TAGS = re.compile(r"<[^>]+>")


@dataclass
class BoardPost:
    nid: str
    stock: str
    posted_at: str  # as shown, YYYY.MM.DD HH:MM (KST)
    title: str
    author: str | None
    views: int | None
    agree: int | None
    disagree: int | None
    url: str

    def as_text_row(self) -> TextRow:
        published, day = local_timestamp(self.posted_at.replace(" ", "T"), self.stock)
        return TextRow(self.stock, "naver-board", day, self.title, published, None, self.url, self.author)


def parse_board_list(page_html: str, stock: str) -> list[BoardPost]:
    """Posts on one list page, newest first; separator and header rows are ignored."""
    posts = []
    for row in _ROW.findall(page_html):
        date_m, title_m = _DATE.search(row), _TITLE.search(row)
        if not (date_m and title_m):
            continue
        href = html.unescape(title_m[1])
        nid = _NID.search(href)
        title = html.unescape(title_m[2] or _TAGS.sub("", title_m[3])).strip()
        if not (nid and title):
            continue
        after_title = row[title_m.end():]
        author_m = _AUTHOR.search(after_title)
        counts = [int(c.replace(",", "")) for c in _COUNTS.findall(after_title)]
        counts += [None] * (3 - len(counts))
        posts.append(
            BoardPost(
                nid=nid[1], stock=stock, posted_at=date_m[1], title=title,
                author=html.unescape(_TAGS.sub("", author_m[1])).strip() or None if author_m else None,
                views=counts[0], agree=counts[1], disagree=counts[2],
                url="https://finance.naver.com" + href if href.startswith("/") else href,
            )
        )
    return posts


def crawl_board(
    db: sqlite_utils.Database,
    stock: str,
    pages: int,
    *,
    delay: float = 1.0,
    restart: bool = False,
    fetch: Callable[[str], str] | None = None,
    on_page: Callable[[int, int], None] | None = None,
) -> dict:
    """Fetch list pages 1..pages and store their posts; skips pages done today unless `restart`."""
    fetch = fetch or http_fetch
    today = Date.today().isoformat()
    done = set() if restart else crawled_pages(db, stock, today)
    added = seen = 0
    for page in range(1, pages + 1):
        if page in done:
            continue
        posts = parse_board_list(fetch(BOARD_URL.format(code=stock, page=page)), stock)
        with transaction(db):
            report = write_texts(db, ParsedFile(Path(f"naver-board:{stock}:p{page}"), "naver-board-html",
                                                 [p.as_text_row() for p in posts])) if posts else None
            record_crawled_page(db, stock, today, page, len(posts))
        seen += len(posts)
        added += report.rows_added if report else 0
        if on_page:
            on_page(page, len(posts))
        if not posts:
            break  # past the last page
        if page < pages:
            time.sleep(delay)
    return {"stock": stock, "pages": pages, "posts_seen": seen, "posts_added": added, "skipped_pages": len(done)}


def http_fetch(url: str) -> str:
    """GET with a timeout and exponential-backoff retries; Naver serves EUC-KR or UTF-8."""
    import httpx
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

    @retry(stop=stop_after_attempt(4), wait=wait_exponential(min=2, max=30),
           retry=retry_if_exception_type(httpx.HTTPError), reraise=True)
    def get() -> str:
        resp = httpx.get(url, headers={"User-Agent": USER_AGENT, "Referer": "https://finance.naver.com/"},
                         timeout=20, follow_redirects=True)
        resp.raise_for_status()
        charset = resp.charset_encoding or ("euc-kr" if b"euc-kr" in resp.content[:2000].lower() else "utf-8")
        return resp.content.decode(charset, errors="replace")

    return get()


# ---------------------------------------------------------------- a day's data, fetched all or nothing

NEWS_URL = "https://finance.naver.com/item/news_news.naver?code={code}&page={page}&sm=title_entity_id.basic"
_NEWS_ROW = re.compile(r'<td class="title">\s*<a href="([^"]*news_read[^"]*)"[^>]*>(.*?)</a>.*?'
                       r'<td class="info">(.*?)</td>\s*<td class="date">\s*(\d{4}\.\d{2}\.\d{2} \d{2}:\d{2})\s*</td>',
                       re.S | re.I)


class PageLayoutChanged(RuntimeError):
    """A page no longer has the markup sep reads: nothing of that day is stored."""


def parse_news_list(page_html: str, stock: str) -> list[TextRow]:
    """News titles on one Naver Finance news-list page (table.type5: title, press, date and time, KST)."""
    if 'class="type5"' not in page_html:
        raise PageLayoutChanged("no news table (table.type5)")
    rows = []
    for href, title, press, when in _NEWS_ROW.findall(page_html):
        title = html.unescape(_TAGS.sub("", title)).strip()
        if not title:
            continue
        published, day = local_timestamp(when.replace(" ", "T"), stock)
        url = html.unescape(href)
        rows.append(TextRow(stock, "naver-news", day, title, published, None,
                            "https://finance.naver.com" + url if url.startswith("/") else url,
                            html.unescape(_TAGS.sub("", press)).strip() or None))
    return rows


def fetch_pages(kind: str, url: str, stock: str, since: str, max_pages: int, *, delay: float,
                fetch: Callable[[str], str]) -> list[TextRow]:
    """Pages 1.. of a board or news list until the oldest row is older than `since` (a day), at most
    `max_pages`. A first page without the expected markup is a changed layout, named in one sentence."""
    out: list[TextRow] = []
    for page in range(1, max_pages + 1):
        page_url = url.format(code=stock, page=page)
        text = fetch(page_url)
        try:
            if kind == "board":
                if 'class="type2"' not in text:
                    raise PageLayoutChanged("no post table (table.type2)")
                rows = [p.as_text_row() for p in parse_board_list(text, stock)]
            else:
                rows = parse_news_list(text, stock)
        except PageLayoutChanged as exc:
            raise PageLayoutChanged(f"The {kind} page {page_url} no longer has the layout sep reads ({exc}); "
                                    f"nothing of {stock}'s day was stored.") from None
        if page == 1 and not rows and kind == "board":
            raise PageLayoutChanged(f"The board page {page_url} lists no posts (its rows changed shape); "
                                    f"nothing of {stock}'s day was stored.")
        out += rows
        if not rows or min(r.date for r in rows) < since:
            break
        if page < max_pages:
            time.sleep(delay)
    return [r for r in out if r.date >= since]


def fetch_prices(stock: str, start: str, end: str) -> list[PriceRow]:
    """Daily prices of a KRX stock from FinanceDataReader (Naver's chart feed; the live extra)."""
    from sep.errors import require_extra

    require_extra("live", "sep ledger run --live")
    import FinanceDataReader as fdr

    frame = fdr.DataReader(stock, start, end)
    if frame is None or frame.empty or "Close" not in frame:
        raise PageLayoutChanged(f"FinanceDataReader returned no prices of {stock} for {start}..{end} (the price "
                                "feed changed or the code is unknown); nothing of its day was stored.")
    rows = []
    for day, r in frame.iterrows():
        if float(r["Close"]) > 0 and float(r.get("Volume", 1) or 0) > 0:
            rows.append(PriceRow(stock, day.strftime("%Y-%m-%d"), float(r["Open"]), float(r["High"]), float(r["Low"]),
                                 float(r["Close"]), float(r["Volume"])))
    return rows


def store_day(db: sqlite_utils.Database, stock: str, prices: list[PriceRow], texts: list[TextRow], day: str) -> dict:
    """A fetched day's prices and texts written in one transaction: all of it or none."""
    reports = write_day(db, ParsedFile(Path(f"live:{stock}:{day}:prices"), "financedatareader", prices),
                        ParsedFile(Path(f"live:{stock}:{day}:texts"), "naver-live", texts))
    by_format = {r.format: r for r in reports}
    p, t = by_format.get("financedatareader"), by_format.get("naver-live")
    return {"prices_added": p.rows_added if p else 0, "texts_added": t.rows_added if t else 0,
            "injections": t.injections if t else 0}
