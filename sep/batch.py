"""Batch explanation jobs (`sep batch run jobs/NAME.toml`): many stocks and days, concurrently.

Work is split in two phases over one pool of at most `concurrency` workers, so the server always
has that many requests in flight and no summary is requested twice:
1. every distinct (stock, text day) summary the windows need (the cache makes reruns free);
2. every (stock, as-of trading day) decision: explain, reflect and retry (and best-of-n if set).

Each decision is stored in one transaction by the agents, so a run killed at any moment loses
at most the decisions in flight; rerunning the same file skips every day the job finished.
A job owns its results: its name is tied to a fingerprint of what changes answers (model id,
trials, window, prompts, summarizer, policy, reward, best-of), so another job on the same days
with another model does its own work, and a changed file under the same name is refused.
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

import datetime as dt

import sqlite_utils
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class _LLMTable(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    base_url: str | None = None
    model: str | None = None


class JobFile(BaseModel):
    """The schema of a job file: strict types, no unknown keys at any level, sensible ranges."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1)
    stocks: list[str] = Field(min_length=1)
    start: str | dt.date
    end: str | dt.date
    trials: int = Field(3, ge=1)
    concurrency: int = Field(8, ge=1)
    window_days: int | None = Field(None, ge=1)
    dedup: bool = False
    best_of: int | None = Field(None, ge=1)
    policy: str | None = None
    reward: str | None = None
    llm: _LLMTable = _LLMTable()
    experiment: dict | None = None  # checked by sep.experiment.ExperimentConfig


def _schema_error(path: Path, exc: ValidationError) -> BadInput:
    """The first schema error as one sentence that names the key."""
    errors = exc.errors()
    missing = [".".join(map(str, e["loc"])) for e in errors if e["type"] == "missing"]
    if missing:
        return BadInput(f"{path} needs {', '.join(missing)} (see jobs/README.md).")
    err = errors[0]
    key = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "(top level)"
    if err["type"] == "extra_forbidden":
        table = JobFile if len(err["loc"]) == 1 else _LLMTable
        return BadInput(f"{path}: unknown key {key}; allowed: {', '.join(table.model_fields)} (see jobs/README.md).")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return BadInput(f"{path}: {key}: {err['msg'][0].lower() + err['msg'][1:]}{shown}.")


def load_job(path: Path) -> Job:
    """Parse and check a job file; every mistake is one sentence (exit 2) naming the key."""
    from sep.ingest import normalise_stock

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"Can't read the job file {path}: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path} is not valid TOML: {exc}") from None
    if isinstance(data.get("stocks"), str):  # `stocks = "005930"` means one stock
        data["stocks"] = [data["stocks"]]
    try:
        spec = JobFile.model_validate(data)
    except ValidationError as exc:
        raise _schema_error(path, exc) from None
    job = Job(path=path, name=spec.name, stocks=[normalise_stock(s) for s in spec.stocks],
              start=parse_day(str(spec.start)), end=parse_day(str(spec.end)), trials=spec.trials,
              concurrency=spec.concurrency, base_url=spec.llm.base_url, model=spec.llm.model,
              window_days=spec.window_days, dedup=spec.dedup, best_of=spec.best_of,
              policy=Path(spec.policy) if spec.policy else None, reward=Path(spec.reward) if spec.reward else None)
    if job.start > job.end:
        raise BadInput(f"{path}: start {job.start} is after end {job.end}.")
    if spec.experiment is not None:
        from sep.experiment import ExperimentConfig

        try:
            job.experiment = ExperimentConfig.from_table(dict(spec.experiment))
        except BadInput as exc:
            raise BadInput(f"{path}: {exc}") from None
        except TypeError as exc:
            raise BadInput(f"{path}: [experiment] {exc}") from None
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
    """The (stock, day)s this job finished (its own batch_items, not another job's predictions)."""
    return {(s, d) for s, d in db.execute("SELECT stock, date FROM batch_items WHERE job = ? AND status = 'done'",
                                          [job.name]).fetchall()}


def job_identity(job: Job, cfg: Settings, model: str) -> tuple[str, dict]:
    """(fingerprint, what it covers): everything that changes the answers, not where the server is."""
    import hashlib
    import json

    from sep.agents import lang_of, load_prompt

    versions = sorted({load_prompt(lang_of(s), n, cfg.prompts).version for s in job.stocks
                       for n in ("summarize", "explain", "reflect")})
    config = {"model": model, "trials": cfg.trials, "window_days": cfg.window_days, "prompts": versions,
              "summarizer": cfg.summarizer, "summary_points": cfg.summary_points,
              "policy": str(job.policy) if job.policy else None, "reward": str(job.reward) if job.reward else None,
              "best_of": job.best_of}
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16], config


def claim_job(db: sqlite_utils.Database, job: Job, fingerprint: str, model: str, config: dict,
              restart: bool = False) -> None:
    """Tie the job's name to its fingerprint; refuse a changed job under the same name unless `restart`.

    `restart` forgets the job's items (its predictions stay, kept per model), so every day is redone.
    """
    import json

    row = db.execute("SELECT fingerprint, config FROM jobs WHERE name = ?", [job.name]).fetchone()
    if row and row[0] != fingerprint and not restart:
        before = json.loads(row[1])
        changed = [k for k in sorted(set(before) | set(config)) if before.get(k) != config.get(k)]
        raise BadInput(f"The job {job.name!r} already ran with other settings ({', '.join(changed)} changed); "
                       f"give the file another name, or pass --restart to redo every day with the new ones.")
    with transaction(db):
        if restart:
            db.execute("DELETE FROM batch_items WHERE job = ?", [job.name])
        db.execute("INSERT OR REPLACE INTO jobs (name, fingerprint, model, config, created_at) VALUES (?,?,?,?,?)",
                   [job.name, fingerprint, model, json.dumps(config, ensure_ascii=False), now_iso()])


def job_model(db: sqlite_utils.Database, job: Job) -> str | None:
    """The model whose predictions are this job's (None when the job never ran)."""
    row = db.execute("SELECT model FROM jobs WHERE name = ?", [job.name]).fetchone()
    return row[0] if row else None


def status(db: sqlite_utils.Database, job: Job) -> dict:
    """How far this job got, from its own items only."""
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
                 on_progress: Callable[[str, int, int], None] | None = None, restart: bool = False) -> None:
        self.job, self.cfg, self.restart = job, job.settings(cfg), restart
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
        from sep.agents import Agents

        stock, day, texts = key
        Agents.for_stock(self._db(), self.llm, stock, self.cfg).summarize_day(stock, day, list(texts))

    def _decide(self, window: DecisionWindow) -> tuple[tuple[str, str], str | None]:
        """`sep.reflect` for one day (and `sep.forecast` when the job asks for best-of-n): the
        same code path as the CLI, so a batch answer is what `sep reflect` would have stored."""
        from sep import api

        stock, day = window.stock, window.date
        started = time.perf_counter()
        db = self._db()
        try:
            api.reflect(db, stock, days=[day], settings=self.cfg, llm=self.llm)
            if self.job.best_of:
                api.forecast(db, stock, day, best_of=self.job.best_of, reward=self.job.reward, scorer=self.scorer,
                             settings=self.cfg, llm=self.llm)
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
        fingerprint, config = job_identity(self.job, self.cfg, self.llm.name.split("@", 1)[0])
        claim_job(db, self.job, fingerprint, self.llm.name, config, self.restart)
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
