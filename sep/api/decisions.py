"""Models, decisions (reflect, forecast), stances and pairs, one call each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from sep.api.common import Step, settings_or_env
from sep.api.data import open_memory, show_window
from sep.errors import BadInput, ordered, require_extra
from sep.ingest import normalise_stock
from sep.settings import EXAMPLES_PER_LABEL, Progress, Settings

# ---------------------------------------------------------------- agents


def make_llm(settings: Settings | None = None, progress: Progress | None = None) -> Any:
    """The configured model: `backend` by name, else a server (`base_url`), a trained `policy`, or the
    embedded one; its first preparation is reported as the stage "preparing the model"."""
    from sep.backends import make_llm as _make

    return _make(settings_or_env(settings), (lambda done, total: progress("preparing the model", done, total)) if progress else None)


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

    cfg = settings_or_env(settings)
    code = normalise_stock(stock)
    days = list(days) if days is not None else decision_days(db, code, date=date, start=start, end=end)
    plan = Decider(db, cfg, None).plan([(code, d) for d in days])  # bad input fails before a model loads
    if llm is None and not dry_run:
        llm = make_llm(cfg, progress)
    used = None if dry_run else llm
    decider = Decider(db, cfg, used, on_step=on_step, progress=progress)
    results = decider.run(plan, decider.reflect, on_day=on_day)
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

    cfg = settings_or_env(settings).with_overrides(best_of=best_of, temperature=temperature)
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
           lang: str | None = None, out: Path | None = None, examples: Path | None = None,
           examples_per_label: int = EXAMPLES_PER_LABEL, settings: Settings | None = None,
           db: sqlite_utils.Database | None = None, llm: Any = None, progress: Progress | None = None) -> Stanced:
    """The model's stance (positive, neutral, negative, with probabilities) of each text: a list of
    texts, or a CSV/xlsx/JSONL file's `text_column` (comma-separated for several). With
    `label_column` the judgements are scored against it. `out` writes one row per text (.csv or
    .jsonl). Judgements are cached in memory (`db`, default the settings' file): a rerun resumes.
    A `--policy` that `sep train stance` made asks with the prompt it learned on (RUN/prompts).
    `examples`: a labelled file (the same text columns, `label_column` or "label") whose nearest
    texts, `examples_per_label` of each label, are each text's worked examples (`ExamplePool`).
    `progress(stage, done, total)` hears "preparing the model" and "judging"."""
    from sep.stances import ExamplePool, StanceJudge, read_table, stance_scores, text_columns, write_judged

    cfg = settings_or_env(settings)
    if lang not in (None, "ko", "en"):
        raise BadInput(f"--lang must be ko or en, not {lang!r}.")
    columns = text_columns(text_column)
    if isinstance(source, (str, Path)):
        table = read_table(Path(source), columns, label_column)
        texts, labels = table.texts, table.labels
    else:
        texts, labels = [" ".join(str(t).split()) for t in source], None
        if not texts:
            raise BadInput("No texts to judge.")
    pool = None if examples is None else ExamplePool.read(Path(examples), columns, label_column or "label",
                                                          examples_per_label)
    prompts_dir = cfg.prompts
    if cfg.policy and (Path(cfg.policy) / "prompts").is_dir():
        prompts_dir = Path(cfg.policy) / "prompts"
    llm = llm if llm is not None else make_llm(cfg, progress)  # after the checks: bad input fails first
    memory = db if db is not None else open_memory(cfg.db)
    judge = StanceJudge(llm, prompts_dir=prompts_dir, db=memory, concurrency=cfg.concurrency, examples=pool)
    judged = judge.judge(texts, lang, (lambda done, total: progress("judging", done, total)) if progress else None)
    if out is not None:
        write_judged(judged, Path(out), labels)
    return Stanced(judge.model, judged, labels, stance_scores(judged, labels) if labels else None,
                   Path(out) if out else None)


def export_pairs(db: sqlite_utils.Database, out: Path) -> int:
    """Write the stored wrong→right pairs as TRL preference JSONL (prompt, chosen, rejected); the count."""
    from sep.agents import export_pairs as _export

    return _export(db, Path(out))


