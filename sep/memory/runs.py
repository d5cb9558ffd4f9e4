"""The `runs` table (`sep.train`): one row per training run, started, then done or failed."""

from __future__ import annotations

import json

import sqlite_utils

from sep.memory.db import now_iso, transaction


class RunStore:
    """Every write of `runs`: a run is recorded when it starts, so a crash leaves it `running` and a
    failure says why."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def start(self, kind: str, out: str, config: dict, data_hash: str, examples: int, stocks: list[str] | None,
              data_start: str | None, data_end: str | None, base_model: str | None) -> int:
        with transaction(self.db):
            cur = self.db.execute(
                "INSERT INTO runs (kind, out, config, data_hash, examples, status, started_at, stocks, data_start, "
                "data_end, base_model) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [kind, out, json.dumps(config), data_hash, examples, "running", now_iso(),
                 json.dumps(stocks) if stocks is not None else None, data_start, data_end, base_model])
            return cur.lastrowid

    def finish(self, run_id: int, metrics: dict) -> None:
        self._end(run_id, "done", metrics)

    def fail(self, run_id: int, exc: BaseException) -> None:
        self._end(run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})

    def _end(self, run_id: int, status: str, metrics: dict) -> None:
        with transaction(self.db):
            self.db.execute("UPDATE runs SET status = ?, metrics = ?, finished_at = ? WHERE id = ?",
                            [status, json.dumps(metrics), now_iso(), run_id])
