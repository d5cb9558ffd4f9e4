"""The stance cache (`sep.stances`): a text's three probabilities, per model and prompt version."""

from __future__ import annotations

import sqlite_utils

from sep.memory.db import now_iso, transaction

StanceKey = tuple[str, str, str]  # (text key, model, prompt version)


def cached_stances(db: sqlite_utils.Database, keys: list[StanceKey]) -> dict[StanceKey, list[float]]:
    """The stored raw probabilities (positive, neutral, negative) of the keys memory has."""
    out: dict[StanceKey, list[float]] = {}
    wanted = list(dict.fromkeys(keys))
    for i in range(0, len(wanted), 300):  # SQLite caps the parameters of one statement
        chunk = wanted[i:i + 300]
        where = " OR ".join(["(text_key = ? AND model = ? AND prompt_version = ?)"] * len(chunk))
        for row in db.execute(f"SELECT text_key, model, prompt_version, p_positive, p_neutral, p_negative "
                              f"FROM stances WHERE {where}", [v for k in chunk for v in k]).fetchall():
            out[(row[0], row[1], row[2])] = [row[3], row[4], row[5]]
    return out


def store_stances(db: sqlite_utils.Database, rows: list[tuple[StanceKey, list[float]]]) -> None:
    """Judgements stored in one transaction (a repeat of a stored key is ignored)."""
    with transaction(db):
        for key, probs in rows:
            db.execute("INSERT OR IGNORE INTO stances (text_key, model, prompt_version, p_positive, p_neutral, "
                       "p_negative, created_at) VALUES (?,?,?,?,?,?,?)", [*key, *probs, now_iso()])
