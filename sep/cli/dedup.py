"""sep dedup: BERTopic deduplication of each day's texts."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sep import api
from sep.cli.common import (
    DbOpt,
    EndOpt,
    JsonOpt,
    StartOpt,
    StockArg,
    ThreadsOpt,
    app,
    bars,
    console,
    setting,
    settings,
    stage_progress,
    user_errors,
)
from sep.settings import Settings


@app.command("dedup")
def dedup_cmd(
    stock: StockArg,
    start: StartOpt = None,
    end: EndOpt = None,
    refit: Annotated[bool, typer.Option("--refit", help="Refit the topic model on every day in range and redecide them all.")] = False,
    top_k: setting("dedup_top_k", "--top-k") = None,
    near_threshold: setting("dedup_near_threshold", "--near-threshold") = None,
    min_topic_size: setting("dedup_min_topic_size", "--min-topic-size") = None,
    embedder: setting("embedder") = None,
    offtopic: setting("offtopic") = None,
    seed: setting("seed", help="Seed for UMAP; same seed, same result.") = None,
    threads: ThreadsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Drop repeats, spam and off-topic talk; keep each day's top-k representative texts.

    Steps: exact duplicates (normalised titles), near duplicates (embedding similarity within a
    day), BERTopic clusters (kiwipiepy nouns, multilingual embeddings), off-topic flags (seed
    keywords on texts and whole clusters). Afterwards `sep reflect` summarises only the
    representatives of deduplicated days. Without --start/--end it takes every day with texts. A
    rerun only handles days with new texts, using the stored topic model, unless --refit.

    Examples:
      sep dedup --stock 005930
      sep dedup --stock 005930 --start 2022-05-01 --end 2022-05-31 --json
      sep dedup --stock 005930 --refit --offtopic my_keywords.toml
    """
    with user_errors():
        cfg = settings(db=db, threads=threads, seed=seed, embedder=embedder, offtopic=offtopic, dedup_top_k=top_k,
                       dedup_near_threshold=near_threshold, dedup_min_topic_size=min_topic_size)
        report = dedup_with_bars(api.open_memory(cfg.db, must_exist=True), cfg, stock, start, end, refit)
    if as_json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
        return
    render_dedup(report)


def dedup_with_bars(memory: Any, cfg: Settings, stock: str, start: str | None, end: str | None, refit: bool) -> Any:
    """`sep.deduplicate` with a progress bar per stage; BadInput when the extra is missing."""
    progress = bars()
    with progress:
        return api.deduplicate(memory, stock, start=start, end=end, refit=refit, settings=cfg,
                               progress=stage_progress(progress))


def _render_kept(kept: list[dict], days: int = 10) -> None:
    """Per day: how many copies each kept story stands for, and the biggest one."""
    by_day: dict[str, list[dict]] = {}
    for k in kept:
        by_day.setdefault(k["date"], []).append(k)
    shown = sorted(by_day)[-days:]
    more = f" (the last {days} of {len(by_day)} days; all in --json)" if len(by_day) > days else ""
    table = Table("day", "kept", "copies per kept story", "biggest story", title=f"Kept per day{more}")
    for day in shown:
        stories = sorted(by_day[day], key=lambda k: -k["copies"])
        table.add_row(day, str(len(stories)), " ".join(str(k["copies"]) for k in stories),
                      escape(stories[0]["title"][:60]))
    console.print(table)


def render_dedup(report: Any, topics: int = 20) -> None:
    code = report.stock
    if not report.input:
        console.print(f"Nothing new: every day of {code} in range was already deduplicated (use --refit to redo).")
    else:
        console.print(f"[bold]{code}[/]: {report.input} texts over {report.days} day(s) → "
                      f"{report.exact_duplicates} exact and {report.near_duplicates} near duplicates, "
                      f"{report.off_topic} off-topic, {report.injections} addressing the model (withheld), "
                      f"[bold green]{report.kept} kept[/] as representatives "
                      f"({'refit' if report.refit else 'transformed with the stored topic model'}, {report.seconds:.1f} s: "
                      + ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items()) + ")", highlight=False)
        _render_kept(report.kept_stories)
    if not topics:
        return
    table = Table("topic", "size", "top words", "example", "flag", title=f"{len(report.topic_table)} topics")
    for t in report.topic_table[:topics]:
        table.add_row(str(t["topic"]), str(t["size"]), escape(t["words"]), escape((t["example"] or "")[:60]),
                      escape(t["flag"] or ""))
    console.print(table)
