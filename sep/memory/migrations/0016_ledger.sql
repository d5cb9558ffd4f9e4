-- Pre-registered forecasts (issue 35): an append-only, hash-chained ledger. `entry` is the entry's
-- canonical JSON (sorted keys, no spaces, UTF-8); hash = sha256(prev_hash + "\n" + entry). stock, date
-- and model repeat the entry's own fields so that one forecast per (stock, D, model) is enforced here.
CREATE TABLE ledger (
    id INTEGER PRIMARY KEY,
    stock TEXT NOT NULL,
    date TEXT NOT NULL,
    model TEXT NOT NULL,
    entry TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    UNIQUE (stock, date, model)
);
-- Entries are never updated or deleted through sep; an edit made around these triggers is what
-- `sep ledger verify` finds.
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger entries are never updated'); END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger entries are never deleted'); END;
-- Outcomes, filled once the target close is in memory; kept apart so scoring never touches an entry.
CREATE TABLE ledger_outcomes (
    entry_id INTEGER PRIMARY KEY REFERENCES ledger(id),
    target_day TEXT NOT NULL,
    last_close REAL NOT NULL,
    target_close REAL NOT NULL,
    ret REAL NOT NULL,
    actual TEXT NOT NULL,
    scored_at TEXT NOT NULL
);
