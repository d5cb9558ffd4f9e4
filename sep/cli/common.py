"""What every `sep` command shares: the app, the options read from `Settings`, one-sentence errors
(exit 2), the progress bars and the small renderers.

The `sep` command line: a small typer app over the stages.

Every command reads one `Settings` (env vars SEP_*) and lets its flags override it. Bad input
prints one sentence and exits with code 2; the database is left as it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from sep import api
from sep.errors import BadInput
from sep.settings import EXPLAIN_FORMATS, SUMMARIZERS, Settings, invalid_setting

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


console = Console()
err_console = Console(stderr=True)


def setting(name: str, *decls: str, help: str | None = None, **kw: Any) -> Any:
    """The type of a flag that overrides the setting `name`. Its type, limits, env variable and
    default come from `Settings` (the one source; `help` defaults to the field's description),
    so `--help` can't drift from what a run uses."""
    return field_flag(Settings, name, decls, help, f"env SEP_{name.upper()}", kw)


def field_flag(owner: Any, name: str, decls: tuple[str, ...], help: str | None, source: str, kw: dict) -> Any:
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
    """The one Settings object, with this command's flags applied; a bad SEP_* value is one sentence
    and exit code 2, as a bad flag is."""
    from pydantic import ValidationError

    try:
        base = Settings()
    except ValidationError as exc:
        raise fail(str(invalid_setting(exc, str(exc.errors()[0]["loc"][0])))) from None
    return base.with_overrides(**flags)


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


def print_reports(reports: list, as_json: bool) -> None:
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


BaseUrlOpt = setting("base_url")
ModelOpt = Annotated[Optional[str], typer.Option("--model", "--model-file", help="Without --base-url: a catalog model (`sep models list`; default qwen2.5-coder-1.5b) or the path of any local .gguf with a chat template \\[env SEP_MODEL / SEP_MODEL_FILE]. With --base-url: the model id on the server \\[default: its first].")]
PolicyOpt = setting("policy")


def _one_of(value: str | None, flag: str, choices: tuple[str, ...]) -> str | None:
    if value is not None and value not in choices:
        raise typer.BadParameter(f"{flag} must be one of {', '.join(choices)}, not {value!r}.")
    return value


SummarizerOpt = setting("summarizer", callback=lambda v: _one_of(v, "--summarizer", SUMMARIZERS))
ThreadsOpt = setting("threads")
PromptsOpt = setting("prompts")
ExplainFormatOpt = setting("explain_format", "--explain-format",
                           callback=lambda v: _one_of(v, "--explain-format", EXPLAIN_FORMATS))


def bars(title: str = "{task.description}", *, percent: bool = False, eta: bool = False, detail: bool = False,
         keep: bool = False, log_start: bool = True, disable: bool = False) -> Bars:
    """The one progress display every command uses, on stderr: a bold title (each task's description
    unless fixed), a bar, done/total and the time taken (or a percentage, for a download), then an
    ETA and a detail line when asked; gone when done unless `keep`."""
    columns: list[Any] = [TextColumn(f"[bold]{title}"), BarColumn()]
    columns += [TextColumn("{task.percentage:>3.0f}%")] if percent else [MofNCompleteColumn(), TimeElapsedColumn()]
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    if detail:
        columns.append(TextColumn("{task.description}"))
    return Bars(*columns, console=err_console, transient=not keep, log_start=log_start, disable=disable)


def make_llm_with_bars(cfg: Settings):
    with bars(percent=True) as progress:
        return api.make_llm(cfg, stage_progress(progress))


def stage_progress(progress: Progress) -> Callable[[str, int, int], None]:
    """A `(stage, done, total)` callback that gives each stage its own bar."""
    tasks: dict[str, Any] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    return on_progress



def cell(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def ci_cell(ci: list[float] | None) -> str:
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "–"


def score_cells(s: dict) -> list[str]:
    """n, coverage, accuracy, its CI, accuracy answered, MCC, p vs coin and majority, min detectable accuracy."""
    mcc = "[red]no answers[/]" if s["answered"] == 0 else cell(s["mcc"])
    return [str(s["n"]), cell(s["coverage"]), cell(s["accuracy"]), ci_cell(s["accuracy_ci95"]), cell(s["accuracy_answered"]),
            mcc, cell(s["p_vs_coin"]), cell(s["p_vs_majority"]), cell(s["min_detectable_accuracy"])]
