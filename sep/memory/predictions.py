"""Decisions (`sep.agents`, `sep.predict`): predictions, the lessons written after a miss, and the
wrong→right pairs the trainers learn from, stored one decision per transaction."""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from sep.memory.db import AlsoWrite, insert_row, scope, transaction

@dataclass
class PredictionRow:
    """One row of `predictions`: a trial of the reflect loop (trial 0 is the forecast) or a best-of-n answer."""

    stock: str
    date: str
    trial: int
    target_day: str
    actual: str | None
    label: str | None
    explanation: str
    confidence: float | None
    correct: bool
    response: str
    prompt: str
    model: str
    created_at: str
    method: str = "reflect"
    flags: str | None = None  # comma-joined quality flags
    evidence: str | None = None  # JSON of the cited items
    candidates: str | None = None  # best-of-n: JSON of every candidate
    data_end: str | None = None
    window_stance: float | None = None
    attempts: int = 1  # asks the answer took: a forecast the quality gate flagged is asked again
    asked_flags: str | None = None  # then each ask's flags, asks apart by ';' (sep.quality.join_asks)


@dataclass
class ReflectionRow:
    """A lesson written after a miss (only an unflagged one is ever recalled)."""

    stock: str
    date: str
    target_day: str
    trial: int
    reflection: str
    model: str
    created_at: str
    flags: str | None = None
    detail: str | None = None  # JSON: the misled item and why, the overlooked one, the text as written


@dataclass
class PairRow:
    """A wrong→right retry: training data for the reward model and the policies."""

    stock: str
    date: str
    prompt: str
    chosen: str
    rejected: str
    chosen_label: str | None
    rejected_label: str | None
    model: str
    created_at: str


class PredictionStore:
    """Every write of `predictions`, `reflections` and `pairs`: a decision is stored in one transaction,
    and a rerun of the same (stock, D, method, model) replaces its predictions."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def lessons(self, stock: str, date: str, before: str | None = None, limit: int = 200) -> list[tuple[str, str]]:
        """(lesson, day) of the unflagged reflections a decision at the end of `date` may recall: the outcome
        was known by D (target day <= D), newest first; `before`: only those stored before that moment."""
        since = "AND created_at < ? " if before else ""
        return [tuple(r) for r in self.db.execute(
            "SELECT reflection, date FROM reflections WHERE stock = ? AND target_day <= ? AND date < ? "
            f"AND flags IS NULL {since}ORDER BY date DESC LIMIT ?",
            [stock, date, date, *([before] if before else []), limit]).fetchall()]

    def pairs(self) -> list[tuple[str, str, str, str, str]]:
        """(prompt, chosen, rejected, stock, date) of every pair, in stock and day order."""
        return [tuple(r) for r in self.db.execute(
            "SELECT prompt, chosen, rejected, stock, date FROM pairs ORDER BY stock, date, id").fetchall()]

    def right_first_answers(self, model: str | None = None) -> list[tuple[str, str, str, str]]:
        """(prompt, response, stock, date) of every trial-0 answer the market proved right: SFT's examples."""
        return [tuple(r) for r in self.db.execute(
            "SELECT prompt, response, stock, date FROM predictions WHERE method = 'reflect' AND trial = 0 "
            "AND correct = 1 AND (? IS NULL OR model = ?)", [model, model]).fetchall()]

    def pairs_with_outcome(self, model: str | None = None) -> list[tuple]:
        """(prompt, chosen, rejected, chosen_label, actual, stock, date) of every pair by day: the day's
        outcome says which side the market proved right."""
        return [tuple(r) for r in self.db.execute(
            "SELECT p.prompt, p.chosen, p.rejected, p.chosen_label, (SELECT actual FROM predictions q WHERE "
            "q.stock = p.stock AND q.date = p.date AND q.method = 'reflect' LIMIT 1), p.stock, p.date FROM pairs p "
            "WHERE (? IS NULL OR p.model = ?) ORDER BY p.date, p.stock, p.id", [model, model]).fetchall()]

    def first_prompts(self, model: str | None = None) -> list[tuple[str, str, str]]:
        """(prompt, stock, date) of each decided (stock, day)'s first trial: the prompts RL rolls out on."""
        return [tuple(r) for r in self.db.execute(
            "SELECT prompt, stock, date FROM predictions WHERE method = 'reflect' AND trial = 0 "
            "AND (? IS NULL OR model = ?) GROUP BY stock, date ORDER BY date, stock", [model, model]).fetchall()]

    def forecast(self, stock: str, date: str, model: str, method: str) -> tuple[str | None, float | None, str, str | None] | None:
        """(label, confidence, prompt, evidence JSON) of the forecast (trial 0) of one model and method."""
        row = self.db.execute("SELECT label, confidence, prompt, evidence FROM predictions WHERE stock = ? AND date = ? "
                              "AND model = ? AND method = ? AND trial = 0", [stock, date, model, method]).fetchone()
        return tuple(row) if row else None

    def decided(self, stock: str, date: str, model: str, method: str = "reflect") -> bool:
        return self.db.execute("SELECT 1 FROM predictions WHERE stock = ? AND date = ? AND method = ? AND model = ? "
                               "LIMIT 1", [stock, date, method, model]).fetchone() is not None

    def training_counts(self, model: str, start: str, end: str) -> tuple[int, int]:
        """(pairs, forecasts that were right) of one model's reflect runs on the days start..end."""
        pairs = self.db.execute("SELECT COUNT(*) FROM pairs WHERE model = ? AND date >= ? AND date <= ?",
                                [model, start, end]).fetchone()[0]
        right = self.db.execute("SELECT COUNT(*) FROM predictions WHERE model = ? AND method = 'reflect' AND trial = 0 "
                                "AND correct = 1 AND date >= ? AND date <= ?", [model, start, end]).fetchone()[0]
        return pairs, right

    def answered_forecasts(self, model: str, start: str, target_by: str) -> list[tuple[str, float, str]]:
        """(label, confidence, actual) of one model's unflagged reflect forecasts from `start` whose target
        day is on or before `target_by`."""
        return self.db.execute(
            "SELECT label, confidence, actual FROM predictions WHERE model = ? AND method = 'reflect' AND trial = 0 "
            "AND date >= ? AND target_day <= ? AND label IS NOT NULL AND confidence IS NOT NULL AND flags IS NULL",
            [model, start, target_by]).fetchall()

    def lesson_flags(self, model: str, start: str, end: str) -> list[str | None]:
        """The flags of each lesson one model wrote on the days start..end (None: it passed the gate)."""
        return [f for (f,) in self.db.execute("SELECT flags FROM reflections WHERE model = ? AND date >= ? AND date <= ?",
                                              [model, start, end]).fetchall()]

    def scored(self, stocks: list[str], start: str | None, end: str | None, method: str, last_trial: bool) -> list[tuple]:
        """(stock, date, target_day, actual, label, confidence, explanation, model, data_end, flags) of each stored
        decision of `method` in scope: trial 0 (the forecast), or with `last_trial` each run's last trial."""
        cond = ("p.trial = (SELECT MAX(trial) FROM predictions q WHERE q.stock = p.stock AND q.date = p.date "
                "AND q.method = p.method AND q.model = p.model)") if last_trial else "p.trial = 0"
        where, args = scope(stocks, start, end, "p.")
        return self.db.execute(
            "SELECT p.stock, p.date, p.target_day, p.actual, p.label, p.confidence, p.explanation, p.model, p.data_end, "
            f"p.flags FROM predictions p WHERE p.method = ? AND {cond} AND {where} "
            "ORDER BY p.date, p.stock, p.model", [method, *args]).fetchall()

    def forecast_groups(self, stocks: list[str], start: str | None, end: str | None) -> list[tuple[str, str, int]]:
        """(method, model, days) of every forecasting method and model stored in scope."""
        where, args = scope(stocks, start, end)
        return [tuple(r) for r in self.db.execute(
            f"SELECT method, model, COUNT(*) FROM predictions WHERE trial = 0 AND {where} "
            "GROUP BY method, model ORDER BY method DESC, model", args).fetchall()]

    def save(self, predictions: list[PredictionRow], reflections: list[ReflectionRow] = (),
             pairs: list[PairRow] = (), also: AlsoWrite | None = None) -> None:
        """One decision's rows (all of one stock, D, method and model), replacing an earlier run's, and
        `also` (a batch's record that the day is done) in the same transaction: both land, or neither.

        A redone reflect replaces that day's lessons and pairs as well: a lesson whose miss the redo
        no longer made must not stay recallable."""
        if not predictions and also is None:
            return
        with transaction(self.db):
            if predictions:
                self._replace(predictions, reflections, pairs)
            if also is not None:
                also(self.db)

    def _replace(self, predictions: list[PredictionRow], reflections: list[ReflectionRow],
                 pairs: list[PairRow]) -> None:
        """Inside `save`'s transaction: the decision's earlier rows out, these in."""
        first = predictions[0]
        key = [first.stock, first.date, first.model]
        self.db.execute("DELETE FROM predictions WHERE stock = ? AND date = ? AND model = ? AND method = ?",
                        [*key, first.method])
        if first.method == "reflect":  # best-of-n writes no lessons or pairs; it leaves the reflect's alone
            self.db.execute("DELETE FROM reflections WHERE stock = ? AND date = ? AND model = ?", key)
            self.db.execute("DELETE FROM pairs WHERE stock = ? AND date = ? AND model = ?", key)
        for row in predictions:
            insert_row(self.db, "INSERT", "predictions", row)
        for row in reflections:  # this model's rows of the day were deleted above: nothing to replace
            insert_row(self.db, "INSERT", "reflections", row)
        for row in pairs:
            insert_row(self.db, "INSERT", "pairs", row)
