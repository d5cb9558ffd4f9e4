"""sep data: import, crawl and inspect what long-term memory holds; sep pairs export."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from sep import api
from sep.cli.common import (
    DateArg,
    DbOpt,
    JsonOpt,
    StockArg,
    StockOpt,
    WindowDaysOpt,
    app,
    bars,
    console,
    fail,
    print_reports,
    settings,
    stage_progress,
    user_errors,
)
from sep.errors import BadInput

data_app = typer.Typer(help="Import, crawl and inspect the data in long-term memory.", no_args_is_help=True)
import_app = typer.Typer(help="Import price or text files (formats are detected).", no_args_is_help=True)
crawl_app = typer.Typer(help="Fetch texts from the web (online only).", no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.add_typer(import_app, name="import")
data_app.add_typer(crawl_app, name="crawl")


NewStockOpt = Annotated[bool, typer.Option("--new-stock", help="Allow a code that is neither six KRX digits nor a known ticker (a typo such as 00593A is refused otherwise).")]


def _run_import(do_import: Callable[..., Any], db: Path | None, as_json: bool) -> None:
    """Run `sep.import_prices`/`import_texts` with a bar per file read, then print what each file added."""
    with user_errors():
        memory = api.open_memory(settings(db=db).db)
        progress = bars(log_start=False)
        with progress:
            imported = do_import(memory, progress=stage_progress(progress))
    print_reports(imported.files, as_json)


@import_app.command("prices")
def import_prices_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Price files: FinanceDataReader CSV, QuantKang CSV, Yahoo CSV, sn2 TXT; stock lists.")],
    stock: StockOpt = None,
    format: Annotated[Optional[str], typer.Option("--format", help="fdr | quantkang | yahoo | sn2 | stock-list (default: detect).")] = None,
    new_stock: NewStockOpt = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import daily prices. Zero (holiday) and zero-volume (halt) rows are skipped and counted.

    The stock comes from the file (QuantKang `code`), its name (005930.csv, AAPL.csv) or --stock.
    A stock list (`name,code,...` without header, or `code,name` with one) names the stocks:
    prompts then read 삼성전자(005930). Re-importing adds nothing; differing closes are reported.

    Example: sep data import prices ../shared/data/krx-prices/*.csv
    """
    _run_import(lambda memory, progress: api.import_prices(memory, paths, format=format, stock=stock,
                                                           new_stock=new_stock, progress=progress), db, as_json)


@import_app.command("texts")
def import_texts_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Naver board CSV, Naver news/report xlsx, sn2 tweet folders, generic CSV/JSONL.")],
    source: Annotated[Optional[str], typer.Option("--source", help="naver-board | news | report | tweet (default: from the file).")] = None,
    stock: StockOpt = None,
    new_stock: NewStockOpt = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import texts. Each gets a local (KST for Korean stocks) day; re-importing adds nothing.

    The stock comes from `code=` in links, a `stock` column, the tweet folder's name, or --stock.
    A generic file needs columns stock, date|published_at, title and may add body, url, source.

    Example: sep data import texts samsung_raw_naver_finance_news.xlsx
    """
    _run_import(lambda memory, progress: api.import_texts(memory, paths, source=source, stock=stock,
                                                          new_stock=new_stock, progress=progress), db, as_json)


@data_app.command("show")
def show_cmd(
    stock: StockArg,
    date: DateArg,
    window_days: WindowDaysOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what a decision at the end of D sees: last close, target day and close, label, texts.

    D may be a holiday: the last close is then from the trading day before, and the target is
    the next trading day. Only texts dated on or before D are ever counted.
    """
    with user_errors():
        cfg = settings(db=db, window_days=window_days)
        w = api.show_window(api.open_memory(cfg.db, must_exist=True), stock, date, settings=cfg)
    if as_json:
        print(json.dumps(w.as_json(), ensure_ascii=False, indent=2))
        return
    render_window(w, verbose=True)


@data_app.command("unflag")
def unflag_cmd(
    text_id: Annotated[int, typer.Argument(help="The text's id (`sep data show` lists withheld texts with theirs).")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Clear a text's injection flag: you judged that it talks about the market, not to the model.

    The verdict is kept: no later import or dedup flags the text again, and the next `sep dedup`
    decides its day anew.

    Example:
      sep data unflag 1244
    """
    with user_errors():
        text = api.unflag_text(api.open_memory(settings(db=db).db, must_exist=True), text_id)
    if as_json:
        print(json.dumps(text, ensure_ascii=False))
        return
    console.print(f"Text {text['id']} ({text['date']}, {text['source']}) may enter prompts again: {text['title']}",
                  highlight=False, markup=False)


def render_withheld(w: Any, verbose: bool = False) -> None:
    """The window's texts that address the model: how many were withheld, and under --verbose which."""
    if not w.withheld:
        return
    console.print(f"[yellow]⚠ {len(w.withheld)} text(s) of this window address the model, not the market, and were "
                  f"withheld from every prompt[/]" + ("" if verbose else " [dim](--verbose lists them)[/]"))
    for t in w.withheld if verbose else []:
        console.print(f"  ⚠ {t.date} text {t.id} [{t.source}] {t.title}  ({t.injection})", highlight=False, markup=False)


def render_window(w: Any, max_titles: int = 5, verbose: bool = False) -> None:
    """The window as a person reads it: prices, label, a few texts per day, and what was withheld."""
    note = " (KRX holiday)" if w.is_holiday else ""
    table = Table(title=f"{w.stock} — decide at the end of {w.date}{note}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("last trading day", f"{w.last_trading_day}  close {w.last_close:,.0f}")
    table.add_row("target day", f"{w.target_day}  close {w.target_close:,.0f}")
    color = "red" if w.label == "up" else "blue"  # Korean convention: red up, blue down
    table.add_row("return → label", f"{w.ret:+.2%} → [{color}]{w.label} ({w.label_word})[/]")
    counts = ", ".join(f"{src} {n}" for src, n in w.text_counts().items()) or "none"
    table.add_row(f"texts {w.window_start}..{w.date}", counts)
    console.print(table)
    for day, texts in w.texts_by_day().items():
        console.print(f"[bold]{day}[/] ({len(texts)})")
        for t in texts[:max_titles]:
            console.print(f"  · [{t.source}] {t.title}", highlight=False, markup=False)
        if len(texts) > max_titles:
            console.print(f"  … {len(texts) - max_titles} more")
    render_withheld(w, verbose)


@crawl_app.command("naver-board")
def crawl_naver_board_cmd(
    stock: Annotated[str, typer.Option("--stock", help="KRX code, e.g. 005930.")],
    pages: Annotated[int, typer.Option("--pages", min=1, help="List pages to fetch (20 posts each).")] = 5,
    delay: Annotated[float, typer.Option("--delay", min=0.5, help="Seconds between requests (be polite).")] = 1.0,
    restart: Annotated[bool, typer.Option("--restart", help="Refetch pages already done today.")] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fetch 종목토론방 list pages (titles, times, authors) into memory. Needs the network.

    Each page is stored in its own transaction with a checkpoint: after a crash, rerunning the
    same command the same day skips pages already done.
    """
    with user_errors():
        memory = api.open_memory(settings(db=db).db)
        progress = bars("Crawling")
        with progress:
            task = progress.add_task("", total=pages)
            try:
                result = api.crawl_naver_board(memory, stock, pages=pages, delay=delay, restart=restart,
                                               on_page=lambda page, n: progress.update(task, completed=page))
            except BadInput:
                raise
            except Exception as exc:  # network errors after retries
                raise fail(f"crawl stopped: {exc}. Pages done so far are kept; rerun to resume.", 1) from None
    if as_json:
        from dataclasses import asdict, is_dataclass

        print(json.dumps(asdict(result) if is_dataclass(result) else result, ensure_ascii=False, default=str))
        return
    console.print(result)


pairs_app = typer.Typer(help="Win/lose pairs from wrong→right retries (training data).", no_args_is_help=True)
app.add_typer(pairs_app, name="pairs")


@pairs_app.command("export")
def pairs_export_cmd(
    out: Annotated[Path, typer.Option("--out", help="JSON lines file to write.")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write stored wrong→right pairs as TRL conversational preference data, one per line:
    {prompt: [messages], chosen: [assistant message], rejected: [assistant message], stock, date}.

    `chosen` is always the response whose label matched the market; `rejected` the wrong one.
    """
    with user_errors():
        n = api.export_pairs(api.open_memory(settings(db=db).db, must_exist=True), out)
    if as_json:
        print(json.dumps({"pairs": n, "out": str(out)}))
        return
    console.print(f"Wrote {n} pairs to {out}")
