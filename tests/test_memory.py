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


def test_prices_are_unique_per_stock_and_day(memory):
    cols = {c.name for c in memory["prices"].columns}
    assert {"stock", "date", "open", "high", "low", "close", "volume"} <= cols
    assert memory["prices"].pks == ["stock", "date"]
