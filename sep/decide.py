"""One decision for one (stock, day), and the pool that keeps a server busy with many of them.

`sep.reflect`, `sep.forecast`, a batch job and a walk-forward experiment all decide here, so a
day is decided the same way on every path, and every path keeps `concurrency` requests in
flight against a server (the embedded model answers one at a time):

1. `decidable_days` / `stock_days`: which days of a range can be decided (and scored);
2. `Decider.plan` → `Plan`: the days not done yet and their windows;
3. `needed_summaries` and `Decider.points`: every distinct (stock, text day) summary and every shown
   point's stance the windows need, each asked once (the cache then serves every decision);
4. `Decider.run`: `Decider.reflect` / `Decider.forecast` (explain, reflect and retry, or
   best-of-n) for each window, each stored by the agents in one transaction, so a killed run
   loses only the decisions in flight.

`sep reflect`, the live batch and the experiment call `Decider.run`; the offline batch replays the
same `Plan` stage by stage (`sep.batch.OfflineBatch`). None of them writes the loop again.

`fingerprint` names what changes answers (model, trials, window, prompts, summarizer, ...), so
a job or an experiment rerun with the same ones resumes and a changed one is noticed.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import sqlite_utils

from sep.agents import Agents, ReflectResult, load_prompt, prompt_files
from sep.errors import BadInput
from sep.evidence import window_items
from sep.memory import AlsoWrite, database_path, has_prices, open_memory
from sep.predict import Forecast, Scorer, best_of_n, store
from sep.settings import Progress, Settings
from sep.stances import StanceJudge
from sep.window import DecisionWindow, decision_window, lang_of, trading_days

Step = Callable[[str, str, str], None]  # (decision day, agent, prompt text) before each model call
T = TypeVar("T")
R = TypeVar("R")


def decidable_days(db: sqlite_utils.Database, stock: str, start: str, end: str, *, scored: bool = True,
                   target_by: str | None = None) -> list[str]:
    """Trading days of `stock` in [start, end]; with `scored`, only those whose next close is
    known (on or before `target_by` when given: what training may learn from)."""
    days = trading_days(db, stock)
    if not scored:
        return days.between(start, end)
    out = []
    for d in days.between(start, end):
        target = days.after(d)
        if target is not None and (target_by is None or target <= target_by):
            out.append(d)
    return out


def stock_days(db: sqlite_utils.Database, stocks: Sequence[str], start: str, end: str, *,
               target_by: str | None = None) -> list[tuple[str, str]]:
    """Every scorable (stock, day) of the range, interleaved across stocks (day 1 of each, then day 2, ...)."""
    per_stock = []
    for stock in stocks:
        if not has_prices(db, stock):
            raise BadInput(f"No prices of {stock} in memory; import them first (sep data import prices).")
        per_stock.append([(stock, d) for d in decidable_days(db, stock, start, end, target_by=target_by)])
    out = []
    for i in range(max((len(days) for days in per_stock), default=0)):
        out += [days[i] for days in per_stock if i < len(days)]
    return out


def fingerprint(cfg: Settings, stocks: Sequence[str], model: str | None, /, **extra: Any) -> tuple[str, dict]:
    """(hash, what it covers): everything that changes the answers (not where the server is)."""
    versions = sorted({load_prompt(lang_of(s), n, cfg.prompts).version for s in stocks
                       for n in prompt_files(cfg.explain_format).values()})
    config = {"model": model, "trials": cfg.trials, "window_days": cfg.window_days, "prompts": versions,
              "summarizer": cfg.summarizer, "summary_points": cfg.summary_points,
              **({"repeatable": True} if cfg.repeatable else {}),  # only when on: earlier jobs keep their hash
              **{k: str(v) if isinstance(v, Path) else v for k, v in extra.items()}}
    return hashlib.sha1(json.dumps(config, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16], config


@dataclass
class Plan:
    """What a driver decides: the (stock, day)s in scope, those already done, and the windows of the rest."""

    items: list[tuple[str, str]]
    done: set[tuple[str, str]]
    windows: list[DecisionWindow]

    @property
    def finished(self) -> int:
        """How many of the items were done before this plan."""
        return sum(1 for item in self.items if item in self.done)


def needed_summaries(windows: Sequence[DecisionWindow]) -> dict[tuple[str, str], list]:
    """Every (stock, text day) the windows read, once, with its texts: what is summarised before any decision."""
    needed: dict[tuple[str, str], list] = {}
    for w in windows:
        for day, texts in w.texts_by_day().items():
            needed.setdefault((w.stock, day), texts)
    return needed


class Point(NamedTuple):
    """A summary point some window shows, judged once by the stance step; `index` is its place in its day's summary."""

    stock: str
    day: str
    index: int
    lang: str
    text: str


class Decider:
    """Decides (stock, day)s with one model over one memory, `concurrency` at a time.

    Each worker thread gets its own connection to the memory's file; the caller's `db` serves
    the calling thread. `concurrency` is `cfg.concurrency` when the model takes parallel
    requests (a server) and 1 otherwise (the embedded model, a dry run, an in-memory database).
    """

    def __init__(self, db: sqlite_utils.Database, cfg: Settings, llm: Any, *, progress: Progress | None = None,
                 on_step: Step | None = None, mask: bool = False, lessons_before: str | None = None) -> None:
        self.cfg, self.llm, self.mask, self.lessons_before = cfg, llm, mask, lessons_before
        self.path = database_path(db)
        parallel = llm is not None and getattr(llm, "parallel", False) and self.path is not None and on_step is None
        self.concurrency = cfg.concurrency if parallel else 1
        self.progress = progress or (lambda stage, done, total: None)
        self.on_step = on_step
        self._owner, self._main_db = threading.get_ident(), db
        self._local = threading.local()

    # ------------------------------------------------------------ plumbing

    def db(self) -> sqlite_utils.Database:
        """This thread's connection to the memory."""
        if threading.get_ident() == self._owner:
            return self._main_db
        if not hasattr(self._local, "db"):
            self._local.db = open_memory(self.path, must_exist=True)
        return self._local.db

    def agents(self, stock: str, day: str = "") -> Agents:
        """This model's agents for one stock on this thread's connection (a dry run's steps name their day)."""
        step = (lambda name, text: self.on_step(day, name, text)) if self.on_step else None
        return Agents.for_stock(self.db(), self.llm, stock, self.cfg, on_prompt=step, mask=self.mask,
                                 lessons_before=self.lessons_before)

    def map(self, items: Sequence[T], work: Callable[[T], R], stage: str) -> list[R]:
        """`work(item)` for every item, `concurrency` at a time; results in the items' order.
        An exception in one item stops the rest and is raised (batch jobs catch inside `work`)."""
        self.progress(stage, 0, len(items))
        if self.concurrency == 1 or len(items) < 2:
            out = []
            for i, item in enumerate(items, 1):
                out.append(work(item))
                self.progress(stage, i, len(items))
            return out
        results: list[Any] = [None] * len(items)
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            futures = {pool.submit(work, item): i for i, item in enumerate(items)}
            try:
                for done, future in enumerate(as_completed(futures), 1):
                    results[futures[future]] = future.result()
                    self.progress(stage, done, len(items))
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return results

    def windows(self, items: Sequence[tuple[str, str]]) -> list[DecisionWindow]:
        """The decision window of each (stock, day), reading each stock's trading days once."""
        days = {stock: trading_days(self.db(), stock) for stock in dict.fromkeys(s for s, _ in items)}
        return [decision_window(self.db(), s, d, self.cfg.window_days, days=days[s]) for s, d in items]

    def plan(self, items: Sequence[tuple[str, str]], done: set[tuple[str, str]] | None = None) -> Plan:
        """The items' windows, leaving out the `done` ones (a rerun resumes where the last one stopped)."""
        done = set(done or ())
        return Plan(list(items), done, self.windows([i for i in items if i not in done]))

    def points(self, windows: Sequence[DecisionWindow]) -> list[Point]:
        """Every point the windows' summaries show, once per (language, text), the first window's first."""
        out, seen = [], set()
        for w in windows:
            agents = self.agents(w.stock)
            for day, summary in agents.summaries(w):
                for index, item in enumerate(window_items([(day, summary)])):
                    text = " ".join(item["point"].split())
                    if (agents.lang, text) not in seen:
                        seen.add((agents.lang, text))
                        out.append(Point(w.stock, day, index, agents.lang, text))
        return out

    # ------------------------------------------------------------ the stages

    def summarize(self, windows: Sequence[DecisionWindow], stage: str = "summaries") -> None:
        """Every (stock, text day) the windows read, summarised once, before any decision asks for it.
        Only worth a pool when requests run in parallel; one at a time, the decisions fill the cache."""
        if self.concurrency == 1 or self.llm is None:
            return
        needed = needed_summaries(windows)
        self.map(list(needed.items()), lambda item: self.agents(item[0][0]).summarize_day(*item[0], item[1]), stage)
        self.judge(windows)

    def judge(self, windows: Sequence[DecisionWindow], stage: str = "stances") -> None:
        """Every point the windows will show, judged once by the stance step (the derived format),
        `concurrency` at a time, before any decision asks (the cache then serves them all)."""
        if self.concurrency == 1 or self.llm is None or self.cfg.explain_format != "derived":
            return

        def one(point: Point) -> None:
            StanceJudge(self.llm, prompts_dir=self.cfg.prompts, db=self.db(), concurrency=1).judge([point.text], point.lang)

        self.map(self.points(windows), one, stage)

    def run(self, plan: Plan, work: Callable[[DecisionWindow], R], stage: str = "decisions",
            on_day: Callable[[R], None] | None = None) -> list[R]:
        """The plan's summaries and stances first, then `work` (a decision) for every window,
        `concurrency` at a time; `on_day` sees each result as it ends."""
        self.summarize(plan.windows)
        lock = threading.Lock()

        def one(window: DecisionWindow) -> R:
            result = work(window)
            if on_day:
                with lock:
                    on_day(result)
            return result

        return self.map(plan.windows, one, stage)

    def reflect(self, window: DecisionWindow, also: AlsoWrite | None = None) -> ReflectResult:
        """SEP's loop for one day: explain; while wrong, reflect and retry; stored in one transaction
        (with `also`, a batch's record that the day is done)."""
        return self.agents(window.stock, day=window.date).run(window, self.cfg.trials, also=also)

    def preregister(self, window: DecisionWindow) -> ReflectResult:
        """The forecast of `sep reflect` (trial 0, lessons recalled) for a window whose outcome does not
        exist yet; nothing is stored in predictions (the ledger keeps it)."""
        return self.agents(window.stock, day=window.date).run(window, 1, save=False)

    def forecast(self, window: DecisionWindow, best_of: int | None = None, scorer: Scorer | None = None,
                 data_end: str | None = None, *, save: bool = True,
                 also: AlsoWrite | None = None) -> Forecast:
        """Best-of-n for one day (n = `best_of`, default the settings'), stored as method best-of-n
        (with `also` in the same transaction)."""
        forecast = best_of_n(self.agents(window.stock), window, best_of or self.cfg.best_of, scorer,
                             temperature=self.cfg.temperature, seed=self.cfg.seed, data_end=data_end)
        if save:
            store(self.db(), forecast, also)
        return forecast
