"""The Python API: each stage of `sep` as one call, re-exported from `sep` itself.

The CLI only parses options, calls one of these and prints the result, so a notebook gets
exactly what `sep reflect` or `sep eval` does. Every call takes an open memory (`open_memory`)
and optional `Settings` (default: the `SEP_*` environment); every result is a dataclass with
`.as_json()`. Long calls take a `progress(stage, done, total)` callback.

Each call imports its stage module when it runs, so `import sep` and `sep --help` stay quick
(about 0.5 s; importing every stage up front doubles it). Every one of those imports goes down
the map in `help(sep)`, which tests/test_layout.py checks.

    import sep
    db = sep.open_memory("memory/sep.db")
    sep.import_prices(db, ["005930.csv", "stock_list.csv"])
    sep.import_texts(db, ["samsung_raw_naver_finance_news.xlsx"])
    run = sep.reflect(db, "005930", date="2022-06-01", settings=sep.Settings(trials=2))
    print(run.results[0].trials[0].explanation)
    print(sep.evaluate_forecasts(db, stock="005930").as_json()["accuracy"])
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from sep.errors import BadInput, ordered, require_extra
from sep.ingest import PriceFormat, TextFormat, normalise_stock, register_format
from sep.settings import Progress, Settings
from sep.tradingdays import market_of
from sep.train.config import CONFIGS

Step = Callable[[str, str, str], None]  # (decision day, agent, prompt text) before each model call

__all__ = [
    "Settings", "open_memory", "import_prices", "import_texts", "import_sample", "show_window", "deduplicate",
    "decision_days", "make_llm", "mock_llm", "register_backend", "reflect", "forecast", "stance", "Stanced",
    "train_model", "TRAINERS",
    "run_batch", "batch_status", "export_batch", "ingest_batch", "execute_batch",
    "Scope", "scope", "evaluate_forecasts", "eval_report", "run_experiment", "show_experiment", "list_experiments",
    "experiment_report", "Reported", "audit_explanations",
    "crawl_naver_board", "unflag_text", "export_pairs", "PriceFormat", "TextFormat", "register_format",
    "Imported", "Reflected", "Trained", "Evaluation", "ExperimentResult", "Audited",
    "ledger_add", "ledger_run", "ledger_score", "ledger_verify", "ledger_export", "ledger_show", "ledger_evaluate",
]
# Names differ from the stage modules (sep.dedup, sep.train, ...): importing a module sets an
# attribute of the same name on the package, which would shadow a function called like it.


def _cfg(settings: Settings | None) -> Settings:
    return settings if settings is not None else Settings()


def _stdout_to_stderr() -> Any:
    """Trainers and TRL print logs; a CLI's stdout must stay the report (--json)."""
    return redirect_stdout(sys.stderr)


# ---------------------------------------------------------------- memory and data


def open_memory(path: str | Path | None = None, *, must_exist: bool = False) -> sqlite_utils.Database:
    """The SQLite long-term memory at `path` (default: `SEP_DB` or memory/sep.db), migrated."""
    from sep.memory import open_memory as _open

    return _open(Path(path) if path is not None else Settings().db, must_exist=must_exist)


@dataclass
class Imported:
    """What each file of one import added (all files were written in one transaction)."""

    files: list[Any]  # sep.ingest.ImportReport

    def as_json(self) -> list[dict]:
        return [asdict(f) for f in self.files]


def _file_progress(progress: Progress | None, what: str, n: int) -> Callable[[Path], None] | None:
    if progress is None:
        return None
    done = iter(range(1, n + 1))
    return lambda path: progress(what, next(done), n)


def import_prices(db: sqlite_utils.Database, paths: Sequence[str | Path], *, format: str | None = None,
                  stock: str | None = None, new_stock: bool = False, progress: Progress | None = None) -> Imported:
    """Price files (FinanceDataReader, QuantKang, Yahoo, sn2) and stock lists; all or nothing."""
    from sep import ingest

    paths = [Path(p) for p in paths]
    return Imported(ingest.import_prices(db, paths, fmt=format, stock=stock, new_stock=new_stock,
                                         progress=_file_progress(progress, "reading prices", len(paths))))


def import_texts(db: sqlite_utils.Database, paths: Sequence[str | Path], *, source: str | None = None,
                 stock: str | None = None, new_stock: bool = False, progress: Progress | None = None) -> Imported:
    """Naver board/news/report files, sn2 tweet folders, generic CSV/JSONL; all or nothing."""
    from sep import ingest

    paths = [Path(p) for p in paths]
    return Imported(ingest.import_texts(db, paths, source=source, stock=stock, new_stock=new_stock,
                                        progress=_file_progress(progress, "reading texts", len(paths))))


def import_sample(db: sqlite_utils.Database) -> Imported:
    """The bundled demo sample (005930 prices for 2022, its name, May 2022 news titles)."""
    from sep.sample import sample_files

    prices, texts = sample_files()
    return Imported(import_prices(db, prices).files + import_texts(db, texts).files)


def unflag_text(db: sqlite_utils.Database, text_id: int) -> dict:
    """Clear a text's injection flag for good (a false positive a user disputes) → the text's row."""
    from sep.ingest import unflag

    return unflag(db, text_id)


def crawl_naver_board(db: sqlite_utils.Database, stock: str, *, pages: int = 5, delay: float = 1.0,
                      restart: bool = False, on_page: Callable[[int, int], None] | None = None) -> Any:
    """Fetch 종목토론방 list pages into memory (online only), one checkpointed page at a time."""
    from sep.crawl import crawl_board

    code = normalise_stock(stock)
    if market_of(code) != "XKRX":
        raise BadInput(f"'{stock}' is not a KRX code; the Naver board needs one like 005930.")
    return crawl_board(db, code, pages, delay=delay, restart=restart, on_page=on_page)


def show_window(db: sqlite_utils.Database, stock: str, date: str, *, settings: Settings | None = None) -> Any:
    """The decision window of D: the texts a prompt may read, the last close and the target."""
    from sep.window import decision_window, parse_day

    return decision_window(db, normalise_stock(stock), parse_day(date), _cfg(settings).window_days)


# ---------------------------------------------------------------- dedup


def deduplicate(db: sqlite_utils.Database, stock: str, *, start: str | None = None, end: str | None = None,
                refit: bool = False, settings: Settings | None = None, progress: Progress | None = None,
                **parts: Any) -> Any:
    """Deduplicate one stock's texts (exact, near, topics, off-topic) → `DedupReport`.

    `parts` go to `Deduplicator` (embedder, umap_model, hdbscan_model, vectorizer_model, rules)."""
    from sep.window import parse_day

    require_extra("dedup", "sep dedup")
    from sep.dedup import DedupConfig, Deduplicator
    from sep.memory import has_texts

    cfg = _cfg(settings)
    code = normalise_stock(stock)
    start, end = (parse_day(start) if start else None), (parse_day(end) if end else None)
    ordered(start, end)
    if not has_texts(db, code):
        raise BadInput(f"No texts of {code} in memory; import some with `sep data import texts`.")
    dedup = Deduplicator(db, DedupConfig.from_settings(cfg), threads=cfg.threads, cache_dir=cfg.cache_dir,
                         progress=progress, **parts)
    return dedup.run(code, start, end, refit=refit)


# ---------------------------------------------------------------- agents


def make_llm(settings: Settings | None = None, progress: Progress | None = None) -> Any:
    """The configured model: `backend` by name, else a server (`base_url`), a trained `policy`, or the
    embedded one; its first preparation is reported as the stage "preparing the model"."""
    from sep.backends import make_llm as _make

    return _make(_cfg(settings), (lambda done, total: progress("preparing the model", done, total)) if progress else None)


def mock_llm(script: Callable[[str, str], str] | None = None, p_label: float | None = None) -> Any:
    """A scripted in-process model: `script(agent, prompt) -> reply` (agent: summarize, explain,
    reflect, judge). Runs the agents, batches and the judge with no model and no server."""
    from sep.backends.mock import P_LABEL
    from sep.backends.mock import mock_llm as _mock

    return _mock(script, P_LABEL if p_label is None else p_label)


def register_backend(name: str) -> Callable:
    """Decorator: `@sep.register_backend("mine")` on `factory(settings, progress) -> sep.llm.LLM`;
    `Settings(backend="mine")` or `SEP_BACKEND=mine` then uses it. Plugins use the `sep.backends`
    entry point group instead."""
    from sep.backends import register_backend as _register

    return _register(name)


def decision_days(db: sqlite_utils.Database, stock: str, *, date: str | None = None, start: str | None = None,
                  end: str | None = None) -> list[str]:
    """One decision day D, or every trading day of a range (the last may have no next close yet)."""
    from sep.decide import decidable_days
    from sep.window import parse_day

    if date and (start or end):
        raise BadInput("Give either --date or --start/--end, not both.")
    if date:
        return [parse_day(date)]
    if not (start and end):
        raise BadInput("Give --date D, or a range with --start D1 --end D2.")
    start, end = parse_day(start), parse_day(end)
    ordered(start, end)
    code = normalise_stock(stock)
    days = decidable_days(db, code, start, end, scored=False)
    if not days:
        raise BadInput(f"No trading days of {code} between {start} and {end}.")
    return days


@dataclass
class Reflected:
    """Every decision of a reflect call, with what the model cost."""

    results: list[Any]  # sep.agents.ReflectResult, one per decision day
    model: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_json(self) -> list[dict]:
        return [r.as_json() for r in self.results]


def reflect(db: sqlite_utils.Database, stock: str, *, date: str | None = None, start: str | None = None,
            end: str | None = None, days: Sequence[str] | None = None, settings: Settings | None = None,
            llm: Any = None, dry_run: bool = False, on_step: Step | None = None,
            on_day: Callable[[Any], None] | None = None, progress: Progress | None = None) -> Reflected:
    """Summarize, explain 상승/하락 and, when wrong, reflect and retry, for D, each trading day of a
    range, or the `days` that `decision_days` returned.

    Each finished day is stored as it ends (`on_day` sees its result). Against a server, days run
    `concurrency` at a time (`sep.decide.Decider`); a day then recalls the lessons of the days
    that finished before it. `dry_run` calls no model: `on_step` receives every prompt that would be sent."""
    from sep.decide import Decider

    cfg = _cfg(settings)
    code = normalise_stock(stock)
    days = list(days) if days is not None else decision_days(db, code, date=date, start=start, end=end)
    windows = Decider(db, cfg, None).windows([(code, d) for d in days])  # bad input fails before a model loads
    if llm is None and not dry_run:
        llm = make_llm(cfg, progress)
    used = None if dry_run else llm
    results = Decider(db, cfg, used, on_step=on_step, progress=progress).reflect_all(windows, on_day=on_day)
    return Reflected(results, used.name if used else "dry-run", *(
        (used.calls, used.prompt_tokens, used.completion_tokens) if used else (0, 0, 0)))


def forecast(db: sqlite_utils.Database, stock: str, date: str, *, best_of: int | None = None,
             reward: Path | None = None, temperature: float | None = None, settings: Settings | None = None,
             llm: Any = None, scorer: Callable | None = None, progress: Progress | None = None) -> Any:
    """Best-of-n: sample `best_of` explanations (default `Settings.best_of`), pick one by the reward
    run (or the label's probability), store it (method best-of-n) → `sep.predict.Forecast` with a
    confidence.

    `scorer`: the reward run already loaded (`sep.predict.reward_scorer`), for many calls."""
    from sep.adapters import run_data_end
    from sep.decide import Decider
    from sep.predict import reward_scorer

    cfg = _cfg(settings).with_overrides(best_of=best_of, temperature=temperature)
    code = normalise_stock(stock)
    window = show_window(db, code, date, settings=cfg)
    if reward is not None and scorer is None:
        require_extra("train", "--reward")
        scorer = reward_scorer(Path(reward), cfg)
    llm = llm if llm is not None else make_llm(cfg, progress)  # after the checks: bad input fails first
    return Decider(db, cfg, llm).forecast(window, scorer=scorer, data_end=run_data_end(reward))


@dataclass
class Stanced:
    """`stance`'s result: each text's stance and probabilities, and with gold labels the scores."""

    model: str
    judged: list[Any]  # sep.stances.Judged
    labels: list[str] | None = None
    scores: dict | None = None  # n, accuracy, accuracy_ci95, accuracy_posneg, macro_f1, confusion
    out: Path | None = None

    def as_json(self) -> dict:
        if self.scores is not None:
            return {"model": self.model, **self.scores, "out": str(self.out) if self.out else None}
        return {"model": self.model, "n": len(self.judged), "rows": [j.as_json() for j in self.judged],
                "out": str(self.out) if self.out else None}


def stance(source: Path | str | Sequence[str], *, text_column: str = "text", label_column: str | None = None,
           lang: str | None = None, out: Path | None = None, settings: Settings | None = None,
           db: sqlite_utils.Database | None = None, llm: Any = None,
           progress: Callable[[int, int], None] | None = None) -> Stanced:
    """The model's stance (positive, neutral, negative, with probabilities) of each text: a list of
    texts, or a CSV/xlsx/JSONL file's `text_column` (comma-separated for several). With
    `label_column` the judgements are scored against it. `out` writes one row per text (.csv or
    .jsonl). Judgements are cached in memory (`db`, default the settings' file): a rerun resumes.
    A `--policy` that `sep train stance` made asks with the prompt it learned on (RUN/prompts)."""
    from sep.stances import StanceJudge, read_table, stance_scores, write_judged

    cfg = _cfg(settings)
    if lang not in (None, "ko", "en"):
        raise BadInput(f"--lang must be ko or en, not {lang!r}.")
    if isinstance(source, (str, Path)):
        table = read_table(Path(source), [c.strip() for c in text_column.split(",") if c.strip()], label_column)
        texts, labels = table.texts, table.labels
    else:
        texts, labels = [" ".join(str(t).split()) for t in source], None
        if not texts:
            raise BadInput("No texts to judge.")
    prompts_dir = cfg.prompts
    if cfg.policy and (Path(cfg.policy) / "prompts").is_dir():
        prompts_dir = Path(cfg.policy) / "prompts"
    llm = llm if llm is not None else make_llm(cfg)
    memory = db if db is not None else open_memory(cfg.db)
    judge = StanceJudge(llm, prompts_dir=prompts_dir, db=memory, concurrency=cfg.concurrency)
    judged = judge.judge(texts, lang, progress)
    if out is not None:
        write_judged(judged, Path(out), labels)
    return Stanced(judge.model, judged, labels, stance_scores(judged, labels) if labels else None,
                   Path(out) if out else None)


def export_pairs(db: sqlite_utils.Database, out: Path) -> int:
    """Write the stored wrong→right pairs as TRL preference JSONL (prompt, chosen, rejected); the count."""
    from sep.agents import export_pairs as _export

    return _export(db, Path(out))


# ---------------------------------------------------------------- training


TRAINERS = tuple(CONFIGS)  # sft, stance, reward, ppo, grpo


@dataclass
class Trained:
    kind: str
    out: Path
    metrics: dict

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

    cfg = _cfg(settings)
    if db is None:
        db = open_memory(cfg.db, must_exist=data is None)
    config_cls, trainer = training.trainer(kind)
    fields = {k: v for k, v in config.items() if v is not None}
    fields.setdefault("out", Path("runs") / kind)
    for key in ("start", "end"):
        if fields.get(key):
            fields[key] = parse_day(fields[key])
    run_cfg = config_cls(**{"seed": cfg.seed, "threads": cfg.threads, **fields})
    with _stdout_to_stderr():
        metrics = trainer(cfg, run_cfg, db, Path(data) if data else None)
    return Trained(kind, Path(run_cfg.out), metrics)


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
    return BatchRunner(job, _cfg(settings), llm_factory or _make, progress, restart=restart).run()


def export_batch(job_file: Path, out: Path, *, settings: Settings | None = None, model: str | None = None,
                 engine: str | None = None, again: bool = False, progress: Progress | None = None) -> Any:
    """Write a job's next stage of requests (OpenAI Batch API JSONL) → `sep.batch.ReplayStep`."""
    from sep.batch import OfflineBatch
    from sep.jobs import load_job

    cfg = _cfg(settings)
    batch = OfflineBatch(load_job(Path(job_file)), cfg, model=model, engine=engine, on_progress=progress)
    return batch.export(open_memory(cfg.db, must_exist=True), Path(out), again=again)


def ingest_batch(job_file: Path, results: Path, *, settings: Settings | None = None, model: str | None = None,
                 engine: str | None = None, progress: Progress | None = None) -> Any:
    """Check and store a results file of a job's export, and decide what it completes → `sep.batch.Ingested`."""
    from sep.batch import OfflineBatch
    from sep.jobs import load_job

    cfg = _cfg(settings)
    batch = OfflineBatch(load_job(Path(job_file)), cfg, model=model, engine=engine, on_progress=progress)
    return batch.ingest(open_memory(cfg.db, must_exist=True), Path(results))


def execute_batch(requests: Path, out: Path, *, settings: Settings | None = None,
                  progress: Progress | None = None) -> dict:
    """Answer a requests file with the embedded model, writing a results file (the offline path without a GPU)."""
    from sep.batch import execute

    return execute(Path(requests), Path(out), _cfg(settings), progress)


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

    cfg = _cfg(settings)
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
    cfg = job.settings(_cfg(settings))
    db = open_memory(cfg.db, must_exist=True)
    with _stdout_to_stderr():
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

    cfg = _cfg(settings)
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


# ---------------------------------------------------------------- the pre-registered ledger


def ledger_add(db: sqlite_utils.Database, stock: str, date: str, *, settings: Settings | None = None, llm: Any = None,
               progress: Progress | None = None, now: Any = None) -> Any:
    """Decide D (forecast only, as `reflect`'s trial 0) before its target close exists and append it to
    the hash-chained ledger → `sep.ledger.Added`. Refused in one sentence when the target close is in
    memory already, D's session has not closed, or (stock, D, model) has an entry."""
    from datetime import datetime, timezone

    from sep import ledger
    from sep.memory import LedgerStore
    from sep.window import parse_day

    cfg = _cfg(settings)
    code, day = normalise_stock(stock), parse_day(date)
    now = now or datetime.now(timezone.utc)
    ledger.check_decidable(LedgerStore(db), code, day, now)  # before a model loads
    llm = llm if llm is not None else make_llm(cfg, progress)
    return ledger.add(db, cfg, llm, code, day, now=now, progress=progress)


def ledger_run(db: sqlite_utils.Database, stocks: Sequence[str], *, date: str | None = None, live: bool = False,
               board_pages: int | None = None, news_pages: int | None = None, delay: float | None = None,
               settings: Settings | None = None,
               fetch: Callable[[str], str] | None = None, now: Any = None, progress: Progress | None = None) -> Any:
    """The daily job (after the close): with `live`, fetch prices (the live extra), board posts and news
    titles; score earlier entries; deduplicate; pre-register each stock's D → `sep.ledger.DailyRun`."""
    from sep import ledger

    cfg = _cfg(settings)
    codes = [normalise_stock(s) for s in stocks]
    if not codes:
        raise BadInput("Give at least one stock (--stocks 005930,000660).")
    if live:
        foreign = [c for c in codes if market_of(c) != "XKRX"]
        if foreign:
            raise BadInput(f"--live reads Naver's KRX pages, and {', '.join(foreign)} is not a KRX code; import its "
                           "prices and texts, then run without --live (or `sep ledger add`).")
        require_extra("live", "sep ledger run --live")
    require_extra("dedup", "sep ledger run")
    pick = (lambda value, fallback: fallback if value is None else value)
    return ledger.run(db, cfg, lambda c: make_llm(c, progress), codes, date=date, live=live,
                      board_pages=pick(board_pages, ledger.BOARD_PAGES), news_pages=pick(news_pages, ledger.NEWS_PAGES),
                      delay=pick(delay, ledger.PAGE_DELAY), fetch=fetch, now=now, progress=progress)


def ledger_score(db: sqlite_utils.Database) -> dict:
    """Store the outcome of every ledger entry whose target close is now in memory (entries never change)."""
    from sep import ledger

    return ledger.score(db)


def ledger_verify(db: sqlite_utils.Database, head: str | None = None) -> Any:
    """Recompute the ledger's hash chain → `sep.ledger.Verified` (the first broken entry, the head hash).
    `head`: a hash published earlier, which must still be in the chain."""
    from sep import ledger

    return ledger.verify(db, head)


def ledger_export(db: sqlite_utils.Database, out: str | Path) -> dict:
    """The ledger as JSONL, each entry exactly as hashed, checkable without sep (docs/jobs.md)."""
    from sep import ledger

    return ledger.export(db, Path(out))


def ledger_show(db: sqlite_utils.Database, *, cutoff: str | None = None) -> Any:
    """Every entry with its hash, and once scored its outcome and kind (pre-registered or a replay)."""
    from sep import ledger

    return ledger.show(db, cutoff)


def ledger_evaluate(db: sqlite_utils.Database, *, cutoff: str | None = None, settings: Settings | None = None) -> dict:
    """Score pre-registered entries only: after the model's cutoff, before it, and replays apart."""
    from sep import ledger

    return ledger.evaluate(db, cutoff=cutoff or _cfg(settings).cutoff, seed=_cfg(settings).seed)
