"""Walk-forward experiments (`sep.experiment`): `experiments` (one per config hash, its status and
result) and `experiment_forecasts` (each arm's answer for each test day)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlite_utils

from sep.memory.db import insert_row, now_iso, transaction


@dataclass
class ArmForecast:
    """One arm's answer for one test day; `flags` are the gate's reasons when it withheld the answer."""

    experiment: int
    arm: str
    stock: str
    date: str
    target_day: str
    actual: str | None
    label: str | None
    confidence: float | None
    explanation: str
    response: str
    model: str
    data_end: str | None
    created_at: str
    window_stance: float | None = None
    flags: str | None = None
    attempts: int = 1  # asks the forecast took (Agents.forecast asks again while the gate flags it)
    asked_flags: str | None = None  # then each ask's flags, asks apart by ';' (sep.quality.join_asks)


class ExperimentStore:
    """Every SQL statement of an experiment and its arms' forecasts."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def open(self, name: str, config: dict, config_hash: str) -> int:
        """The experiment of this config (resumed), or a new one, running."""
        row = self.db.execute("SELECT id FROM experiments WHERE config_hash = ?", [config_hash]).fetchone()
        if row:
            return row[0]
        with transaction(self.db):
            return self.db.execute("INSERT INTO experiments (name, config, config_hash, status, started_at) "
                                   "VALUES (?,?,?,?,?)", [name, json.dumps(config), config_hash, "running",
                                                          now_iso()]).lastrowid

    def finish(self, experiment: int, result: dict) -> None:
        with transaction(self.db):
            self.db.execute("UPDATE experiments SET status = 'done', result = ?, finished_at = ? WHERE id = ?",
                            [json.dumps(result, ensure_ascii=False), now_iso(), experiment])

    def fail(self, experiment: int, error: str) -> None:
        with transaction(self.db):
            self.db.execute("UPDATE experiments SET status = 'failed', result = ? WHERE id = ?",
                            [json.dumps({"error": error}), experiment])

    def store(self, row: ArmForecast) -> None:
        with transaction(self.db):
            insert_row(self.db, "INSERT OR REPLACE", "experiment_forecasts", row)

    def answered(self, experiment: int, arm: str) -> set[tuple[str, str]]:
        return {(s, d) for s, d in self.db.execute("SELECT stock, date FROM experiment_forecasts WHERE experiment = ? "
                                                   "AND arm = ?", [experiment, arm]).fetchall()}

    def forecasts(self, experiment: int, arm: str) -> list[tuple]:
        """(stock, date, target_day, actual, label, confidence, explanation, model, data_end), by date."""
        return self.db.execute("SELECT stock, date, target_day, actual, label, confidence, explanation, model, data_end "
                               "FROM experiment_forecasts WHERE experiment = ? AND arm = ? ORDER BY date, stock",
                               [experiment, arm]).fetchall()

    def reasked(self, experiment: int, arm: str) -> int:
        """An arm's forecasts the gate flagged at first and that were asked again."""
        return self.db.execute("SELECT COUNT(*) FROM experiment_forecasts WHERE experiment = ? AND arm = ? "
                               "AND attempts > 1", [experiment, arm]).fetchone()[0]

    def asked_flags(self, experiment: int, arm: str) -> list[str]:
        """Each re-asked forecast's asks and their flags, as stored (sep.quality.join_asks)."""
        return [f for (f,) in self.db.execute("SELECT asked_flags FROM experiment_forecasts WHERE experiment = ? "
                                              "AND arm = ? AND asked_flags IS NOT NULL", [experiment, arm]).fetchall()]

    def flags(self, experiment: int, arm: str) -> list[str]:
        """Each withheld forecast's flags, comma-joined."""
        return [f for (f,) in self.db.execute("SELECT flags FROM experiment_forecasts WHERE experiment = ? AND arm = ? "
                                              "AND flags IS NOT NULL", [experiment, arm]).fetchall()]

    def window_stances(self, experiment: int) -> dict[tuple[str, str], float | None]:
        return {(s, d): v for s, d, v in self.db.execute(
            "SELECT stock, date, window_stance FROM experiment_forecasts WHERE experiment = ? AND arm = 'base'",
            [experiment]).fetchall()}

    def listing(self) -> list[tuple]:
        """(id, name, config, status, started_at, finished_at, result) of every experiment, newest first."""
        return self.db.execute("SELECT id, name, config, status, started_at, finished_at, result FROM experiments "
                               "ORDER BY id DESC").fetchall()

    def get(self, experiment: int) -> tuple[str | None, str, str] | None:
        """(result, status, config) of one experiment."""
        row = self.db.execute("SELECT result, status, config FROM experiments WHERE id = ?", [experiment]).fetchone()
        return tuple(row) if row else None
