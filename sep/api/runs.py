"""Training, batch jobs, evaluation, experiments and the audit, one call each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from sep.api.common import settings_or_env, stdout_to_stderr
from sep.api.data import open_memory
from sep.api.decisions import make_llm
from sep.errors import BadInput, ordered, require_extra
from sep.ingest import normalise_stock
from sep.settings import Progress, Settings
from sep.train.config import CONFIGS

# ---------------------------------------------------------------- training


TRAINERS = tuple(CONFIGS)  # sft, stance, reward, ppo, grpo


@dataclass
class Trained:
    kind: str
    out: Path
    metrics: dict
    main: bool = True  # False on the other processes of a data-parallel launch: rank 0 reports the run

    def as_json(self) -> dict:
        return {"kind": self.kind, "out": str(self.out), **self.metrics}


def train_model(kind: str, db: sqlite_utils.Database | None = None, *, data: Path | None = None,
                settings: Settings | None = None, **config: Any) -> Trained:
    """Train one of `TRAINERS` on the pairs `sep reflect` stored (or a preference file `data`).

    `config` are the fields of the trainer's config dataclass (`sep.train.config.SFTRunConfig`, ...):
    out, max_steps, learning_rate, start, end, balance, ... Training sees only days whose target
    is on or before `end`; the run records its data range."""
    if kind not in TRAINERS:
        raise BadInput(f"Unknown trainer '{kind}': choose one of {', '.join(TRAINERS)}.")
    if data is not None and not Path(data).exists():
        raise BadInput(f"{data} does not exist.")
    require_extra("train", "Training")
    from sep import train as training
    from sep.window import parse_day

    cfg = settings_or_env(settings)
    if db is None:
        db = open_memory(cfg.db, must_exist=data is None)
    config_cls, trainer = training.trainer(kind)
    fields = {k: v for k, v in config.items() if v is not None}
    fields.setdefault("out", Path("runs") / kind)
    for key in ("start", "end"):
        if fields.get(key):
            fields[key] = parse_day(fields[key])
    run_cfg = config_cls(**{"seed": cfg.seed, "threads": cfg.threads, **fields})
    with stdout_to_stderr():
        metrics = trainer(cfg, run_cfg, db, Path(data) if data else None)
    return Trained(kind, Path(run_cfg.out), metrics, main=training.launch_rank()[0] == 0)


# ---------------------------------------------------------------- batch, evaluation, audit


def run_batch(job_file: Path, *, settings: Settings | None = None, concurrency: int | None = None,
              restart: bool = False, progress: Progress | None = None,
              llm_factory: Callable[[Settings], Any] | None = None) -> Any:
    """Run every (stock, day) of a job file, resumably → `sep.batch.BatchReport`."""
    from sep.backends import make_llm as _make
    from sep.batch import BatchRunner
    from sep.jobs import load_job

    job = load_job(Path(job_file))
    if concurrency:
        job.concurrency = concurrency
    return BatchRunner(job, settings_or_env(settings), llm_factory or _make, progress, restart=restart).run()


def export_batch(job_file: Path, out: Path, *, settings: Settings | None = None, model: str | None = None,
                 engine: str | None = None, again: bool = False, progress: Progress | None = None) -> Any:
    """Write a job's next stage of requests (OpenAI Batch API JSONL) → `sep.batch.ReplayStep`."""
    from sep.batch import OfflineBatch
    from sep.jobs import load_job

    cfg = settings_or_env(settings)
    batch = OfflineBatch(load_job(Path(job_file)), cfg, model=model, engine=engine, on_progress=progress)
    return batch.export(open_memory(cfg.db, must_exist=True), Path(out), again=again)


def ingest_batch(job_file: Path, results: Path, *, settings: Settings | None = None, model: str | None = None,
                 engine: str | None = None, progress: Progress | None = None) -> Any:
    """Check and store a results file of a job's export, and decide what it completes → `sep.batch.Ingested`."""
    from sep.batch import OfflineBatch
    from sep.jobs import load_job

    cfg = settings_or_env(settings)
    batch = OfflineBatch(load_job(Path(job_file)), cfg, model=model, engine=engine, on_progress=progress)
    return batch.ingest(open_memory(cfg.db, must_exist=True), Path(results))


def execute_batch(requests: Path, out: Path, *, settings: Settings | None = None,
                  progress: Progress | None = None) -> dict:
    """Answer a requests file with the embedded model, writing a results file (the offline path without a GPU)."""
    from sep.backends.batch_file import execute

    return execute(Path(requests), Path(out), settings_or_env(settings), progress)


def batch_status(db: sqlite_utils.Database, job_file: Path) -> dict:
    """{job, total, done, failed, pending, errors} of a job, from its own items."""
    from sep.batch import status
    from sep.jobs import load_job

    return status(db, load_job(Path(job_file)))


@dataclass
class Scope:
    """What to score or audit: stocks, a range, and (for a job) the model that answered it."""

    stocks: list[str]
    start: str | None
    end: str | None
    model: str | None = None


def scope(db: sqlite_utils.Database, *, stock: str | None = None, job: Path | None = None, start: str | None = None,
          end: str | None = None) -> Scope:
    """From one stock or a job file (explicit start/end win over the job's range)."""
    from sep.batch import job_model
    from sep.jobs import load_job
    from sep.window import parse_day

    if bool(stock) == bool(job):
        raise BadInput("Give --stock CODE or --job FILE (one of them).")
    model = None
    if job:
        spec = load_job(Path(job))
        stocks, start, end = spec.stocks, start or spec.start, end or spec.end
        model = job_model(db, spec)
        if model is None:
            raise BadInput(f"The job {spec.name!r} has not run in this database; run `sep batch run {job}` first.")
    else:
        stocks = [normalise_stock(stock)]
    start, end = (parse_day(start) if start else None), (parse_day(end) if end else None)
    ordered(start, end)
    return Scope(stocks, start, end, model)


@dataclass
class Evaluation:
    """The walk-forward report: forecasts only in the headline; hindsight and in-sample apart."""

    report: dict

    def as_json(self) -> dict:
        return self.report


def evaluate_forecasts(db: sqlite_utils.Database, *, stock: str | None = None, job: Path | None = None,
                       start: str | None = None, end: str | None = None, method: str | None = None,
                       answered_by: str | None = None, threshold: float | None = None, cost_bps: float | None = None,
                       long_only: bool = False, settings: Settings | None = None) -> Evaluation:
    """Score stored forecasts: accuracy, MCC, CIs, p-values, Brier, ECE, backtest, baselines."""
    from sep.evaluate import evaluate as _evaluate

    cfg = settings_or_env(settings)
    s = scope(db, stock=stock, job=job, start=start, end=end)
    return Evaluation(_evaluate(db, s.stocks, s.start, s.end, seed=cfg.seed, threshold=threshold, method=method,
                                model=answered_by or s.model, cost_bps=cost_bps, long_only=long_only))


@dataclass
class ExperimentResult:
    report: dict

    def as_json(self) -> dict:
        return self.report


def run_experiment(job_file: Path, *, settings: Settings | None = None, progress: Progress | None = None,
                   llm_factory: Callable[[Settings], Any] | None = None) -> ExperimentResult:
    """Reflect on the train range, train each arm on it, forecast the test range, score every arm."""
    from sep.backends import make_llm as _make
    from sep.experiment import Experiment
    from sep.jobs import load_job

    job = load_job(Path(job_file))
    if job.experiment is None:
        raise BadInput(f"{job_file} has no [experiment] table (train_start, train_end, test_start, test_end, arms).")
    cfg = job.settings(settings_or_env(settings))
    db = open_memory(cfg.db, must_exist=True)
    with stdout_to_stderr():
        return ExperimentResult(Experiment(db, job, cfg, llm_factory or _make, progress).run())


def show_experiment(db: sqlite_utils.Database, experiment_id: int) -> ExperimentResult:
    """A finished experiment's arm table, as `run_experiment` returned it."""
    from sep.experiment import show

    return ExperimentResult(show(db, experiment_id))


def list_experiments(db: sqlite_utils.Database) -> list[dict]:
    """Every experiment in the memory, newest first: id, name, status, model, arms, test range, base accuracy."""
    from sep.experiment import listing

    return listing(db)


@dataclass
class Reported:
    html: Path
    json: Path

    def as_json(self) -> dict:
        return {"html": str(self.html), "json": str(self.json)}


def experiment_report(db: sqlite_utils.Database, experiment_id: int, out: Path) -> Reported:
    """A finished experiment as an HTML page with its plots (matplotlib SVG inline), and its JSON twin."""
    from sep import report
    from sep.experiment import show

    result = show(db, experiment_id)
    return Reported(*report.write(out, report.experiment_page(result), result))


def eval_report(evaluation: Evaluation, out: Path) -> Reported:
    """`evaluate_forecasts`' result as an HTML page with its plots, and its JSON twin."""
    from sep import report

    return Reported(*report.write(out, report.eval_page(evaluation.report), evaluation.report))


@dataclass
class Audited:
    html: Path
    json: Path
    data: dict = field(repr=False)

    def as_json(self) -> dict:
        return {"html": str(self.html), "json": str(self.json), "summary": self.data["summary"]}


def audit_explanations(db: sqlite_utils.Database, out: Path, *, stock: str | None = None, job: Path | None = None,
                       start: str | None = None, end: str | None = None, judge: bool = False, faithfulness: int = 0,
                       answered_by: str | None = None, settings: Settings | None = None, llm: Any = None,
                       progress: Progress | None = None) -> Audited:
    """Audit stored explanations (consistency, grounding in the window's texts, no dates after D)
    into an HTML report and its JSON twin; `judge` has the configured LLM score them too, and
    `faithfulness=N` has it answer N evidence-first forecasts again without, and with only, the
    items they cited (2 model calls each, cached in `faithfulness`)."""
    from sep.agents import load_prompt, prompt_files
    from sep.audit import build, write_report
    from sep.window import lang_of

    cfg = settings_or_env(settings)
    if faithfulness < 0:
        raise BadInput(f"--faithfulness takes how many forecasts to test (0: none), not {faithfulness}.")
    s = scope(db, stock=stock, job=job, start=start, end=end)
    lang = lang_of(s.stocks[0])
    if (judge or faithfulness) and llm is None:
        llm = make_llm(cfg, progress)
    explain = {x: load_prompt(x, prompt_files("evidence")["explain"], cfg.prompts) for x in ("ko", "en")}
    data = build(db, s.stocks, s.start, s.end, window_days=cfg.window_days, llm=llm, judged=judge,
                 faithful=faithfulness, explain=explain, lang=lang, seed=cfg.seed,
                 model=answered_by or s.model, progress=progress)
    html, twin = write_report(data, Path(out))
    return Audited(html, twin, data)


