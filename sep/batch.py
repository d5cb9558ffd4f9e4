"""Batch explanation jobs (`sep batch run jobs/NAME.toml`): many stocks and days, concurrently.

Every (stock, as-of trading day) of the job's range is decided by `sep.decide.Decider`, the same
path as `sep reflect` and `sep predict`, with `concurrency` requests in flight against a server:
first every distinct summary the windows need, then the decisions, each stored in one
transaction, so a run killed at any moment loses at most the decisions in flight and rerunning
the same file skips every day the job finished.

A job owns its results: its name is tied to a fingerprint of what changes answers
(`sep.decide.fingerprint`: model, trials, window, prompts, summarizer, policy, reward,
best-of), so another job on the same days with another model does its own work, and a changed
file under the same name is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from sep.adapters import run_data_end
from sep.decide import Decider, fingerprint, stock_days
from sep.errors import BadInput
from sep.jobs import Job
from sep.memory import now_iso, open_memory, transaction
from sep.predict import reward_scorer
from sep.settings import Settings
from sep.window import DecisionWindow


def done_days(db: sqlite_utils.Database, job: Job) -> set[tuple[str, str]]:
    """The (stock, day)s this job finished (its own batch_items, not another job's predictions)."""
    return {(s, d) for s, d in db.execute("SELECT stock, date FROM batch_items WHERE job = ? AND status = 'done'",
                                          [job.name]).fetchall()}


def claim_job(db: sqlite_utils.Database, job: Job, fp: str, model: str, config: dict,
              restart: bool = False) -> None:
    """Tie the job's name to its fingerprint; refuse a changed job under the same name unless `restart`.

    `restart` forgets the job's items (its predictions stay, kept per model), so every day is redone.
    """
    row = db.execute("SELECT fingerprint, config FROM jobs WHERE name = ?", [job.name]).fetchone()
    if row and row[0] != fp and not restart:
        before = json.loads(row[1])
        changed = [k for k in sorted(set(before) | set(config)) if before.get(k) != config.get(k)]
        raise BadInput(f"The job {job.name!r} already ran with other settings ({', '.join(changed)} changed); "
                       f"give the file another name, or pass --restart to redo every day with the new ones.")
    with transaction(db):
        if restart:
            db.execute("DELETE FROM batch_items WHERE job = ?", [job.name])
        db.execute("INSERT OR REPLACE INTO jobs (name, fingerprint, model, config, created_at) VALUES (?,?,?,?,?)",
                   [job.name, fp, model, json.dumps(config, ensure_ascii=False), now_iso()])


def job_model(db: sqlite_utils.Database, job: Job) -> str | None:
    """The model whose predictions are this job's (None when the job never ran)."""
    row = db.execute("SELECT model FROM jobs WHERE name = ?", [job.name]).fetchone()
    return row[0] if row else None


def status(db: sqlite_utils.Database, job: Job) -> dict:
    """How far this job got, from its own items only."""
    items = stock_days(db, job.stocks, job.start, job.end)
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
    concurrency: int  # requests in flight: the job's against a server, 1 embedded
    done: int = 0
    failed: int = 0
    summaries: int = 0
    requests: int = 0
    seconds: float = 0.0
    errors: list[dict] = field(default_factory=list)


class BatchRunner:
    """Runs a job through one `Decider`: `concurrency` decisions in flight, each stored as it ends."""

    def __init__(self, job: Job, cfg: Settings, llm_factory: Callable[[Settings], Any],
                 on_progress: Callable[[str, int, int], None] | None = None, restart: bool = False) -> None:
        self.job, self.cfg, self.restart = job, job.settings(cfg), restart
        self.llm = llm_factory(self.cfg)
        self.on_progress = on_progress
        self.scorer = None

    def _decide(self, decider: Decider, window: DecisionWindow) -> tuple[tuple[str, str], str | None]:
        """Reflect on one day (and best-of-n when the job asks): what `sep reflect` / `sep predict` store."""
        started = time.perf_counter()
        try:
            decider.reflect(window)
            if self.job.best_of:
                decider.forecast(window, self.job.best_of, self.scorer, data_end=run_data_end(self.job.reward))
            error = None
        except Exception as exc:  # one bad day must not stop the batch; it is recorded and retried next run
            error = f"{type(exc).__name__}: {exc}"
        db = decider.db()
        with transaction(db):
            db.execute("INSERT OR REPLACE INTO batch_items (job, stock, date, status, error, seconds, updated_at) "
                       "VALUES (?,?,?,?,?,?,?)", [self.job.name, window.stock, window.date,
                                                 "failed" if error else "done", error,
                                                 time.perf_counter() - started, now_iso()])
        return (window.stock, window.date), error

    def run(self) -> BatchReport:
        db = open_memory(self.cfg.db, must_exist=True)
        decider = Decider(db, self.cfg, self.llm, progress=self.on_progress)
        fp, config = fingerprint(self.cfg, self.job.stocks, self.llm.name.split("@", 1)[0], policy=self.job.policy,
                                 reward=self.job.reward, best_of=self.job.best_of)
        claim_job(db, self.job, fp, self.llm.name, config, self.restart)
        if self.job.dedup:
            from sep.dedup import DedupConfig, Deduplicator

            for stock in self.job.stocks:
                Deduplicator(db, DedupConfig.from_settings(self.cfg), threads=self.cfg.threads).run(stock)
        if self.job.best_of and self.job.reward:
            self.scorer = reward_scorer(self.job.reward, self.cfg)
        items = stock_days(db, self.job.stocks, self.job.start, self.job.end)
        finished = done_days(db, self.job)
        todo = [i for i in items if i not in finished]
        report = BatchReport(self.job.name, len(items), len(items) - len(todo), concurrency=decider.concurrency)
        start = time.perf_counter()
        calls0 = self.llm.calls
        summaries0 = db.execute("SELECT COUNT(*) FROM summaries").fetchone()[0]
        windows = decider.windows(todo)
        decider.summarize(windows)
        decisions = decider.map(windows, lambda w: self._decide(decider, w), "decisions")
        report.seconds = round(time.perf_counter() - start, 3)
        report.summaries = db.execute("SELECT COUNT(*) FROM summaries").fetchone()[0] - summaries0
        report.requests = self.llm.calls - calls0
        report.done = sum(1 for _, e in decisions if e is None)
        report.failed = sum(1 for _, e in decisions if e is not None)
        report.errors = [{"stock": s, "date": d, "error": e} for (s, d), e in decisions if e][:20]
        return report
