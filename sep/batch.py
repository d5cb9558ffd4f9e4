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
from typing import Annotated, Any

import datetime as dt

import sqlite_utils
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo,
                      model_validator)

from sep.errors import BadInput
from sep.memory import now_iso, open_memory, transaction
from sep.settings import Settings
from sep.window import DecisionWindow, decision_window, parse_day, trading_days


def _day(value: Any) -> Any:
    """TOML gives dates as `datetime.date`, quoted ones as strings; both become ISO days."""
    if isinstance(value, dt.date):
        value = value.isoformat()
    return parse_day(value) if isinstance(value, str) else value


def _stocks(value: Any) -> Any:
    """`stocks = "005930"` means one stock; codes are normalised as imports do (5930 → 005930)."""
    from sep.ingest import normalise_stock

    value = [value] if isinstance(value, str) else value
    return [normalise_stock(v) if isinstance(v, str) else v for v in value] if isinstance(value, list) else value


def _path(value: Any, info: ValidationInfo) -> Any:
    if value is None or isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise BadInput(f"{info.field_name} must be a quoted path, not {value!r}.")
    return Path(value)


def _experiment(value: Any) -> Any:
    """The `[experiment]` table becomes a checked `sep.experiment.ExperimentConfig`."""
    if value is None:
        return None
    from sep.experiment import ExperimentConfig

    if not isinstance(value, dict):
        raise BadInput("[experiment] must be a table.")
    try:
        return ExperimentConfig.from_table(dict(value))
    except TypeError as exc:
        raise BadInput(f"[experiment] {exc}") from None


Day = Annotated[str, BeforeValidator(_day)]
RunPath = Annotated[Path | None, BeforeValidator(_path)]


class LLMTable(BaseModel):
    """The `[llm]` table of a job file."""

    model_config = ConfigDict(extra="forbid", strict=True)
    base_url: str | None = Field(None, description="An OpenAI-compatible server (vLLM), like http://gpu:8000/v1.")
    model: str | None = Field(None, description="Its model id; without `base_url`, the embedded catalog model "
                              "(`sep models list`; default qwen2.5-coder-1.5b).")


class Job(BaseModel):
    """A job file: what to run, and against which model. The one schema of jobs/*.toml: strict types,
    no unknown key at any level, sensible ranges; each field's description is its documentation."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, description="The job's name: its results, failures and timings are kept under it.")
    stocks: Annotated[list[str], BeforeValidator(_stocks)] = Field(
        min_length=1, description="Codes or tickers; their prices (and texts) must be in memory.")
    start: Day = Field(description="First day of the range.")
    end: Day = Field(description="Last day; every trading day in the range with a known next close is decided.")
    trials: int = Field(3, ge=1, description="Explain attempts per day, reflecting between them.")
    concurrency: int = Field(8, ge=1, description="Requests in flight against the server (the embedded model takes 1).")
    window_days: int | None = Field(None, ge=1, description="Calendar days of text per decision (default: SEP_WINDOW_DAYS, 5).")
    dedup: bool = Field(False, description="Run `sep dedup` on each stock first.")
    best_of: int | None = Field(None, ge=1, description="Also store a best-of-n forecast per day (`sep predict`).")
    policy: RunPath = Field(None, description="A trained policy run that answers instead of the model.")
    reward: RunPath = Field(None, description="A `sep train reward` run that picks the best-of-n candidate.")
    llm: LLMTable = LLMTable()
    experiment: Annotated[Any, AfterValidator(_experiment)] = Field(
        None, description="For `sep experiment run`: train_start, train_end, test_start, test_end (train_end < "
        "test_start), arms, steps, best_of, retrain_every.")

    @model_validator(mode="after")
    def _range(self) -> "Job":
        if self.start > self.end:
            raise BadInput(f"start {self.start} is after end {self.end}.")
        return self

    @property
    def base_url(self) -> str | None:
        return self.llm.base_url

    @property
    def model(self) -> str | None:
        return self.llm.model

    def settings(self, base: Settings) -> Settings:
        return base.with_overrides(base_url=self.base_url, model=self.model, policy=self.policy, trials=self.trials,
                                   window_days=self.window_days)


def _schema_error(path: Path, exc: ValidationError) -> BadInput:
    """The first schema error as one sentence that names the key."""
    errors = exc.errors()
    for err in errors:  # a check of ours (a date, the range, [experiment]) already says it in a sentence
        if isinstance(err.get("ctx", {}).get("error"), BadInput):
            return BadInput(f"{path}: {err['ctx']['error']}")
    missing = [".".join(map(str, e["loc"])) for e in errors if e["type"] == "missing"]
    if missing:
        return BadInput(f"{path} needs {', '.join(missing)} (see jobs/README.md).")
    err = errors[0]
    key = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "(top level)"
    if err["type"] == "extra_forbidden":
        table = Job if len(err["loc"]) == 1 else LLMTable
        return BadInput(f"{path}: unknown key {key}; allowed: {', '.join(table.model_fields)} (see jobs/README.md).")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return BadInput(f"{path}: {key}: {err['msg'][0].lower() + err['msg'][1:]}{shown}.")


def load_job(path: Path) -> Job:
    """Parse and check a job file; every mistake is one sentence (exit 2) naming the key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"Can't read the job file {path}: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path} is not valid TOML: {exc}") from None
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        raise _schema_error(path, exc) from None


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
