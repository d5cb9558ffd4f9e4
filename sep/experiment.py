"""Walk-forward experiments (`sep experiment run FILE`): SEP's ablation table, out of sample.

Reflect over the train range, train each arm from that range only (days whose target day is on
or before `train_end`), then forecast every test day after it with each arm and score them all,
with the baselines, on the same days. With `folds = N` (or `fold_days = N`) the test days are
split into walk-forward folds with an expanding window: everything known `embargo` trading days
before a fold's first day is reflected on and trained on again (RLMF-style), and the table is
shown per fold and pooled.

The `masked` arm is the base forecast with the company and every date hidden in every prompt it
sends (sep.mask); its gap to `base` estimates how much of the base arm's accuracy is memory.
Days whose outcome lies after the answering model's training-data cutoff are scored apart
(`post_cutoff`): there, memory cannot help.

Every step resumes: reflected days, finished runs and stored forecasts are skipped on a rerun.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from sep.adapters import run_config
from sep.evidence import window_stance
from sep.decide import Decider, decidable_days, fingerprint
from sep.errors import BadInput, missing_extra, require_extra
from sep.evaluate import (Decision, backtest, backtest_summary, baselines, calibrated, calibration, equity_curves,
                          forecast_report, hits_of, once_per_interval, p_up, paired_gap, platt, score)
from sep.jobs import NEEDS, ExperimentTable, Job
from sep.memory import ArmForecast, ExperimentStore, PredictionStore, now_iso
from sep.models import CATALOG, DEFAULT_MODEL, model_cutoff
from sep.predict import reward_scorer
from sep.quality import join_asks, join_flags, reask_reasons
from sep.settings import Progress, Settings
from sep.window import DecisionWindow, outcome, trading_days, up_probability


@dataclass
class Fold:
    """Test days forecast by runs trained on what was known before the first of them."""

    index: int
    train_end: str
    days: list[tuple[str, str]]  # (stock, date)


def folds(db: sqlite_utils.Database, stocks: list[str], exp: ExperimentTable) -> list[Fold]:
    """The walk-forward folds: the test days split in time, each trained on what was known
    `embargo` trading days before its first day (the first fold: on `train_end`). One day is the
    label horizon: the last outcome training saw is the close of train_end, the first test
    outcome starts from the close of the first test day."""
    test = sorted((d, s) for s in stocks for d in decidable_days(db, s, exp.test_start, exp.test_end))
    if not test:
        raise BadInput(f"No trading days with a known next close between {exp.test_start} and {exp.test_end}.")
    dates = sorted({d for d, _ in test})
    calendar = sorted({d for s in stocks for d in trading_days(db, s).days})

    def sessions(after: str, day: str) -> int:  # trading days after `after`, up to and including `day`
        return max(0, bisect.bisect_right(calendar, day) - bisect.bisect_right(calendar, after))

    gap = sessions(exp.train_end, dates[0])
    if gap < exp.embargo:
        raise BadInput(f"[experiment] embargo = {exp.embargo} needs the first test day {dates[0]} to be {exp.embargo} "
                       f"trading day(s) after train_end {exp.train_end}, not {gap}: move test_start later or "
                       "train_end earlier.")
    if exp.folds > len(dates):
        raise BadInput(f"[experiment] folds = {exp.folds} but {exp.test_start}..{exp.test_end} has {len(dates)} test "
                       f"day(s): use at most {len(dates)} folds.")
    if exp.fold_days:
        cuts = list(range(0, len(dates), exp.fold_days)) + [len(dates)]
    else:
        cuts = [round(k * len(dates) / exp.folds) for k in range(exp.folds + 1)]
    out = []
    for lo, hi in zip(cuts, cuts[1:]):
        chunk = set(dates[lo:hi])
        # later folds learn from everything whose outcome was known `embargo` trading days before them
        at = bisect.bisect_right(calendar, dates[lo]) - exp.embargo - 1
        train_end = exp.train_end if lo == 0 else max(exp.train_end, calendar[at] if at >= 0 else exp.train_end)
        out.append(Fold(len(out), train_end, [(s, d) for d, s in test if d in chunk]))
    return out


def identity(job: Job, cfg: Settings) -> tuple[dict, str]:
    """The settings that change results, and their hash: a rerun with the same ones resumes."""
    exp = job.experiment
    fp, config = fingerprint(cfg, job.stocks, cfg.model, name=job.name, stocks=job.stocks, base_url=cfg.base_url,
                             seed=cfg.seed, best_of=exp.best_of or cfg.best_of,
                             **exp.model_dump(exclude={"best_of", "reward_head"}),
                             # only when not the default: experiments begun before the key resume (their finished runs are kept)
                             **({"reward_head": exp.reward_head}
                                if exp.reward_head != type(exp).model_fields["reward_head"].default else {}))
    return config, fp


class Experiment:
    """One walk-forward experiment over a job's stocks; `run()` returns the arm table."""

    def __init__(self, db: sqlite_utils.Database, job: Job, cfg: Settings, llm_factory: Callable[[Settings], Any],
                 on_progress: Progress | None = None, runs_dir: Path | None = None) -> None:
        if job.experiment is None:
            raise BadInput(f"The job {job.name!r} has no [experiment] table (train_start, train_end, test_start, "
                           "test_end, arms).")
        self.db, self.job, self.exp, self.cfg = db, job, job.experiment, cfg
        self.llm_factory = llm_factory
        self.on_progress = on_progress or (lambda stage, done, total: None)
        self.plan = folds(db, job.stocks, job.experiment)  # bad folds or embargo: refused before anything is written
        self.config, self.hash = identity(job, cfg)
        self.store = ExperimentStore(db)
        self.id = self.store.open(job.name, self.config, self.hash)
        self.runs_dir = Path(runs_dir or Path(cfg.db).resolve().parent / "experiments") / str(self.id)
        self.llm: Any = None
        self.decider: Decider | None = None  # the base model's, made in run()
        self.masked: Decider | None = None  # the same model, every prompt masked (the `masked` arm)
        self.skipped: dict[str, str] = {}
        self.trained_on: dict[str, str] = {}  # an arm trained on less than it asks for, and why (ppo: the market alone)

    # ------------------------------------------------------------ steps

    def reflect(self, fold: Fold, test: dict[tuple[str, str], DecisionWindow]) -> list[tuple[str, str]]:
        """SEP's loop over every train day not yet reflected on by this model (the training data).

        In the same pool: the test days' summaries (they read only texts known by D) and the base
        arm's answers (no lesson, no training), so the server never waits for the slowest retry."""
        every = [(stock, day) for stock in self.job.stocks
                 for day in decidable_days(self.db, stock, self.exp.train_start, fold.train_end, target_by=fold.train_end)]
        decided = PredictionStore(self.db).decided
        plan = self.decider.plan(every, {(s, d) for s, d in every if decided(s, d, self.llm.name)})
        train = plan.windows
        self.decider.summarize([*train, *test.values()])
        base = [test[x] for x in fold.days if x not in self._stored("base")] if "base" in self.exp.arms else []

        def one(item: tuple[str, DecisionWindow]) -> None:
            if item[0] == "reflect":
                self.decider.reflect(item[1])
            else:
                self._answer("base", item[1], self.decider, None, None)

        stage = f"reflect (train ≤ {fold.train_end})" + (", forecast: base" if base else "")
        self.decider.map([("reflect", w) for w in train] + [("base", w) for w in base], one, stage)
        return every

    def train(self, fold: Fold) -> dict[str, Path]:
        """Each run the arms need, trained on days whose target day is on or before the fold's train_end."""
        kinds = self.exp.trained_kinds()
        if not kinds:
            return {}
        require_extra("train", "An experiment with trained arms")  # only those need the train extra
        from sep import train

        folder = self.runs_dir / f"block-{fold.index}"
        made: dict[str, Path] = {}
        common = dict(max_steps=self.exp.steps, save_steps=max(self.exp.steps, 1), seed=self.cfg.seed,
                      threads=self.cfg.threads, start=self.exp.train_start, end=fold.train_end, model=self.llm.name,
                      base_model=self.llm.name if self.llm.name in CATALOG else DEFAULT_MODEL)  # the arms' base is `base`'s
        self.on_progress(f"train (≤ {fold.train_end})", 0, len(kinds))
        for i, kind in enumerate(kinds, 1):
            out = folder / kind
            if train.finished_run(out):
                made[kind] = out
            elif kind in ("ppo", "grpo") and "sft" not in made:
                self.skipped[kind] = "needs the sft run"
            else:
                extra: dict[str, Any] = {}
                if kind == "ppo":  # no reward run (too few pairs on a short range): RLMF's market reward alone
                    extra = {"sft": made["sft"], "learning_rate": 1e-5, **(
                        {"reward_kind": "both", "reward": made["reward"]} if "reward" in made else {"reward_kind": "market"})}
                elif kind == "grpo":
                    extra = {"sft": made["sft"], "batch_size": 2}
                elif kind == "reward":
                    extra = {"head": self.exp.reward_head}
                config_cls, trainer = train.trainer(kind)
                try:
                    trainer(self.cfg, config_cls(out=out, **common, **extra), self.db, None)
                    made[kind] = out
                except BadInput as exc:  # e.g. too few pairs on a short train range: the arm is reported, not run
                    self.skipped[kind] = str(exc)
                except (ImportError, KeyboardInterrupt):
                    raise
                except Exception as exc:  # a trainer that breaks loses its arms, not the whole experiment
                    self.skipped[kind] = f"{kind} training failed ({type(exc).__name__}: {exc}); see runs in memory"
            if kind == "ppo" and kind in made and run_config(made[kind]).get("reward_kind") == "market":
                self.trained_on[kind] = "the market reward alone (no reward run: " + \
                    self.skipped.get("reward", "none was asked for") + ")"
            self.on_progress(f"train (≤ {fold.train_end})", i, len(kinds))
        return made

    def _stored(self, arm: str) -> set[tuple[str, str]]:
        return self.store.answered(self.id, arm)

    def _store(self, db: sqlite_utils.Database, arm: str, w: DecisionWindow, label: str | None,
               confidence: float | None, explanation: str, response: str, model: str, data_end: str | None,
               stance: float | None = None, flags: list[str] | None = None, attempts: int = 1,
               asked_flags: list[list[str]] | None = None) -> None:
        ExperimentStore(db).store(ArmForecast(self.id, arm, w.stock, w.date, w.target_day, w.label, label, confidence,
                                              explanation, response, model, data_end, now_iso(), stance,
                                              join_flags(flags or []), attempts, join_asks(asked_flags or [])))

    def _arm_model(self, arm: str, runs: dict[str, Path]) -> Any:
        """The LLM that answers for a policy arm: the run's adapter on the base model."""
        return self.llm_factory(self.cfg.model_copy(update={"policy": runs[arm], "base_url": None}))

    def _answer(self, arm: str, w: DecisionWindow, by: Decider, scorer: Any, data_end: str | None) -> None:
        """One arm's forecast for one test day, stored. The base model's summaries (cached) are
        what every arm reads; `by` answers."""
        if arm == "best_of_n":
            f = self.decider.forecast(w, self.exp.best_of, scorer, data_end=data_end, save=False)
            self._store(by.db(), arm, w, f.label, f.confidence, f.explanation, f.candidates[f.best].response,
                        f.model, data_end)
            return
        base = (by if arm == "masked" else self.decider).agents(w.stock)  # masked reads its own masked summaries
        summaries = base.summaries(w)
        lessons = []
        if arm == "memory":  # only lessons whose outcome was known by D (recall enforces it)
            lessons = base.recall(w, base.explain_variables(w, summaries, [])["summaries"])
        variables = base.explain_variables(w, summaries, lessons)
        answer = by.agents(w.stock).forecast(variables)
        ok = not answer.flags  # a flagged answer (copied, ungrounded, ...) is unparsable
        self._store(by.db(), arm, w, answer.label if ok else None, answer.confidence if ok else None,
                    answer.explanation, answer.response, by.llm.name, data_end, window_stance(variables["_items"]),
                    answer.flags, answer.attempts, answer.asked_flags)

    def forecast(self, fold: Fold, runs: dict[str, Path], windows: dict[tuple[str, str], DecisionWindow]) -> None:
        """Every arm's answer for every test day of the fold, made with only what was known at D.

        The base model's summaries (asked for in `reflect`) are what every arm reads; arms differ
        only in how they answer. Each arm's days run `concurrency` at a time when its model is a
        server; the base arm already answered in `reflect`'s pool."""
        todo_by_arm: dict[str, list[tuple[str, str]]] = {}
        for arm in self.exp.arms:
            # the run that answers for the arm (its own; best_of_n's reward run): the rest were its training's
            # business (ppo learns from the market alone when no reward run could be trained)
            missing = [k for k in NEEDS[arm][-1:] if k not in runs]
            if missing:
                self.skipped.setdefault(arm, f"no {', '.join(missing)} run: "
                                        + "; ".join(self.skipped.get(k, "") for k in missing if k in self.skipped))
                continue
            stored = self._stored(arm)
            todo_by_arm[arm] = [(s, d) for s, d in fold.days if (s, d) not in stored]
        if "masked" in todo_by_arm and self.masked is None:
            self.masked = Decider(self.db, self.cfg, self.llm, progress=self.on_progress, mask=True)
        answering = {arm: self.masked if arm == "masked" else self.decider if arm not in ("sft", "ppo", "grpo") else
                     Decider(self.db, self.cfg, self._arm_model(arm, runs), progress=self.on_progress)
                     for arm in todo_by_arm}
        scorer = reward_scorer(runs["reward"], self.cfg) if "best_of_n" in todo_by_arm else None

        def one(item: tuple[str, str, str]) -> None:
            arm, stock, day = item
            self._answer(arm, windows[(stock, day)], answering[arm], scorer, fold.train_end if NEEDS[arm] else None)

        # the arms the base model answers share one pool (no wait between arms); each trained policy
        # answers in its own, one request at a time when it runs embedded
        shared = [a for a, todo in todo_by_arm.items() if answering[a] is self.decider and todo]
        groups = ([(", ".join(shared), self.decider, shared)] if shared else []) + \
            [(a, answering[a], [a]) for a, todo in todo_by_arm.items() if a not in shared and todo]
        for name, decider, arms in groups:
            if decider is self.masked:  # its own summaries, of masked texts, before its answers
                decider.summarize([windows[x] for x in todo_by_arm["masked"]], "summaries: masked")
            decider.map([(a, s, d) for a in arms for s, d in todo_by_arm[a]], one, f"forecast: {name}")

    # ------------------------------------------------------------ the table

    def decisions(self, arm: str) -> list[Decision]:
        rows = self.store.forecasts(self.id, arm)
        days = {s: trading_days(self.db, s) for s in {r[0] for r in rows}}
        out = []
        for stock, date, target, actual, label, conf, expl, model, data_end in rows:
            last, _, _, _, ret = outcome(self.db, stock, date, days=days[stock])
            out.append(Decision(stock, date, target, actual, label, conf, ret, expl or "", last, arm, model,
                                bool(data_end and date <= data_end)))
        return out

    def flag_counts(self, arm: str) -> dict[str, int]:
        """How many of an arm's forecasts the gate withheld, per flag (stance_mismatch, ungrounded, ...)."""
        counts = Counter(flag for flags in self.store.flags(self.id, arm) for flag in flags.split(","))
        return dict(sorted(counts.items()))

    def cutoff(self) -> dict:
        """The answering model's training-data cutoff: set (`--cutoff`, `[llm] cutoff`), else the catalog's."""
        return model_cutoff(self.llm.name, self.cfg.cutoff)

    def table(self, train_days: list[tuple[str, str]], test_days: list[tuple[str, str]]) -> dict:
        plan = self.plan
        cutoff = self.cutoff()
        arms, scored = self.arm_scores(cutoff["date"])
        for arm, ds in scored.items():
            if arm != "base" and scored.get("base"):
                arms[arm]["vs_base"] = paired_gap(ds, scored["base"], self.cfg.seed)
        calibrators = self.calibrators()
        for arm, ds in scored.items():  # each test day's P(up) through its fold's calibrator (fitted on train days)
            cal = [d for b in plan for d in calibrated([d for d in ds if (d.stock, d.date) in set(b.days)],
                                                       calibrators.get(b.index))]
            arms[arm]["calibrated"] = {**calibration(cal), "folds_fitted": sum(v is not None for v in calibrators.values())}
        reference = next(iter(scored.values()), [])
        memorization = None
        if "base" in scored and "masked" in scored:
            memorization = {**paired_gap(scored["base"], scored["masked"], self.cfg.seed),
                            "what": "base accuracy minus masked accuracy on the same days (company and dates hidden); "
                                    "a lower bound on what memory adds, see docs/agents.md"}
        folds = []
        for b in plan:
            days = set(b.days)
            folds.append({"fold": b.index, "train_end": b.train_end, "start": min(d for _, d in b.days),
                          "end": max(d for _, d in b.days), "days": len(b.days),
                          "arms": {arm: _brief(score(hits_of([d for d in ds if (d.stock, d.date) in days]), self.cfg.seed))
                                   for arm, ds in scored.items()}})
        pairs, sft_rows = PredictionStore(self.db).training_counts(self.llm.name, self.exp.train_start, self.exp.train_end)
        return {"id": self.id, "name": self.job.name, "model": self.llm.name,
                "train": {"start": self.exp.train_start, "end": self.exp.train_end, "days": len(train_days),
                          "pairs": pairs, "sft_rows": sft_rows, "last_retrain_end": max(b.train_end for b in plan)},
                "test": {"start": min(d for _, d in test_days), "end": max(d for _, d in test_days),
                         "days": len(test_days), "stocks": self.job.stocks},
                "cutoff": cutoff, "memorization": memorization, "folds": folds, "embargo": self.exp.embargo,
                "arms": arms, "baselines": baselines(self.db, reference, self.cfg.seed, self.window_stances())
                if reference else {}, "steps": self.exp.steps,
                "calibration": {"method": "Platt scaling of P(up), fitted per fold on the base model's forecasts of "
                                "the fold's training days (sep.evaluate.platt)",
                                "folds": {b.index: calibrators.get(b.index) for b in plan}},
                "lessons": self.lessons(), "uptake": uptake(scored.get("base", []), scored.get("memory", []))}

    def arm_scores(self, cutoff: str | None) -> tuple[dict[str, dict], dict[str, list]]:
        """Each arm's scores on its test days (accuracy, flags, re-asks, backtest, per stock, before and
        after the model's cutoff), and its scored decisions; an arm with no run says why it was skipped."""
        arms: dict[str, dict] = {}
        scored: dict[str, list] = {}
        for arm in self.exp.arms:
            ds = once_per_interval(self.decisions(arm))
            if arm in self.skipped and not ds:
                arms[arm] = {"n": 0, "skipped": self.skipped[arm]}
                continue
            leaked = [d for d in ds if d.in_sample]
            if leaked:  # cannot happen by construction; refuse to print a number if it ever does
                raise RuntimeError(f"arm {arm}: {len(leaked)} test days on or before its training data_end")
            scored[arm] = ds
            bt = backtest(ds)
            arms[arm] = {**forecast_report(ds, self.cfg.seed), "flags": self.flag_counts(arm),
                         **({"trained_on": self.trained_on[arm]} if arm in self.trained_on else {}),
                         "reasked": self.store.reasked(self.id, arm),
                         "reasked_flags": reask_reasons(self.store.asked_flags(self.id, arm)),
                         "backtest": backtest_summary(bt),
                         "curves": equity_curves(bt),
                         "by_stock": {s: _brief(score(hits_of([d for d in ds if d.stock == s]), self.cfg.seed))
                                      for s in self.job.stocks if any(d.stock == s for d in ds)},
                         **{name: score(hits_of(part), self.cfg.seed) for name, part in
                            _cutoff_slices(ds, cutoff).items()}}
        return arms, scored

    def window_stances(self) -> dict[tuple[str, str], float | None]:
        """Each test day's window stance (the stance-only baseline), as the base arm read it."""
        return self.store.window_stances(self.id)

    def calibrators(self) -> dict[int, tuple[float, float] | None]:
        """Per fold, Platt's (a, b) fitted on the base model's forecasts (trial 0) of the training days
        whose outcome was known by the fold's train_end: past days only."""
        out = {}
        for b in self.plan:
            rows = PredictionStore(self.db).answered_forecasts(self.llm.name, self.exp.train_start, b.train_end)
            out[b.index] = platt([(up_probability(label, conf), 1.0 if actual == "up" else 0.0)
                                  for label, conf, actual in rows])
        return out

    def lessons(self) -> dict:
        """The lessons reflection wrote on the training days: how many pass the gate, and why the rest don't."""
        rows = PredictionStore(self.db).lesson_flags(self.llm.name, self.exp.train_start, self.exp.train_end)
        flags: dict[str, int] = {}
        for f in rows:
            for name in (f or "").split(","):
                if name:
                    flags[name] = flags.get(name, 0) + 1
        passed = sum(1 for f in rows if not f)
        return {"n": len(rows), "passed": passed, "pass_rate": passed / len(rows) if rows else None, "flags": flags}

    def run(self) -> dict:
        if self.exp.trained_kinds() and (module := missing_extra("train")):
            need = [a for a in self.exp.arms if NEEDS[a]]
            raise BadInput(f"Arms {', '.join(need)} need the train extra ({module} is missing): "
                           "pip install -e '.[train]', or keep arms = [\"base\", \"memory\"].")
        self.llm = self.llm_factory(self.cfg)
        self.decider = Decider(self.db, self.cfg, self.llm, progress=self.on_progress)
        try:
            plan = self.plan
            train_days: list[tuple[str, str]] = []
            for fold in plan:
                test = dict(zip(fold.days, self.decider.windows(fold.days)))  # summarised in `reflect`
                train_days = self.reflect(fold, test)
                runs = self.train(fold)
                self.forecast(fold, runs, test)
            result = self.table(train_days, [x for b in plan for x in b.days])
        except BaseException as exc:
            self.store.fail(self.id, f"{type(exc).__name__}: {exc}")
            raise
        self.store.finish(self.id, result)
        return result


BRIEF = ("n", "answered", "coverage", "accuracy", "accuracy_answered", "mcc")


UPTAKE_SHIFT = 0.10  # a recalled lesson "took" when the label flips or P(up) moves at least this much


def uptake(base: list[Decision], memory: list[Decision]) -> dict | None:
    """Lesson uptake: on the days both arms answered, the share where recalling lessons (memory)
    flipped the label or moved P(up) by at least UPTAKE_SHIFT against the same model without them."""
    if not base or not memory:
        return None
    other = {(d.stock, d.date): d for d in base}
    pairs = [(d, other[(d.stock, d.date)]) for d in memory if (d.stock, d.date) in other]
    if not pairs:
        return None
    flipped = sum(m.label != b.label for m, b in pairs)
    moved = sum(m.label != b.label or abs(p_up(m) - p_up(b)) >= UPTAKE_SHIFT for m, b in pairs)
    return {"n": len(pairs), "flipped": flipped, "moved": moved, "rate": moved / len(pairs), "shift": UPTAKE_SHIFT}


def _brief(s: dict) -> dict:
    """The figures a per-stock or per-fold row shows."""
    return {k: s[k] for k in BRIEF}


def _cutoff_slices(ds: list[Decision], cutoff: str | None) -> dict[str, list[Decision]]:
    """Days whose outcome (the target day's close) the model could have read in training, and the rest."""
    if cutoff is None:
        return {}
    return {"pre_cutoff": [d for d in ds if d.target_day <= cutoff],
            "post_cutoff": [d for d in ds if d.target_day > cutoff]}


def listing(db: sqlite_utils.Database) -> list[dict]:
    """Every experiment in the memory, newest first: what `sep experiment list` prints."""
    out = []
    for id_, name, config, status, started, finished, result in ExperimentStore(db).listing():
        cfg, res = json.loads(config or "{}"), json.loads(result or "{}")
        base = res.get("arms", {}).get("base", {})
        out.append({"id": id_, "name": name, "status": status, "started_at": started, "finished_at": finished,
                    "model": res.get("model") or cfg.get("model"), "arms": cfg.get("arms"),
                    "test": f"{cfg.get('test_start')}..{cfg.get('test_end')}", "stocks": cfg.get("stocks"),
                    "test_days": res.get("test", {}).get("days"), "base_accuracy": base.get("accuracy"),
                    "error": res.get("error")})
    return out


def show(db: sqlite_utils.Database, experiment_id: int) -> dict:
    store = ExperimentStore(db)
    row = store.get(experiment_id)
    if not row:
        known = [str(r[0]) for r in reversed(store.listing())]
        raise BadInput(f"No experiment {experiment_id}" + (f"; known: {', '.join(known)}." if known else "; none has run yet."))
    if row[1] != "done" or not row[0]:
        raise BadInput(f"Experiment {experiment_id} is {row[1]}; rerun `sep experiment run` with its job file to finish it.")
    return json.loads(row[0])
