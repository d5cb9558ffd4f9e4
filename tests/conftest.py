"""Shared fixtures: a fresh memory database per test, and the real data excerpts."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sep.ingest import import_prices, import_texts
from sep.memory import open_memory
from sep.sample import sample_files

FIXTURES = Path(__file__).parent / "fixtures"
SEP = [sys.executable, "-m", "sep.cli"]


def run(*args: str, db: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The CLI as users call it: a real process, real exit code, real output."""
    full_env = {**os.environ, "SEP_DB": str(db), "COLUMNS": "200", **(env or {})}
    return subprocess.run([*SEP, *args], capture_output=True, text=True, env=full_env, timeout=timeout)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sep.db"


@pytest.fixture
def memory(db_path: Path):
    """A fresh, migrated database (the sqlite-utils/llm pattern)."""
    db = open_memory(db_path)
    yield db
    db.conn.close()


@pytest.fixture
def sample_memory(memory):
    """Memory holding the bundled demo sample: 005930 prices for 2022 and May 2022 news."""
    prices, texts = sample_files()
    import_prices(memory, prices)
    import_texts(memory, texts)
    return memory


def table_digest(db) -> str:
    """A fingerprint of every user table's rows: equal digests mean an unchanged database."""
    h = hashlib.sha256()
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
        for row in db.execute(f"SELECT * FROM [{name}] ORDER BY 1"):
            h.update(repr(row).encode())
    return h.hexdigest()
