import pytest

from sep.memory import migration_files, open_memory


def test_fresh_database_has_spine_tables_and_records_migrations(memory):
    tables = set(memory.table_names())
    assert {"prices", "texts", "stocks", "imports", "_migrations"} <= tables
    applied = [r[0] for r in memory.execute("SELECT name FROM _migrations ORDER BY name")]
    assert applied == [name for name, _ in migration_files()]
    assert memory.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert memory.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_reopening_applies_nothing_twice(db_path):
    open_memory(db_path).conn.close()
    db = open_memory(db_path)
    assert db.execute("SELECT count(*) FROM _migrations").fetchone()[0] == len(migration_files())


def _open_at_the_barrier(path: str, barrier, answers) -> None:
    barrier.wait()
    try:
        open_memory(path).conn.close()
        answers.put("ok")
    except Exception as exc:  # what the process would have printed: the test reads it
        answers.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_one_new_memory_at_once_each_get_it_migrated_once(tmp_path):
    """Two `sep` commands started together on a fresh memory (the ranks of a data-parallel training
    launch, two imports in one new folder) both open it. Before, 8 of 10 such starts of 4 processes
    failed: "table stocks already exists", or "database is locked" reported as "not a SQLite database"."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for trial in range(5):
        path = str(tmp_path / f"m{trial}.db")
        barrier, answers = ctx.Barrier(4), ctx.Queue()
        processes = [ctx.Process(target=_open_at_the_barrier, args=(path, barrier, answers)) for _ in range(4)]
        for p in processes:
            p.start()
        for p in processes:
            p.join(timeout=60)
        assert [answers.get(timeout=5) for _ in processes] == ["ok"] * 4
        db = open_memory(path)
        applied = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name")]
        assert applied == [name for name, _ in migration_files()]


def test_prices_are_unique_per_stock_and_day(memory):
    cols = {c.name for c in memory["prices"].columns}
    assert {"stock", "date", "open", "high", "low", "close", "volume"} <= cols
    assert memory["prices"].pks == ["stock", "date"]


def test_a_redone_decision_replaces_its_lessons_and_pairs_not_another_methods_or_models(memory):
    """A batch killed after storing a day and before recording it redoes the day; if the redo is right
    at once, the first run's lesson and pair must go, or a lesson without its miss stays recallable."""
    from sep.memory.predictions import PairRow, PredictionRow, PredictionStore, ReflectionRow

    def trial(n: int, correct: bool, model: str = "m", method: str = "reflect") -> PredictionRow:
        return PredictionRow("005930", "2022-05-31", n, "2022-06-02", "down", "down" if correct else "up", "why",
                             0.6, correct, f"answer {n}", "prompt", model, "now", method=method)

    store = PredictionStore(memory)
    lesson = ReflectionRow("005930", "2022-05-31", "2022-06-02", 0, "a lesson", "m", "now")
    pair = PairRow("005930", "2022-05-31", "prompt", "answer 1", "answer 0", "down", "up", "m", "now")
    store.save([trial(0, False), trial(1, True)], [lesson], [pair])
    store.save([trial(0, False, model="other")], [], [])
    store.save([trial(0, True, method="best-of-n")])
    assert memory.execute("SELECT COUNT(*) FROM reflections").fetchone()[0] == 1
    assert memory.execute("SELECT COUNT(*) FROM pairs").fetchone()[0] == 1  # neither of the others touched them

    store.save([trial(0, True)])  # the redo: right at once
    assert memory.execute("SELECT COUNT(*) FROM reflections").fetchone()[0] == 0
    assert memory.execute("SELECT COUNT(*) FROM pairs").fetchone()[0] == 0
    assert memory.execute("SELECT model, method, COUNT(*) FROM predictions GROUP BY 1, 2 ORDER BY 1, 2").fetchall() == [
        ("m", "best-of-n", 1), ("m", "reflect", 1), ("other", "reflect", 1)]


def test_two_models_reflecting_on_one_day_each_keep_their_lesson_across_the_migration(tmp_path):
    """A memory made before lessons were per model keeps its rows; after it, a second model's lesson
    on the same (stock, day, trial) sits beside the first's instead of replacing it."""
    import sqlite_utils

    from sep.memory.db import migrate
    from sep.memory.predictions import PairRow, PredictionRow, PredictionStore, ReflectionRow

    old = sqlite_utils.Database(tmp_path / "old.db")
    old.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for name, sql in migration_files():
        if name.startswith("0019"):
            break
        old.conn.executescript(sql)
        old.execute("INSERT INTO _migrations VALUES (?, 'then')", [name])
    old.execute("INSERT INTO reflections (stock, date, target_day, trial, reflection, model, created_at, flags, detail) "
                "VALUES ('005930', '2022-05-31', '2022-06-02', 0, 'an old lesson', 'm', 'then', NULL, '{}')")
    old.conn.commit()
    assert "0019_lessons_per_model" in migrate(old)
    assert old.execute("SELECT reflection, model, detail FROM reflections").fetchall() == [("an old lesson", "m", "{}")]

    def missed(model: str) -> tuple[list, list, list]:
        rows = [PredictionRow("005930", "2022-06-02", n, "2022-06-03", "down", label, "why", 0.6, label == "down",
                              f"answer {n}", "prompt", model, "now") for n, label in enumerate(("up", "down"))]
        return (rows, [ReflectionRow("005930", "2022-06-02", "2022-06-03", 0, f"{model}'s lesson", model, "now")],
                [PairRow("005930", "2022-06-02", "prompt", "answer 1", "answer 0", "down", "up", model, "now")])

    store = PredictionStore(old)
    store.save(*missed("m"))
    store.save(*missed("policy"))  # the same day, trial and answers, by another model
    assert old.execute("SELECT model, reflection FROM reflections WHERE date = '2022-06-02' ORDER BY model").fetchall() \
        == [("m", "m's lesson"), ("policy", "policy's lesson")]
    assert old.execute("SELECT model FROM pairs ORDER BY model").fetchall() == [("m",), ("policy",)]


def test_a_write_joined_to_a_decision_lands_with_it_or_not_at_all(memory):
    """A batch records that its day is done in the transaction that stores the day's decision, so a
    kill (or a failing write) can never leave one without the other."""
    from sep.memory.jobs import JobStore
    from sep.memory.predictions import PredictionRow, PredictionStore

    row = PredictionRow("005930", "2022-05-31", 0, "2022-06-02", "down", "down", "why", 0.6, True, "answer", "prompt",
                        "m", "now")
    items = JobStore(memory, "job")

    def failing(db) -> None:
        items.done_with("005930", "2022-05-31", 0.0)(db)
        raise RuntimeError("killed between the two writes")

    with pytest.raises(RuntimeError):
        PredictionStore(memory).save([row], also=failing)
    assert memory.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 0 and not items.done_days()
    PredictionStore(memory).save([row], also=items.done_with("005930", "2022-05-31", 0.0))
    assert memory.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 1
    assert items.done_days() == {("005930", "2022-05-31")}
