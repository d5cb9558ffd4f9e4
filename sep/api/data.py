"""The memory, data imports and dedup, one call each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from sep.api.common import settings_or_env
from sep.errors import BadInput, ordered, require_extra
from sep.ingest import normalise_stock
from sep.settings import Progress, Settings
from sep.tradingdays import market_of

# ---------------------------------------------------------------- memory and data


def open_memory(path: str | Path | None = None, *, must_exist: bool = False) -> sqlite_utils.Database:
    """The SQLite long-term memory at `path` (default: `SEP_DB` or memory/sep.db), migrated."""
    from sep.memory import open_memory as _open

    return _open(Path(path) if path is not None else Settings().db, must_exist=must_exist)


@dataclass
class Imported:
    """What each file of one import added (all files were written in one transaction)."""

    files: list[Any]  # sep.ingest.ImportReport

    def as_json(self) -> list[dict]:
        return [asdict(f) for f in self.files]


def _file_progress(progress: Progress | None, what: str, n: int) -> Callable[[Path], None] | None:
    if progress is None:
        return None
    done = iter(range(1, n + 1))
    return lambda path: progress(what, next(done), n)


def import_prices(db: sqlite_utils.Database, paths: Sequence[str | Path], *, format: str | None = None,
                  stock: str | None = None, new_stock: bool = False, progress: Progress | None = None) -> Imported:
    """Price files (FinanceDataReader, QuantKang, Yahoo, sn2) and stock lists; all or nothing."""
    from sep import ingest

    paths = [Path(p) for p in paths]
    return Imported(ingest.import_prices(db, paths, fmt=format, stock=stock, new_stock=new_stock,
                                         progress=_file_progress(progress, "reading prices", len(paths))))


def import_texts(db: sqlite_utils.Database, paths: Sequence[str | Path], *, source: str | None = None,
                 stock: str | None = None, new_stock: bool = False, progress: Progress | None = None) -> Imported:
    """Naver board/news/report files, sn2 tweet folders, generic CSV/JSONL; all or nothing."""
    from sep import ingest

    paths = [Path(p) for p in paths]
    return Imported(ingest.import_texts(db, paths, source=source, stock=stock, new_stock=new_stock,
                                        progress=_file_progress(progress, "reading texts", len(paths))))


def import_sample(db: sqlite_utils.Database) -> Imported:
    """The bundled demo sample (005930 prices for 2022, its name, May 2022 news titles)."""
    from sep.sample import sample_files

    prices, texts = sample_files()
    return Imported(import_prices(db, prices).files + import_texts(db, texts).files)


def unflag_text(db: sqlite_utils.Database, text_id: int) -> dict:
    """Clear a text's injection flag for good (a false positive a user disputes) → the text's row."""
    from sep.ingest import unflag

    return unflag(db, text_id)


def crawl_naver_board(db: sqlite_utils.Database, stock: str, *, pages: int = 5, delay: float = 1.0,
                      restart: bool = False, on_page: Callable[[int, int], None] | None = None) -> Any:
    """Fetch 종목토론방 list pages into memory (online only), one checkpointed page at a time."""
    from sep.crawl import crawl_board

    code = normalise_stock(stock)
    if market_of(code) != "XKRX":
        raise BadInput(f"'{stock}' is not a KRX code; the Naver board needs one like 005930.")
    return crawl_board(db, code, pages, delay=delay, restart=restart, on_page=on_page)


def show_window(db: sqlite_utils.Database, stock: str, date: str, *, settings: Settings | None = None) -> Any:
    """The decision window of D: the texts a prompt may read, the last close and the target."""
    from sep.window import decision_window, parse_day

    return decision_window(db, normalise_stock(stock), parse_day(date), settings_or_env(settings).window_days)


# ---------------------------------------------------------------- dedup


def deduplicate(db: sqlite_utils.Database, stock: str, *, start: str | None = None, end: str | None = None,
                refit: bool = False, settings: Settings | None = None, progress: Progress | None = None,
                **parts: Any) -> Any:
    """Deduplicate one stock's texts (exact, near, topics, off-topic) → `DedupReport`.

    `parts` go to `Deduplicator` (embedder, umap_model, hdbscan_model, vectorizer_model, rules)."""
    from sep.window import parse_day

    require_extra("dedup", "sep dedup")
    from sep.dedup import DedupConfig, Deduplicator
    from sep.memory import has_texts

    cfg = settings_or_env(settings)
    code = normalise_stock(stock)
    start, end = (parse_day(start) if start else None), (parse_day(end) if end else None)
    ordered(start, end)
    if not has_texts(db, code):
        raise BadInput(f"No texts of {code} in memory; import some with `sep data import texts`.")
    dedup = Deduplicator(db, DedupConfig.from_settings(cfg), threads=cfg.threads, cache_dir=cfg.cache_dir,
                         progress=progress, **parts)
    return dedup.run(code, start, end, refit=refit)


