"""Batch jobs (`sep.batch`): `jobs` (a name tied to the fingerprint of what changes answers),
`batch_items` (each stock-day's last outcome), and an offline job's exported `batch_requests` and
ingested `batch_results`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import sqlite_utils

from sep.memory.db import AlsoWrite, now_iso, transaction

# a result row as ingested: custom_id, body sha, "ok" or "failed", the response (JSON) and the error
ResultRow = tuple[str, str, str, str | None, str | None]


class JobStore:
    """Every SQL statement of a batch job, live or offline, keyed by the job's name."""

    def __init__(self, db: sqlite_utils.Database, name: str) -> None:
        self.db, self.name = db, name

    # ------------------------------------------------------------ the job and its items

    def claimed(self) -> tuple[str, str, dict] | None:
        """(fingerprint, model, config) the job last ran with; None when it never ran."""
        row = self.db.execute("SELECT fingerprint, model, config FROM jobs WHERE name = ?", [self.name]).fetchone()
        return (row[0], row[1], json.loads(row[2])) if row else None

    def claim(self, fingerprint: str, model: str, config: dict, restart: bool = False) -> None:
        """Tie the name to this fingerprint; `restart` also forgets the job's items and when it began."""
        with transaction(self.db):
            if restart:
                self.db.execute("DELETE FROM batch_items WHERE job = ?", [self.name])
            # created_at is when the job began (kept across resumes): its days recall only lessons stored before it
            self.db.execute("INSERT INTO jobs (name, fingerprint, model, config, created_at) VALUES (?,?,?,?,?) "
                            "ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint, model = excluded.model, "
                            "config = excluded.config" + (", created_at = excluded.created_at" if restart else ""),
                            [self.name, fingerprint, model, json.dumps(config, ensure_ascii=False), now_iso()])

    def began(self) -> str:
        return self.db.execute("SELECT created_at FROM jobs WHERE name = ?", [self.name]).fetchone()[0]

    def done_days(self) -> set[tuple[str, str]]:
        return {(s, d) for s, d in self.db.execute(
            "SELECT stock, date FROM batch_items WHERE job = ? AND status = 'done'", [self.name]).fetchall()}

    def failed_days(self) -> dict[tuple[str, str], str]:
        return {(s, d): e for s, d, e in self.db.execute(
            "SELECT stock, date, error FROM batch_items WHERE job = ? AND status = 'failed'", [self.name]).fetchall()}

    def record_item(self, stock: str, date: str, error: str | None, seconds: float) -> None:
        """One stock-day's last outcome: done, or failed with its error (retried next run)."""
        with transaction(self.db):
            self._write_item(self.db, stock, date, error, seconds)

    def done_with(self, stock: str, date: str, started: float) -> AlsoWrite:
        """The record that a stock-day is done, for the transaction that stores its last decision
        (`PredictionStore.save(also=...)`): a kill can't fall between the day and its record."""
        return lambda db: self._write_item(db, stock, date, None, time.perf_counter() - started)

    def _write_item(self, db: sqlite_utils.Database, stock: str, date: str, error: str | None, seconds: float) -> None:
        db.execute("INSERT OR REPLACE INTO batch_items (job, stock, date, status, error, seconds, updated_at) "
                   "VALUES (?,?,?,?,?,?,?)", [self.name, stock, date, "failed" if error else "done", error, seconds, now_iso()])

    # ------------------------------------------------------------ an offline job's requests and results

    def exported_any(self) -> bool:
        return bool(self.db.execute("SELECT 1 FROM batch_requests WHERE job = ? LIMIT 1", [self.name]).fetchone())

    def requests(self) -> dict[str, str]:
        """Every exported request's custom_id and the sha of its body."""
        return dict(self.db.execute("SELECT custom_id, body_sha FROM batch_requests WHERE job = ?", [self.name]))

    def store_requests(self, rows: Iterable[tuple[str, str, str, str, int, str, dict]]) -> None:
        """(custom_id, stage, stock, date, trial, body sha, body): a request asked again replaces its old
        one, and drops a result of it."""
        now = now_iso()
        with transaction(self.db):
            for cid, stage, stock, date, trial, sha, body in rows:
                self.db.execute("DELETE FROM batch_results WHERE job = ? AND custom_id = ?", [self.name, cid])
                self.db.execute("INSERT OR REPLACE INTO batch_requests (job, custom_id, stage, stock, date, trial, "
                                "body_sha, body, exported_at) VALUES (?,?,?,?,?,?,?,?,?)",
                                [self.name, cid, stage, stock, date, trial, sha, json.dumps(body, ensure_ascii=False), now])

    def answers(self) -> dict[str, tuple[str, dict | None]]:
        """custom_id → (the body sha it answered, the response; None for a failed one)."""
        return {cid: (sha, json.loads(resp) if status == "ok" else None) for cid, sha, status, resp in self.db.execute(
            "SELECT custom_id, body_sha, status, response FROM batch_results WHERE job = ?", [self.name])}

    def store_results(self, rows: Iterable[ResultRow]) -> None:
        now = now_iso()
        with transaction(self.db):
            for cid, sha, state, response, error in rows:
                self.db.execute("INSERT OR REPLACE INTO batch_results (job, custom_id, body_sha, status, response, "
                                "error, ingested_at) VALUES (?,?,?,?,?,?,?)",
                                [self.name, cid, sha, state, response, error, now])

    def outstanding(self) -> dict[str, int]:
        """Exported requests with no result yet, per stage."""
        return dict(self.db.execute(
            "SELECT r.stage, COUNT(*) FROM batch_requests r LEFT JOIN batch_results x ON x.job = r.job AND "
            "x.custom_id = r.custom_id AND x.body_sha = r.body_sha WHERE r.job = ? AND x.custom_id IS NULL "
            "GROUP BY r.stage", [self.name]).fetchall())

    def stage_counts(self) -> list[tuple[str, int, int, int]]:
        """Per stage: (stage, exported, answered, failed)."""
        return [(stage, n, ok or 0, bad or 0) for stage, n, ok, bad in self.db.execute(
            "SELECT r.stage, COUNT(*), SUM(x.status = 'ok'), SUM(x.status = 'failed') FROM batch_requests r "
            "LEFT JOIN batch_results x ON x.job = r.job AND x.custom_id = r.custom_id AND x.body_sha = r.body_sha "
            "WHERE r.job = ? GROUP BY r.stage", [self.name]).fetchall()]
