"""sep ledger: pre-registered forecasts, hash-chained, scored later."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from sep import api
from sep.cli.common import (
    BaseUrlOpt,
    DateArg,
    DbOpt,
    ExplainFormatOpt,
    JsonOpt,
    ModelOpt,
    PolicyOpt,
    PromptsOpt,
    StockArg,
    SummarizerOpt,
    ThreadsOpt,
    WindowDaysOpt,
    app,
    bars,
    cell,
    console,
    model_errors,
    settings,
    stage_progress,
    user_errors,
)
from sep.window import label_word

ledger_app = typer.Typer(help="Pre-registered forecasts: decided before the target close exists, hash-chained, "
                         "scored later, verifiable by anyone.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")


def render_entry(e: dict) -> None:
    word = label_word(e["label"], e["stock"])
    p = f"P(up) {e['p_up']:.2f}" if e.get("p_up") is not None else "withheld: " + ", ".join(e.get("flags") or [])
    console.print(f"[bold]{e['stock']} {e['date']} → {e['target_day']}[/]: {word} ({p}) by {escape(e['model'])}",
                  highlight=False)
    if e.get("evidence"):
        console.print("  evidence: " + ", ".join(f"{x['item']} ({x.get('direction') or '?'})" for x in e["evidence"]),
                      highlight=False)
    if e.get("explanation"):
        console.print(f"  {escape(e['explanation'][:200])}", highlight=False)


@ledger_app.command("add")
def ledger_add_cmd(
    stock: StockArg,
    date: DateArg,
    policy: PolicyOpt = None,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
    window_days: WindowDaysOpt = None,
    summarizer: SummarizerOpt = None,
    prompts: PromptsOpt = None,
    explain_format: ExplainFormatOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Decide D as `sep reflect` does (the forecast only) and append it to the ledger for good.

    Refused in one sentence (exit 2) when the target day's close is already in memory ("too late"),
    D's session has not closed yet, or the ledger has (stock, D, model) already. The entry holds the
    label, P(up), explanation, evidence ids, the model and the sha256 of its weights, the prompt
    versions and the sha256 of the rendered prompt, the sep version and created_at (UTC), chained to
    the entry before it by sha256. Entries are never updated.

    Examples:
      sep ledger add --stock 005930 --date 2026-12-03
      sep ledger add --stock 005930 --date 2026-12-03 --base-url http://gpu:8000/v1 --json
    """
    with user_errors():
        cfg = settings(db=db, base_url=base_url, model=model, policy=policy, threads=threads, prompts=prompts,
                       explain_format=explain_format, window_days=window_days, summarizer=summarizer)
        memory = api.open_memory(cfg.db, must_exist=True)
        with model_errors(), bars(percent=True) as progress:
            added = api.ledger_add(memory, stock, date, settings=cfg, progress=stage_progress(progress))
    if as_json:
        print(json.dumps(added.as_json(), ensure_ascii=False, indent=2))
        return
    render_entry(added.row.entry)
    console.print(f"entry {added.row.id}, hash {added.row.hash} ({added.texts} texts read, {added.withheld} withheld)",
                  highlight=False)


@ledger_app.command("run")
def ledger_run_cmd(
    stocks: Annotated[str, typer.Option("--stocks", help="Comma-separated KRX codes, e.g. 005930,000660.")],
    live: Annotated[bool, typer.Option("--live", help="Fetch today's prices (FinanceDataReader, the live extra), "
                                       "board posts and news titles (Naver) first.")] = False,
    date: Annotated[Optional[str], typer.Option("--date", help="D \\[today in the market's zone].")] = None,
    board_pages: Annotated[Optional[int], typer.Option("--board-pages", min=0, help="Board list pages to read at most \\[5].")] = None,
    news_pages: Annotated[Optional[int], typer.Option("--news-pages", min=0, help="News list pages to read at most \\[5].")] = None,
    delay: Annotated[Optional[float], typer.Option("--delay", min=0.0, help="Seconds between page requests \\[1.0].")] = None,
    policy: PolicyOpt = None,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The daily job, after the KRX close: fetch, score yesterday's entries, deduplicate, pre-register.

    Each stock's fetched day (prices, board posts, news titles) is stored all or nothing: a page
    whose layout changed is named in one sentence and that stock is skipped (exit 1 at the end).
    A cron line for 16:30 KST on weekdays (docs/jobs.md has a systemd timer):

      30 16 * * 1-5  cd ~/sep && .venv/bin/sep ledger run --live --stocks 005930,000660 >> ledger.log 2>&1

    Examples:
      sep ledger run --live --stocks 005930
      sep ledger run --stocks 005930 --date 2022-05-31   (texts and prices already in memory)
    """
    with user_errors():
        cfg = settings(db=db, base_url=base_url, model=model, policy=policy, threads=threads)
        memory = api.open_memory(cfg.db)
        with model_errors(), bars(percent=True) as progress:
            done = api.ledger_run(memory, [s for s in stocks.split(",") if s.strip()], date=date, live=live,
                                  board_pages=board_pages, news_pages=news_pages, delay=delay, settings=cfg,
                                  progress=stage_progress(progress))
    if as_json:
        print(json.dumps(done.as_json(), ensure_ascii=False, indent=2))
    else:
        s = done.scored
        console.print(f"scored {s['scored']} earlier entr{'y' if s['scored'] == 1 else 'ies'}; {s['waiting']} waiting "
                      "for their target close", highlight=False)
        for stock, r in done.stocks.items():
            fetched = f" (fetched: {r['prices_added']} prices, {r['texts_added']} texts)" if "texts_added" in r else ""
            if r.get("status") == "added":
                console.print(f"{stock} {done.date[stock]}: entry {r['id']}, {label_word(r['label'], stock)}"
                              f"{fetched}", highlight=False)
            else:
                console.print(f"[red]{stock} {done.date[stock]}: {r.get('status')}[/]: {escape(r.get('error', ''))}"
                              f"{fetched}", highlight=False)
    if any(r.get("status") == "layout changed" for r in done.stocks.values()):
        raise typer.Exit(1)


@ledger_app.command("score")
def ledger_score_cmd(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Store the outcome of every entry whose target close is now in memory (in its own table; entries never change).

    Examples:
      sep data import prices 005930.csv && sep ledger score
    """
    with user_errors():
        done = api.ledger_score(api.open_memory(settings(db=db).db, must_exist=True))
    if as_json:
        print(json.dumps(done, indent=2))
        return
    console.print(f"scored {done['scored']} new, {done['already_scored']} before; {done['waiting']} waiting for "
                  "their target close", highlight=False)


@ledger_app.command("verify")
def ledger_verify_cmd(
    head: Annotated[Optional[str], typer.Option("--head", help="A head hash published earlier: it must still be in the chain.")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute the hash chain: exit 1 and name the first entry edited, deleted, inserted or moved.

    Prints the head hash, which can be published (in a git commit, say) so that a later truncation
    is found too (--head).

    Examples:
      sep ledger verify
      sep ledger verify --head 3f2a...
    """
    with user_errors():
        checked = api.ledger_verify(api.open_memory(settings(db=db).db, must_exist=True), head)
    if as_json:
        print(json.dumps(checked.as_json(), indent=2))
    elif checked.ok:
        console.print(f"ok: {checked.entries} entries, head {checked.head}", highlight=False)
    else:
        held = f"{checked.entries} entr{'y holds' if checked.entries == 1 else 'ies hold'}"
        console.print(f"[red]broken[/]: {escape(checked.why)} ({held} before it, their head {checked.head})",
                      highlight=False)
    if not checked.ok:
        raise typer.Exit(1)


@ledger_app.command("export")
def ledger_export_cmd(
    out: Annotated[Path, typer.Option("--out", help="The JSONL file to write.")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write every entry with its hashes as JSONL: `entry` is the exact string hashed, so anyone can verify
    the track record without sep (docs/jobs.md shows the ten lines it takes).

    Examples:
      sep ledger export --out ledger.jsonl
    """
    with user_errors():
        done = api.ledger_export(api.open_memory(settings(db=db).db, must_exist=True), out)
    if as_json:
        print(json.dumps(done, indent=2))
        return
    console.print(f"Wrote {done['entries']} entries to {done['out']}; head {done['head']}", highlight=False)


@ledger_app.command("show")
def ledger_show_cmd(
    cutoff: Annotated[Optional[str], typer.Option("--cutoff", help="The model's training-data cutoff \\[the catalog's].")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the entries with their outcomes and kind (pre-registered after or before the cutoff, or a replay).

    Examples:
      sep ledger show --json
    """
    with user_errors():
        shown = api.ledger_show(api.open_memory(settings(db=db).db, must_exist=True), cutoff=cutoff)
    if as_json:
        print(json.dumps(shown.as_json(), ensure_ascii=False, indent=2))
        return
    if not shown.rows:
        console.print("The ledger is empty: `sep ledger add --stock S --date D` writes its first entry.", highlight=False)
        return
    table = Table("id", "stock", "D", "target", "label", "P(up)", "actual", "kind", "hash")
    for r in shown.rows:
        o = r["outcome"]
        table.add_row(str(r["id"]), r["stock"], r["date"], r["target_day"], label_word(r["label"], r["stock"]),
                      cell(r["p_up"]), label_word(o["actual"], r["stock"]) if o else "waiting", r["kind"],
                      r["hash"][:12])
    console.print(table)
