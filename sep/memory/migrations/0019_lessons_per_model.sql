-- Lessons and pairs belong to the model that wrote them, as predictions do since 0006: two models
-- reflecting on the same (stock, day) each keep their lesson, instead of the second replacing the
-- first's (INSERT OR REPLACE on the old key). SQLite can't change a UNIQUE constraint in place.
CREATE TABLE reflections_new (
    id INTEGER PRIMARY KEY,
    stock TEXT NOT NULL,
    date TEXT NOT NULL,              -- the decision day it reflects on
    target_day TEXT NOT NULL,        -- recalled only by decisions made on or after this day
    trial INTEGER NOT NULL,
    reflection TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at TEXT NOT NULL,
    flags TEXT,
    detail TEXT,
    UNIQUE (stock, date, model, trial)
);
INSERT INTO reflections_new (id, stock, date, target_day, trial, reflection, model, created_at, flags, detail)
    SELECT id, stock, date, target_day, trial, reflection, model, created_at, flags, detail FROM reflections;
DROP TABLE reflections;
ALTER TABLE reflections_new RENAME TO reflections;
CREATE INDEX reflections_stock_target ON reflections(stock, target_day);

CREATE TABLE pairs_new (
    id INTEGER PRIMARY KEY,
    stock TEXT NOT NULL,
    date TEXT NOT NULL,
    prompt TEXT NOT NULL,            -- the explain prompt without reflections
    chosen TEXT NOT NULL,            -- the correct response
    rejected TEXT NOT NULL,          -- the wrong one it replaced
    chosen_label TEXT NOT NULL,
    rejected_label TEXT,
    model TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (stock, date, model, chosen, rejected)
);
INSERT INTO pairs_new (id, stock, date, prompt, chosen, rejected, chosen_label, rejected_label, model, created_at)
    SELECT id, stock, date, prompt, chosen, rejected, chosen_label, rejected_label, model, created_at FROM pairs;
DROP TABLE pairs;
ALTER TABLE pairs_new RENAME TO pairs;
