"""Shared fixtures: a fresh memory database per test, and the real data excerpts."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# pytest-xdist's workers inherit COLUMNS=80 (and LINES), which rich reads once, when sep.cli makes
# its consoles: each CLI call's own COLUMNS (see `run`) must decide the width, as in a real shell.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

# The workers share the machine's cores, so each runs its engines on its share: llama.cpp's and
# OpenMP's threads spin while they wait, and four spinning on two cores waste what they wait for.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
SHARE = {"SEP_THREADS": str(max(1, (os.cpu_count() or 1) // WORKERS))} if WORKERS > 1 else {}
if SHARE:  # before numpy, torch and numba read them
    os.environ.update(OMP_NUM_THREADS=SHARE["SEP_THREADS"], NUMBA_NUM_THREADS=SHARE["SEP_THREADS"])

from sep.ingest import import_prices, import_texts  # noqa: E402 (after the thread settings above)
from sep.memory import open_memory  # noqa: E402 (after the thread settings above)
from sep.sample import sample_files  # noqa: E402 (after the thread settings above)

from tiny import tiny_qwen  # noqa: E402 (after the thread settings above)

FIXTURES = Path(__file__).parent / "fixtures"
SEP = [sys.executable, "-m", "sep.cli"]


# The user's model cache, read before any fixture clears SEP_*: its prepared models are linked
# into each session's own cache (see `test_cache`).
USER_MODELS = Path(os.environ.get("SEP_CACHE_DIR") or
                   Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sep") / "models"
OURS = ("SEP_", "OPENAI_")  # what Settings reads (OPENAI_API_KEY/OPENAI_BASE_URL when SEP_* is unset)
KEPT = {"SEP_REQUIRE_CHROMIUM", "SEP_CACHE_DIR"}  # the environment every test sees (set below)

# The bundled sample is news only, and a day of news headlines skips the summarizer by default
# (SEP_SUMMARIZER=auto). Most tests exercise the model's summaries (the cache, the gate, the time rule,
# the offline stages), so the suite asks for them; a test of the default path sets SEP_SUMMARIZER=auto.
SUITE = {"SEP_SUMMARIZER": "model"}

PLUMBING_MODEL = "gemma-270m"  # fast; tests that only check plumbing use it (one test runs the default model)


# The tests that take minutes on 2 cores (the default model end to end), longest first. They run
# first, dealt one per worker in turn: left to xdist's chunks, the two longest landed on one worker,
# which ended 2½ minutes after the other.
LONG = ("test_adapters.py::test_the_default_model_trains_and_answers_through_its_adapter",
        "test_agents.py::test_default_model_writes_cited_uncopied_korean",
        "test_guard.py::test_the_issue_example_on_the_default_model_answers_as_without_the_post",
        "test_batch.py::test_the_embedded_model_executes_a_requests_file_as_a_live_run_answers",
        "test_adapters.py::test_the_embedding_reward_head_learns_in_seconds_and_scores_best_of_n",
        "test_stance.py::test_the_default_model_reads_clear_news_on_real_sentences")


def _long_rank(nodeid: str) -> int:
    return next((i for i, name in enumerate(LONG) if nodeid.endswith(name)), len(LONG))


def pytest_collection_modifyitems(items: list) -> None:
    items.sort(key=lambda item: _long_rank(item.nodeid))  # stable: the rest keep pytest's order


def pytest_xdist_make_scheduler(config, log):
    from itertools import cycle

    from xdist.scheduler import LoadScheduling

    class LongFirst(LoadScheduling):
        """xdist's load scheduling, after dealing the LONG tests (the collection's first) one at a time."""

        def schedule(self) -> None:
            if self.collection is None and self.collection_is_completed and self._check_nodes_have_same_collection():
                collection = next(iter(self.node2collection.values()))
                n_long = sum(_long_rank(nodeid) < len(LONG) for nodeid in collection)
                if n_long and len(collection) > n_long + 2 * len(self.nodes):
                    self.collection = collection
                    self.pending[:] = range(len(collection))
                    if self.maxschedchunk is None:  # as xdist's own first schedule sets it
                        self.maxschedchunk = len(collection)
                    for node, _ in zip(cycle(self.nodes), range(n_long)):
                        self._send_tests(node, 1)
                    chunk = max(2, len(self.pending) // len(self.nodes) // 4)
                    for node in self.nodes:
                        self._send_tests(node, chunk)
                    return
            super().schedule()

    return LongFirst(config, log)


def run(*args: str, db: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The CLI in-process through typer's CliRunner: real parsing, exit codes, stdout and stderr,
    without starting an interpreter per call (`run_process` is the real process, for the few
    tests that need one).

    The caller's SEP_* variables are not passed on (a developer's SEP_TRIALS must not change a test).
    Without --base-url the embedded model is the fast plumbing one unless the test names another.
    """
    from typer.testing import CliRunner

    from sep.cli import app

    cleared = {k: None for k in os.environ if k.startswith(OURS) and k not in KEPT}
    full_env = {**cleared, **SHARE, **SUITE, "SEP_DB": str(db), "COLUMNS": "200", **_plumbing(args), **(env or {})}
    result = CliRunner().invoke(app, list(args), env=full_env)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        stderr += "".join(traceback.format_exception(result.exception))  # what a real process would print
    return subprocess.CompletedProcess(["sep", *args], result.exit_code, result.stdout, stderr)


def run_process(*args: str, db: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The CLI as a real process (the entry point, a separate interpreter), for what needs one."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(OURS) or k in KEPT}
    full_env = {**base, **SHARE, **SUITE, "SEP_DB": str(db), "COLUMNS": "200", **_plumbing(args), **(env or {})}
    return subprocess.run([*SEP, *args], capture_output=True, text=True, env=full_env, timeout=timeout)


def _plumbing(args: tuple[str, ...]) -> dict:
    return {} if "--base-url" in args or "--model" in args else {"SEP_MODEL": PLUMBING_MODEL}


def run_root(tmp_path_factory, worker_id: str) -> Path:
    """The directory every xdist worker of this run shares (the base temp directory without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def test_cache(tmp_path_factory, worker_id) -> Path:
    """This run's own cache directory, shared by its workers. Models the user already prepared are
    linked in, read only (joining 1.4 GB of parts, or converting a model, per run is not
    affordable); whatever a test prepares, converts or writes lands here and is gone with the run.
    sep's own file locks keep two workers from preparing the same model at once."""
    from filelock import FileLock

    root = run_root(tmp_path_factory, worker_id)
    cache = root / "sep-cache"
    with FileLock(str(root / "sep-cache.lock")):
        if not (cache / "models").is_dir():
            (cache / "models").mkdir(parents=True)
            if USER_MODELS.is_dir():
                for entry in USER_MODELS.iterdir():
                    if not entry.name.endswith((".partial", ".lock")):
                        (cache / "models" / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return cache


@pytest.fixture(scope="session")
def qwen_hf(test_cache) -> Path:
    """The default model de-quantized into a transformers folder (what `sep train` trains on; slow, once)."""
    from sep.backends.policy import prepare_hf_model
    from sep.models import DEFAULT_MODEL

    return prepare_hf_model(test_cache, name=DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, test_cache, worker_id) -> tuple[Path, Path]:
    """Built once per run, under a lock, and shared by the xdist workers (read only: tests copy what they change)."""
    from filelock import FileLock

    from sep.models import DEFAULT_MODEL, local_model

    root = run_root(tmp_path_factory, worker_id)
    with FileLock(str(root / "tiny.lock")):
        built = root / "tiny" / "built.json"
        if built.exists():
            return tuple(Path(p) for p in json.loads(built.read_text()))
        qwen = local_model(test_cache, DEFAULT_MODEL)  # its GGUF: the tokenizer and the chat template
        made = tiny_qwen(root / "tiny", qwen)
        built.write_text(json.dumps([str(p) for p in made]))
        return made


@pytest.fixture(autouse=True)
def no_caller_settings(monkeypatch, test_cache):
    """In-process code reads Settings() too: the caller's SEP_* variables must not reach it, and
    the cache is the session's own (the user's cache directory is never written)."""
    for key in [k for k in os.environ if k.startswith(OURS) and k != "SEP_REQUIRE_CHROMIUM"]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SEP_CACHE_DIR", str(test_cache))
    for key, value in {**SHARE, **SUITE}.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def mock_llm():
    """The scripted in-process backend (default script: cite, explain with the summary's words, a
    lesson): runs the agents, batches, best-of-n and the judge with no model and no HTTP."""
    from sep.backends.mock import mock_llm

    return mock_llm()


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
