"""Batch explanation jobs (`sep batch run jobs/NAME.toml`): many stocks and days, concurrently.

Work is split in two phases over one pool of at most `concurrency` workers, so the server always
has that many requests in flight and no summary is requested twice:
1. every distinct (stock, text day) summary the windows need (the cache makes reruns free);
2. every (stock, as-of trading day) decision: explain, reflect and retry (and best-of-n if set).

Each decision is stored in one transaction by the agents, so a run killed at any moment loses
at most the decisions in flight; rerunning the same file skips every stored (stock, day).
"""

from __future__ import annotations

import asyncio
import threading
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils

from sep.errors import BadInput
from sep.memory import now_iso, open_memory, transaction
from sep.settings import Settings
from sep.window import DecisionWindow, decision_window, parse_day, trading_days


@dataclass
class Job:
    """A job file: what to run, and against which model."""

    path: Path
    name: str
    stocks: list[str]
    start: str
    end: str
    trials: int = 3
    concurrency: int = 8
    base_url: str | None = None
    model: str | None = None
    window_days: int | None = None
    dedup: bool = False
    best_of: int | None = None
    policy: Path | None = None
    reward: Path | None = None
    experiment: object | None = None  # sep.experiment.ExperimentConfig from an [experiment] table

    def settings(self, base: Settings) -> Settings:
        return base.with_overrides(base_url=self.base_url, model=self.model, policy=self.policy, trials=self.trials,
                                   window_days=self.window_days)


def load_job(path: Path) -> Job:
    """Parse and check a job file; every mistake is one sentence (exit 2)."""
    from sep.ingest import normalise_stock

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"Can't read the job file {path}: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path} is not valid TOML: {exc}") from None
    missing = [k for k in ("name", "stocks", "start", "end") if k not in data]
    if missing:
        raise BadInput(f"{path} needs {', '.join(missing)} (see jobs/README.md).")
    known = {"name", "stocks", "start", "end", "trials", "concurrency", "llm", "dedup", "best_of", "policy", "reward",
             "window_days", "experiment"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadInput(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}.")
    stocks = data["stocks"] if isinstance(data["stocks"], list) else [data["stocks"]]
    llm = data.get("llm", {})
    job = Job(path=path, name=str(data["name"]), stocks=[normalise_stock(str(s)) for s in stocks],
              start=parse_day(str(data["start"])), end=parse_day(str(data["end"])),
              trials=int(data.get("trials", 3)), concurrency=int(data.get("concurrency", 8)),
              base_url=llm.get("base_url"), model=llm.get("model"), window_days=data.get("window_days"),
              dedup=bool(data.get("dedup", False)), best_of=data.get("best_of"),
              policy=Path(data["policy"]) if data.get("policy") else None,
              reward=Path(data["reward"]) if data.get("reward") else None)
    if job.start > job.end:
        raise BadInput(f"{path}: start {job.start} is after end {job.end}.")
    if "experiment" in data:
        from sep.experiment import ExperimentConfig

        try:
            job.experiment = ExperimentConfig.from_table(dict(data["experiment"]))
        except BadInput as exc:
            raise BadInput(f"{path}: {exc}") from None
        except TypeError as exc:
            raise BadInput(f"{path}: [experiment] {exc}") from None
    if job.trials < 1 or job.concurrency < 1 or (job.best_of is not None and job.best_of < 1):
        raise BadInput(f"{path}: trials, concurrency and best_of must be at least 1.")
    return job


def stock_days(db: sqlite_utils.Database, job: Job) -> list[tuple[str, str]]:
    """Every (stock, as-of trading day) of the range, interleaved across stocks."""
    per_stock = []
    for stock in job.stocks:
        if not db.execute("SELECT 1 FROM prices WHERE stock = ? LIMIT 1", [stock]).fetchone():
            raise BadInput(f"No prices of {stock} in memory; import them first (sep data import prices).")
        per_stock.append([(stock, d) for d in trading_days(db, stock).between(job.start, job.end)
                          if _has_target(db, stock, d)])
    out = []
    for i in range(max((len(days) for days in per_stock), default=0)):
        out += [days[i] for days in per_stock if i < len(days)]
    return out


def _has_target(db: sqlite_utils.Database, stock: str, day: str) -> bool:
    return db.execute("SELECT 1 FROM prices WHERE stock = ? AND date > ? LIMIT 1", [stock, day]).fetchone() is not None


def done_days(db: sqlite_utils.Database, job: Job) -> set[tuple[str, str]]:
    """Decisions already stored: a reflect run, and the best-of-n answer when the job asks for one."""
    rows = db.execute("SELECT stock, date, method FROM predictions GROUP BY stock, date, method").fetchall()
    have: dict[tuple[str, str], set[str]] = {}
    for stock, date, method in rows:
        have.setdefault((stock, date), set()).add(method)
    need = {"reflect"} | ({"best-of-n"} if job.best_of else set())
    return {k for k, methods in have.items() if need <= methods}


def status(db: sqlite_utils.Database, job: Job) -> dict:
    items = stock_days(db, job)
    done = done_days(db, job)
    failed = {(s, d): e for s, d, e in db.execute(
        "SELECT stock, date, error FROM batch_items WHERE job = ? AND status = 'failed'", [job.name]).fetchall()}
    n_done = sum(1 for i in items if i in done)
    n_failed = sum(1 for i in items if i in failed and i not in done)
    return {"job": job.name, "total": len(items), "done": n_done, "failed": n_failed,
            "pending": len(items) - n_done - n_failed,
            "errors": [{"stock": s, "date": d, "error": failed[(s, d)]} for s, d in items if (s, d) in failed and (s, d) not in done][:20]}


@dataclass
class BatchReport:
    job: str
    total: int
    skipped: int
    done: int = 0
    failed: int = 0
    summaries: int = 0
    requests: int = 0
    seconds: float = 0.0
    concurrency: int = 1
    errors: list[dict] = field(default_factory=list)


class BatchRunner:
    """Runs a job with a pool of `concurrency` workers, each with its own SQLite connection."""

    def __init__(self, job: Job, cfg: Settings, llm_factory: Callable[[Settings], object],
                 on_progress: Callable[[str, int, int], None] | None = None) -> None:
        self.job, self.cfg = job, job.settings(cfg)
        self.llm = llm_factory(self.cfg)
        # the embedded model is one in-process llama.cpp: one request at a time
        self.concurrency = job.concurrency if self.cfg.base_url else 1
        self.on_progress = on_progress or (lambda stage, done, total: None)
        self._local = threading.local()
        self.scorer = None

    def _db(self) -> sqlite_utils.Database:
        if not hasattr(self._local, "db"):
            self._local.db = open_memory(self.cfg.db, must_exist=True)
        return self._local.db

    def _agents(self, stock: str):
        from sep.agents import Agents

        return Agents.for_stock(self._db(), self.llm, stock, self.cfg)

    async def _pool(self, items: list, work: Callable, stage: str) -> list:
        loop = asyncio.get_running_loop()
        queue = list(reversed(items))
        results: list = []
        done = 0
        self.on_progress(stage, 0, len(items))

        async def worker() -> None:
            nonlocal done
            while queue:
                item = queue.pop()
                results.append(await loop.run_in_executor(self.executor, work, item))
                done += 1
                self.on_progress(stage, done, len(items))

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(items)) or 1)))
        return results

    def _summarize(self, key: tuple[str, str, tuple]) -> None:
        stock, day, texts = key
        self._agents(stock).summarize_day(stock, day, list(texts))

    def _decide(self, window: DecisionWindow) -> tuple[tuple[str, str], str | None]:
        stock, day = window.stock, window.date
        started = time.perf_counter()
        db = self._db()
        try:
            agents = self._agents(stock)
            agents.run(window, self.cfg.trials)
            if self.job.best_of:
                from sep.predict import best_of_n, store

                from sep.llm import run_data_end

                store(db, best_of_n(agents, window, self.job.best_of, self.scorer, seed=self.cfg.seed,
                                    data_end=run_data_end(self.job.reward)))
            error = None
        except Exception as exc:  # one bad day must not stop the batch; it is recorded and retried next run
            error = f"{type(exc).__name__}: {exc}"
        with transaction(db):
            db.execute("INSERT OR REPLACE INTO batch_items (job, stock, date, status, error, seconds, updated_at) "
                       "VALUES (?,?,?,?,?,?,?)", [self.job.name, stock, day, "failed" if error else "done", error,
                                                 time.perf_counter() - started, now_iso()])
        return (stock, day), error

    def run(self) -> BatchReport:
        db = self._db()
        if self.job.dedup:
            from sep.dedup import DedupConfig, Deduplicator

            for stock in self.job.stocks:
                Deduplicator(db, DedupConfig.from_settings(self.cfg), threads=self.cfg.threads).run(stock)
        if self.job.best_of and self.job.reward:
            from sep.predict import reward_scorer

            self.scorer = reward_scorer(self.job.reward, self.cfg)
        items = stock_days(db, self.job)
        finished = done_days(db, self.job)
        todo = [i for i in items if i not in finished]
        report = BatchReport(self.job.name, len(items), len(items) - len(todo), concurrency=self.concurrency)
        days = {stock: trading_days(db, stock) for stock in self.job.stocks}
        windows = [decision_window(db, s, d, self.cfg.window_days, days=days[s]) for s, d in todo]
        needed: dict[tuple[str, str], tuple] = {}
        for w in windows:
            for day, texts in w.texts_by_day().items():
                needed.setdefault((w.stock, day), tuple(texts))
        start = time.perf_counter()
        calls0 = self.llm.calls
        summaries0 = db.execute("SELECT COUNT(*) FROM summaries").fetchone()[0]
        with ThreadPoolExecutor(max_workers=self.concurrency) as self.executor:
            decisions = asyncio.run(self._phases([(s, d, t) for (s, d), t in needed.items()], windows))
        report.seconds = round(time.perf_counter() - start, 3)
        report.summaries = db.execute("SELECT COUNT(*) FROM summaries").fetchone()[0] - summaries0
        report.requests = self.llm.calls - calls0
        report.done = sum(1 for _, e in decisions if e is None)
        report.failed = sum(1 for _, e in decisions if e is not None)
        report.errors = [{"stock": s, "date": d, "error": e} for (s, d), e in decisions if e][:20]
        return report

    async def _phases(self, summaries: list, windows: list[DecisionWindow]) -> list[tuple[tuple[str, str], str | None]]:
        """Every summary first (each once), then the decisions, which find them cached."""
        await self._pool(summaries, self._summarize, "summaries")
        return await self._pool(windows, self._decide, "decisions")
