"""Deduplication (`sep.dedup`): each text's marks (copy of, kind, topic, flag, representative), the
runs (`dedup_runs`), and per fitted range the topics and the topic model (`topics`, `topic_models`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlite_utils

from sep.memory.db import now_iso, scope, transaction


@dataclass
class DedupRun:
    """One `dedup_runs` row: what a run read, kept and took."""

    stock: str
    start: str | None
    end: str | None
    refit: bool
    embedder: str
    params: str
    input: int
    exact_duplicates: int
    near_duplicates: int
    off_topic: int
    kept: int
    topics: int
    seconds: float
    timings: dict


class DedupStore:
    """Every SQL statement of a dedup."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def candidates(self, stock: str, start: str | None, end: str | None, refit: bool) -> list[tuple]:
        """(id, date, source, title, body, injection, injection_allowed) of the days to decide: every day in
        range on refit, else the days holding a text not yet decided; by date, time and id."""
        cond, args = scope([stock], start, end)
        if not refit:
            cond += f" AND date IN (SELECT DISTINCT date FROM texts WHERE {cond} AND is_representative IS NULL)"
            args = args + args
        return self.db.execute(f"SELECT id, date, source, title, body, injection, injection_allowed FROM texts "
                               f"WHERE {cond} ORDER BY date, published_at, id", args).fetchall()

    def models(self, stock: str, embedder: str) -> list[tuple[int, str, str]]:
        """(run, first_day, last_day) of the stock's stored topic models of this embedder, newest first."""
        return self.db.execute("SELECT run, first_day, last_day FROM topic_models WHERE stock = ? AND embedder = ? "
                               "ORDER BY run DESC", [stock, embedder]).fetchall()

    def model(self, run: int) -> tuple[str, bytes]:
        """(format, blob) of one stored topic model."""
        return tuple(self.db.execute("SELECT format, model FROM topic_models WHERE run = ?", [run]).fetchone())

    def topic_flags(self, stock: str, run: int) -> dict[int, str]:
        return dict(self.db.execute("SELECT topic, flag FROM topics WHERE stock = ? AND run = ? AND flag IS NOT NULL",
                                    [stock, run]).fetchall())

    def topic_table(self, stock: str, run: int | None) -> list[dict]:
        """The topics of one stored model (the one a run fitted or used), largest first."""
        rows = self.db.execute("SELECT topic, size, words, example, flag FROM topics WHERE stock = ? AND run = ? "
                               "ORDER BY size DESC, topic", [stock, run]).fetchall()
        return [dict(zip(("topic", "size", "words", "example", "flag"), r)) for r in rows]

    def mark_injections(self, marks: list[tuple[str, int]]) -> None:
        """(injection, id): the text joins no story and is never a representative."""
        with transaction(self.db):
            self.db.conn.executemany("UPDATE texts SET injection=?, flag='injection', is_representative=0, dup_of=NULL, "
                                     "dup_kind=NULL, topic=NULL WHERE id=?", marks)

    def save(self, run: DedupRun, marks: list[tuple], topics: list[tuple], model: tuple | None,
             model_run: int | None) -> tuple[int, int | None]:
        """The run, each text's marks (dup_of, dup_kind, topic, flag, is_representative, id) and, when `model`
        = (first_day, last_day, format, blob) is given, its topics (topic, size, words, example, flag) and
        the model; a refit replaces the model of the same range. Returns (run, the run of its topic model)."""
        with transaction(self.db):
            cur = self.db.execute(
                'INSERT INTO dedup_runs (stock, start, "end", refit, embedder, params, input, exact_duplicates, '
                "near_duplicates, off_topic, kept, topics, seconds, timings, at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [run.stock, run.start, run.end, int(run.refit), run.embedder, run.params, run.input,
                 run.exact_duplicates, run.near_duplicates, run.off_topic, run.kept, run.topics, run.seconds,
                 json.dumps(run.timings), now_iso()])
            run_id = cur.lastrowid
            self.db.conn.executemany(
                "UPDATE texts SET dup_of=?, dup_kind=?, topic=?, flag=?, is_representative=?, dedup_run=? WHERE id=?",
                [(*m[:5], run_id, m[5]) for m in marks])
            if run.refit:  # a model of the same range no longer describes these texts; other ranges keep theirs
                for (old,) in self.db.execute('SELECT run FROM topic_models WHERE stock = ? AND start IS ? AND "end" IS ?',
                                              [run.stock, run.start, run.end]).fetchall():
                    self.db.execute("DELETE FROM topics WHERE stock = ? AND run = ?", [run.stock, old])
                    self.db.execute("DELETE FROM topic_models WHERE run = ?", [old])
                model_run = None
            if model is not None:
                model_run = run_id
                self.db.conn.executemany(
                    "INSERT INTO topics (stock, topic, run, size, words, example, flag) VALUES (?,?,?,?,?,?,?)",
                    [(run.stock, t[0], run_id, *t[1:]) for t in topics])
                self.db.execute('INSERT INTO topic_models (run, stock, start, "end", first_day, last_day, embedder, '
                                "format, model) VALUES (?,?,?,?,?,?,?,?,?)",
                                [run_id, run.stock, run.start, run.end, *model[:2], run.embedder, *model[2:]])
            self.db.execute("UPDATE dedup_runs SET topic_model = ? WHERE id = ?", [model_run, run_id])
        return run_id, model_run
