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

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from sep.adapters import run_data_end
from sep.decide import Decider, Plan, fingerprint, needed_summaries, stock_days
from sep.errors import BadInput
from sep.jobs import Job
from sep.llm import LLM, chat_result
from sep.memory import JobStore, SummaryStore, open_memory
from sep.predict import reward_scorer, store
from sep.settings import Progress, Settings
from sep.shapes import AnswerShape
from sep.window import DecisionWindow


def done_days(db: sqlite_utils.Database, job: Job) -> set[tuple[str, str]]:
    """The (stock, day)s this job finished (its own batch_items, not another job's predictions)."""
    return JobStore(db, job.name).done_days()


def claim_job(db: sqlite_utils.Database, job: Job, fp: str, model: str, config: dict,
              restart: bool = False) -> None:
    """Tie the job's name to its fingerprint; refuse a changed job under the same name unless `restart`.

    `restart` forgets the job's items (its predictions stay, kept per model), so every day is redone.
    """
    store = JobStore(db, job.name)
    claimed = store.claimed()
    if claimed and claimed[0] != fp and not restart:
        before = claimed[2]
        changed = [k for k in sorted(set(before) | set(config)) if before.get(k) != config.get(k)]
        raise BadInput(f"The job {job.name!r} already ran with other settings ({', '.join(changed)} changed); "
                       f"give the file another name, or pass --restart to redo every day with the new ones.")
    store.claim(fp, model, config, restart)


def job_model(db: sqlite_utils.Database, job: Job) -> str | None:
    """The model whose predictions are this job's (None when the job never ran)."""
    claimed = JobStore(db, job.name).claimed()
    return claimed[1] if claimed else None


def status(db: sqlite_utils.Database, job: Job) -> dict:
    """How far this job got, from its own items only."""
    items = stock_days(db, job.stocks, job.start, job.end)
    store = JobStore(db, job.name)
    done, failed = store.done_days(), store.failed_days()
    n_done = sum(1 for i in items if i in done)
    n_failed = sum(1 for i in items if i in failed and i not in done)
    return {"job": job.name, "total": len(items), "done": n_done, "failed": n_failed,
            "pending": len(items) - n_done - n_failed,
            "errors": [{"stock": s, "date": d, "error": failed[(s, d)]} for s, d in items if (s, d) in failed and (s, d) not in done][:20],
            "complete": n_done == len(items), "offline": offline_status(db, job)}


def dedup_job(db: sqlite_utils.Database, job: Job, cfg: Settings) -> None:
    """`sep dedup` on each of the job's stocks (its `dedup = true`)."""
    from sep.dedup import DedupConfig, Deduplicator

    for stock in job.stocks:
        Deduplicator(db, DedupConfig.from_settings(cfg), threads=cfg.threads, cache_dir=cfg.cache_dir).run(stock)


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

    def as_json(self) -> dict:
        return asdict(self)


class BatchRunner:
    """Runs a job through one `Decider`: `concurrency` decisions in flight, each stored as it ends."""

    def __init__(self, job: Job, cfg: Settings, llm_factory: Callable[[Settings], Any],
                 on_progress: Progress | None = None, restart: bool = False) -> None:
        self.job, self.cfg, self.restart = job, job.settings(cfg), restart
        self.llm = llm_factory(self.cfg)
        self.on_progress = on_progress
        self.scorer = None

    def _decide(self, decider: Decider, window: DecisionWindow) -> tuple[tuple[str, str], str | None]:
        """Reflect on one day (and best-of-n when the job asks): what `sep reflect` / `sep predict` store."""
        started, items = time.perf_counter(), JobStore(decider.db(), self.job.name)
        done = items.done_with(window.stock, window.date, started)  # committed with the day's last write
        try:
            if self.job.best_of_n:
                decider.reflect(window)
                decider.forecast(window, self.job.best_of_n, self.scorer, data_end=run_data_end(self.job.reward), also=done)
            else:
                decider.reflect(window, also=done)
            error = None
        except Exception as exc:  # one bad day must not stop the batch; it is recorded and retried next run
            error = f"{type(exc).__name__}: {exc}"
            items.record_item(window.stock, window.date, error, time.perf_counter() - started)
        return (window.stock, window.date), error

    def run(self) -> BatchReport:
        db = open_memory(self.cfg.db, must_exist=True)
        fp, config = fingerprint(self.cfg, self.job.stocks, self.llm.name.split("@", 1)[0], policy=self.job.policy,
                                 reward=self.job.reward, best_of=self.job.best_of_n)
        claim_job(db, self.job, fp, self.llm.name, config, self.restart)
        decider = Decider(db, self.cfg, self.llm, progress=self.on_progress, lessons_before=JobStore(db, self.job.name).began())
        if self.job.dedup:
            dedup_job(db, self.job, self.cfg)
        if self.job.best_of_n and self.job.reward:
            self.scorer = reward_scorer(self.job.reward, self.cfg)
        start = time.perf_counter()
        plan = decider.plan(stock_days(db, self.job.stocks, self.job.start, self.job.end), done_days(db, self.job))
        report = BatchReport(self.job.name, len(plan.items), plan.finished, concurrency=decider.concurrency)
        calls0 = self.llm.calls
        summaries0 = SummaryStore(db).count()
        decisions = decider.run(plan, lambda w: self._decide(decider, w))
        report.seconds = round(time.perf_counter() - start, 3)
        report.summaries = SummaryStore(db).count() - summaries0
        report.requests = self.llm.calls - calls0
        report.done = sum(1 for _, e in decisions if e is None)
        report.failed = sum(1 for _, e in decisions if e is not None)
        report.errors = [{"stock": s, "date": d, "error": e} for (s, d), e in decisions if e][:20]
        return report


# ---------------------------------------------------------------- offline: export, run elsewhere, ingest
#
# A job's requests go out in stages as OpenAI Batch API files (`vllm run-batch`, OpenAI's Batch API
# and Ray Data LLM read and write them). Nothing of a stage is decided here: each (stock, day) is
# replayed through the same Decider as a live run, every model call answered from the ingested
# results; the first call without a result stops that day and becomes a line of the next export.
# So what is stored (summaries, predictions, lessons, pairs, best-of-n) is what a live run stores,
# through the same quality gate, and a stage's requests are exactly the bodies a live run sends.

STAGES = ("summary", "stance", "forecast", "reflect", "kind", "retry", "best_of")
ENGINES = ("vllm", "openai")  # vllm: the label constrained by structured outputs; openai: plain chat requests
URL = "/v1/chat/completions"


class Pending(Exception):
    """A model call the job has no result for yet: it goes into the next export."""

    def __init__(self, request: "Request") -> None:
        super().__init__(request.custom_id)
        self.request = request


@dataclass(frozen=True)
class Request:
    custom_id: str
    stage: str
    stock: str
    date: str
    trial: int
    body: dict

    @property
    def sha(self) -> str:
        return body_sha(self.body)

    def line(self) -> dict:
        return {"custom_id": self.custom_id, "method": "POST", "url": URL, "body": self.body}


def body_sha(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def custom_id(job: str, stock: str, day: str, stage: str, trial: int) -> str:
    return f"{job}/{stock}/{day}/{stage}/{trial}"


@dataclass
class ReplayPosition:
    """Where the replay is: one summary (stock, text day) or one decision (stock, day) and its calls so far."""

    stock: str
    day: str
    phase: str  # summary | decision | best_of
    calls: dict[str, int] = field(default_factory=dict)
    collected: list[Request] = field(default_factory=list)  # best-of-n samples are independent: all at once


class OfflineChat(BaseChatModel):
    """Answers a job's calls from its ingested results; a call without one is a `Pending` request.

    Each call goes through the same ChatOpenAI client and answer binding a live run sends through,
    to an HTTP transport that never reaches a network: the request body it receives is the live
    request byte for byte, and an ingested result is handed back as the server's response, parsed
    by the client as a live answer is."""

    job: str
    client: Any = None  # ChatOpenAI on this chat's transport (`connect`)
    answers: dict  # custom_id -> (body sha, response body | None when failed)
    site: Any = None
    agent: str = "explain"

    @property
    def _llm_type(self) -> str:
        return "sep-offline-batch"

    def connect(self, cfg: Settings, model: str, is_vllm: bool) -> Callable[[AnswerShape], dict]:
        """Build the client on this chat's transport; returns the answer binding."""
        import httpx

        from sep.backends.openai import chat_client

        transport = httpx.Client(transport=httpx.MockTransport(self._exchange))
        self.client, binding = chat_client(cfg.with_overrides(base_url=None), model, is_vllm, http_client=transport)
        return binding

    def request(self, body: dict) -> Request:
        site: ReplayPosition = self.site
        n = site.calls.get(self.agent, 0)
        site.calls[self.agent] = n + 1
        stage = "summary" if self.agent == "summarize" else self.agent if self.agent in ("reflect", "kind", "stance") \
            else "best_of" if site.phase == "best_of" else \
            "forecast" if not site.calls.get("reflect") else "retry"  # a forecast's re-asks come before any lesson
        return Request(custom_id(self.job, site.stock, site.day, stage, n), stage, site.stock, site.day, n, body)

    def _exchange(self, http: Any) -> Any:
        """The transport: the ingested response to this body, else `Pending` (the body goes to the next export)."""
        import httpx

        request = self.request(json.loads(http.content))
        sha, response = self.answers.get(request.custom_id, (None, None))
        if sha == request.sha and response is not None:
            return httpx.Response(200, json=response)
        raise Pending(request)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        import openai

        self.agent = (run_manager.metadata if run_manager else {}).get("sep_agent") or "explain"
        try:
            message = self.client.invoke(messages, stop=stop, **kwargs)
        except openai.APIConnectionError as exc:  # the client wraps what its transport raised
            if not isinstance(exc.__cause__, Pending):
                raise
            if self.site.phase != "best_of":
                raise exc.__cause__ from None
            self.site.collected.append(exc.__cause__.request)  # the other samples don't depend on this one
            return chat_result("", None, self.client.model_name, 0, 0)
        return ChatResult(generations=[ChatGeneration(message=message)])


@dataclass
class ReplayStep:
    """What one replay of a job found: the requests still to run, and what is stored."""

    pending: list[Request]
    done: int
    total: int

    @property
    def stage(self) -> str | None:
        return self.pending[0].stage if self.pending else None

    def stages(self) -> dict[str, int]:
        """Pending requests per stage, in export order."""
        out: dict[str, int] = {}
        for r in self.pending:
            out[r.stage] = out.get(r.stage, 0) + 1
        return out

    def as_json(self, out: Path | str | None = None) -> dict:
        return {"out": str(out) if out and self.pending else None, "requests": len(self.pending),
                "stages": self.stages(), "done": self.done, "total": self.total}


@dataclass
class Ingested:
    job: str
    lines: int = 0
    stored: int = 0
    already: int = 0  # the same result ingested before: nothing added
    failed: int = 0  # the runner's error for the request: exported again next time
    missing: int = 0  # exported requests still without a result
    refused: dict[str, int] = field(default_factory=dict)  # reason -> lines, never stored
    examples: list[str] = field(default_factory=list)
    done: int = 0
    total: int = 0
    next_stage: str | None = None
    next_requests: int = 0

    def as_json(self) -> dict:
        return asdict(self)


class OfflineBatch:
    """One job's offline batch: `export` the next stage's requests, `ingest` their results, until done."""

    def __init__(self, job: Job, cfg: Settings, model: str | None = None, engine: str | None = None,
                 on_progress: Progress | None = None) -> None:
        if engine is not None and engine not in ENGINES:
            raise BadInput(f"--engine {engine!r}: choose {' or '.join(ENGINES)}.")
        self.job, self.cfg = job, job.settings(cfg)
        self.model_arg, self.engine_arg = model, engine
        self.model, self.engine = "", "vllm"
        self.on_progress = on_progress or (lambda stage, done, total: None)

    def _resolve(self, db: sqlite_utils.Database) -> None:
        """The model and engine: given, else what the job's first export used, else the job's model
        (the embedded default when it names none) and vLLM."""
        from sep.models import DEFAULT_MODEL

        claimed = JobStore(db, self.job.name).claimed()
        before = claimed[2] if claimed and claimed[1].endswith("@offline") else {}
        self.model = self.model_arg or before.get("model") or self.cfg.model or DEFAULT_MODEL
        self.engine = self.engine_arg or before.get("engine") or "vllm"

    # ------------------------------------------------------------ the replay

    def _claim(self, db: sqlite_utils.Database, chat: "OfflineChat") -> tuple[LLM, str]:
        # a trained policy's last training day travels with its answers, as on a live run (in-sample labels)
        llm = LLM(f"{self.model}@offline", chat, self._binding, retries=1,
                  data_end=run_data_end(self.cfg.policy) if self.cfg.policy else None)
        fp, config = fingerprint(self.cfg, self.job.stocks, self.model, policy=self.job.policy,
                                 reward=self.job.reward, best_of=self.job.best_of_n, engine=self.engine)
        claim_job(db, self.job, fp, llm.name, config)
        return llm, JobStore(db, self.job.name).began()

    def advance(self, db: sqlite_utils.Database) -> ReplayStep:
        """Replay every unfinished (stock, day); store what completes; return the requests still to run."""
        self._resolve(db)
        chat = OfflineChat(job=self.job.name, answers=JobStore(db, self.job.name).answers())
        self._binding = chat.connect(self.cfg, self.model, self.engine == "vllm")
        llm, began = self._claim(db, chat)
        decider = Decider(db, self.cfg, llm, lessons_before=began)
        plan = decider.plan(stock_days(db, self.job.stocks, self.job.start, self.job.end), done_days(db, self.job))
        windows, done, total = plan.windows, plan.finished, len(plan.items)
        pending = self._summarize(decider, chat, plan)  # stage 1: every summary the windows read, each once
        if pending:
            return ReplayStep(pending, done, total)
        pending = self._judge(decider, chat, plan)  # stage 2 (derived): every point the windows show, judged once
        if pending:
            return ReplayStep(pending, done, total)
        scorer = reward_scorer(self.job.reward, self.cfg) if self.job.best_of_n and self.job.reward else None
        items = JobStore(db, self.job.name)
        for i, window in enumerate(windows, 1):  # then each decision, as far as its results go
            chat.site = ReplayPosition(window.stock, window.date, "decision")
            finished = items.done_with(window.stock, window.date, time.perf_counter())  # committed with the day
            try:
                if not self.job.best_of_n:
                    decider.reflect(window, also=finished)
                else:
                    decider.reflect(window)
                    chat.site.phase = "best_of"
                    forecast = decider.forecast(window, self.job.best_of_n, scorer,
                                                data_end=run_data_end(self.job.reward), save=False)
                    if chat.site.collected:
                        pending += chat.site.collected
                        continue
                    store(db, forecast, finished)
            except Pending as p:
                pending.append(p.request)
                continue
            except Exception as exc:  # one bad day must not stop the job: recorded, as `sep batch run` does
                items.record_item(window.stock, window.date, f"{type(exc).__name__}: {exc}", 0.0)
            else:
                done += 1
            finally:
                self.on_progress("decisions", i, len(windows))
        return ReplayStep(pending, done, total)

    def _summarize(self, decider: Decider, chat: "OfflineChat", plan: Plan) -> list[Request]:
        """Replay the summary of every (stock, text day) the plan's windows read, once each; the requests still to run."""
        pending: list[Request] = []
        needed = needed_summaries(plan.windows)
        for i, ((stock, day), texts) in enumerate(needed.items(), 1):
            chat.site = ReplayPosition(stock, day, "summary")
            try:
                decider.agents(stock).summarize_day(stock, day, texts)
            except Pending as p:
                pending.append(p.request)
            self.on_progress("summaries", i, len(needed))
        return pending

    def _judge(self, decider: Decider, chat: "OfflineChat", plan: Plan) -> list[Request]:
        """The stance stage: each point of the windows' summaries judged once (the first (stock, day,
        index) that shows its text names the request); what memory lacks is pending."""
        if self.cfg.explain_format != "derived":
            return []
        pending = []
        for point in decider.points(plan.windows):
            chat.site = ReplayPosition(point.stock, point.day, "stance", calls={"stance": point.index})
            try:
                decider.agents(point.stock).stances.judge([point.text], point.lang)
            except Pending as p:
                pending.append(p.request)
        return pending

    # ------------------------------------------------------------ export

    def export(self, db: sqlite_utils.Database, out: Path, again: bool = False) -> ReplayStep:
        """Write the next stage's requests to `out` (JSONL); refused while an exported stage lacks results."""
        waiting = JobStore(db, self.job.name).outstanding()
        if waiting and not again:
            stages = ", ".join(f"{n} {stage}" for stage, n in waiting.items())
            raise BadInput(f"The job {self.job.name!r} has exported requests without results ({stages}): ingest "
                           f"their results first (sep batch ingest JOB RESULTS.jsonl), or pass --again to export "
                           f"them again.")
        first = not JobStore(db, self.job.name).exported_any()
        if self.job.dedup and first:
            dedup_job(db, self.job, self.cfg)
        advanced = self.advance(db)
        if not advanced.total:
            raise BadInput(f"The job {self.job.name!r} has no trading day of {', '.join(self.job.stocks)} with a known "
                           f"next close in {self.job.start}..{self.job.end}: nothing to decide.")
        if not advanced.pending:
            return advanced
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        with tmp.open("w", encoding="utf-8") as f:
            for r in advanced.pending:
                f.write(json.dumps(r.line(), ensure_ascii=False) + "\n")
        JobStore(db, self.job.name).store_requests(
            (r.custom_id, r.stage, r.stock, r.date, r.trial, r.sha, r.body) for r in advanced.pending)
        tmp.replace(out)
        return advanced

    # ------------------------------------------------------------ ingest

    def _model_ok(self, got: str | None) -> bool:
        """The model that answered is the job's (a dated snapshot name of it too, as OpenAI reports)."""
        return got == self.model or bool(got and re.fullmatch(re.escape(self.model) + r"-\d{4}-\d{2}-\d{2}", got))

    def ingest(self, db: sqlite_utils.Database, results: Path) -> Ingested:
        """Check and store a results file, then replay the job as far as the results go."""
        self._resolve(db)
        report = Ingested(self.job.name)
        requests = JobStore(db, self.job.name).requests()
        have = JobStore(db, self.job.name).answers()
        rows: list[list] = []

        def refuse(reason: str, n: int, detail: str) -> None:
            report.refused[reason] = report.refused.get(reason, 0) + 1
            if len(report.examples) < 5:
                report.examples.append(f"line {n}: {detail}")

        try:
            handle = results.open(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"Can't read the results file {results}: {exc.strerror}.") from None
        seen: set[str] = set()
        with handle:
            for n, line in enumerate(handle, 1):
                if line.strip():
                    report.lines += 1
                    row = self._result_row(n, line, requests, have, seen, report, refuse)
                    if row:
                        rows.append(row)
        # a good result already stored is not undone by a later failure
        JobStore(db, self.job.name).store_results(
            r for r in rows if not (r[2] == "failed" and have.get(r[0], (None, None))[1] is not None))
        report.stored = sum(1 for r in rows if r[2] == "ok")
        report.missing = sum(JobStore(db, self.job.name).outstanding().values())
        advanced = self.advance(db)
        report.done, report.total = advanced.done, advanced.total
        report.next_stage, report.next_requests = advanced.stage, len(advanced.pending)
        return report

    def _result_row(self, n: int, line: str, requests: dict, have: dict, seen: set[str], report: Ingested,
                    refuse: Callable[[str, int, str], None]) -> list | None:
        """One line of a results file checked: the row to store (an answer, or a failure), or None when
        it is refused (unreadable, another job or model, unknown, repeated) or already stored."""
        try:
            row = json.loads(line)
            cid = row["custom_id"]
        except (ValueError, KeyError, TypeError):
            return refuse("unreadable", n, "not a complete JSON result line (truncated?)")
        if not isinstance(cid, str) or not cid.startswith(self.job.name + "/"):
            return refuse("another job", n, f"custom_id {str(cid)[:60]!r} is not of the job {self.job.name!r}")
        if cid not in requests:
            return refuse("unknown custom_id", n, f"{cid} was never exported by this job")
        if cid in seen:
            return refuse("repeated", n, f"{cid} appears twice in the file")
        seen.add(cid)
        response, error = row.get("response") or {}, row.get("error")
        body = response.get("body") if isinstance(response, dict) else None
        if error or response.get("status_code", 200) != 200 or not isinstance(body, dict) or not body.get("choices"):
            report.failed += 1
            message = (error or {}).get("message") if isinstance(error, dict) else error
            return [cid, requests[cid], "failed", None, str(message or body or "no response")[:500]]
        if not self._model_ok(body.get("model")):
            return refuse("another model", n, f"{cid} was answered by {body.get('model')!r}, not {self.model!r}")
        if have.get(cid, (None, None)) == (requests[cid], body):
            report.already += 1
            return None
        return [cid, requests[cid], "ok", json.dumps(body, ensure_ascii=False), None]


def offline_status(db: sqlite_utils.Database, job: Job) -> dict:
    """Exported requests and results of a job, per stage (empty when it never exported)."""
    rows = JobStore(db, job.name).stage_counts()
    return {stage: {"exported": n, "answered": ok, "failed": bad, "waiting": n - ok - bad}
            for stage, n, ok, bad in sorted(rows, key=lambda r: STAGES.index(r[0]))}
