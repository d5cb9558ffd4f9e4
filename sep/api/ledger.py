"""The pre-registered ledger, one call per command."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from sep.api.common import settings_or_env
from sep.api.decisions import make_llm
from sep.errors import BadInput, require_extra
from sep.ingest import normalise_stock
from sep.settings import Progress, Settings
from sep.tradingdays import market_of

# ---------------------------------------------------------------- the pre-registered ledger


def ledger_add(db: sqlite_utils.Database, stock: str, date: str, *, settings: Settings | None = None, llm: Any = None,
               progress: Progress | None = None, now: Any = None) -> Any:
    """Decide D (forecast only, as `reflect`'s trial 0) before its target close exists and append it to
    the hash-chained ledger → `sep.ledger.Added`. Refused in one sentence when the target close is in
    memory already, D's session has not closed, or (stock, D, model) has an entry."""
    from datetime import datetime, timezone

    from sep import ledger
    from sep.memory import LedgerStore
    from sep.window import parse_day

    cfg = settings_or_env(settings)
    code, day = normalise_stock(stock), parse_day(date)
    now = now or datetime.now(timezone.utc)
    ledger.check_decidable(LedgerStore(db), code, day, now)  # before a model loads
    llm = llm if llm is not None else make_llm(cfg, progress)
    return ledger.add(db, cfg, llm, code, day, now=now, progress=progress)


def ledger_run(db: sqlite_utils.Database, stocks: Sequence[str], *, date: str | None = None, live: bool = False,
               board_pages: int | None = None, news_pages: int | None = None, delay: float | None = None,
               settings: Settings | None = None,
               fetch: Callable[[str], str] | None = None, now: Any = None, progress: Progress | None = None) -> Any:
    """The daily job (after the close): with `live`, fetch prices (the live extra), board posts and news
    titles; score earlier entries; deduplicate; pre-register each stock's D → `sep.ledger.DailyRun`."""
    from sep import ledger

    cfg = settings_or_env(settings)
    codes = [normalise_stock(s) for s in stocks]
    if not codes:
        raise BadInput("Give at least one stock (--stocks 005930,000660).")
    if live:
        foreign = [c for c in codes if market_of(c) != "XKRX"]
        if foreign:
            raise BadInput(f"--live reads Naver's KRX pages, and {', '.join(foreign)} is not a KRX code; import its "
                           "prices and texts, then run without --live (or `sep ledger add`).")
        require_extra("live", "sep ledger run --live")
    require_extra("dedup", "sep ledger run")

    def pick(value: float | int | None, fallback: float | int) -> float | int:
        return fallback if value is None else value

    return ledger.run(db, cfg, lambda c: make_llm(c, progress), codes, date=date, live=live,
                      board_pages=pick(board_pages, ledger.BOARD_PAGES), news_pages=pick(news_pages, ledger.NEWS_PAGES),
                      delay=pick(delay, ledger.PAGE_DELAY), fetch=fetch, now=now, progress=progress)


def ledger_score(db: sqlite_utils.Database) -> dict:
    """Store the outcome of every ledger entry whose target close is now in memory (entries never change)."""
    from sep import ledger

    return ledger.score(db)


def ledger_verify(db: sqlite_utils.Database, head: str | None = None) -> Any:
    """Recompute the ledger's hash chain → `sep.ledger.Verified` (the first broken entry, the head hash).
    `head`: a hash published earlier, which must still be in the chain."""
    from sep import ledger

    return ledger.verify(db, head)


def ledger_export(db: sqlite_utils.Database, out: str | Path) -> dict:
    """The ledger as JSONL, each entry exactly as hashed, checkable without sep (docs/jobs.md)."""
    from sep import ledger

    return ledger.export(db, Path(out))


def ledger_show(db: sqlite_utils.Database, *, cutoff: str | None = None) -> Any:
    """Every entry with its hash, and once scored its outcome and kind (pre-registered or a replay)."""
    from sep import ledger

    return ledger.show(db, cutoff)


def ledger_evaluate(db: sqlite_utils.Database, *, cutoff: str | None = None, settings: Settings | None = None) -> dict:
    """Score pre-registered entries only: after the model's cutoff, before it, and replays apart."""
    from sep import ledger

    return ledger.evaluate(db, cutoff=cutoff or settings_or_env(settings).cutoff, seed=settings_or_env(settings).seed)
