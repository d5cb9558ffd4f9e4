-- Summaries (a cache), predictions (every trial), reflections (long-term lessons), pairs (training data).
CREATE TABLE summaries (
    id INTEGER PRIMARY KEY,
    stock TEXT NOT NULL,
    date TEXT NOT NULL,              -- the day whose texts were summarised
    text_hash TEXT NOT NULL,         -- hash of the ids and titles that went in
    n_texts INTEGER NOT NULL,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    summary TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (stock, date, text_hash, model, prompt_version)
);

CREATE TABLE predictions (
    id INTEGER PRIMARY KEY,
    stock TEXT NOT NULL,
    date TEXT NOT NULL,              -- decision day D
    trial INTEGER NOT NULL,          -- 0 = first answer, 1.. = after reflections
    target_day TEXT NOT NULL,
    actual TEXT NOT NULL,            -- up | down
    label TEXT,                      -- up | down | NULL when unparsable (counts as wrong)
    explanation TEXT,
    confidence REAL,
    correct INTEGER NOT NULL,
    response TEXT NOT NULL,          -- raw model output
    prompt TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (stock, date, trial)
);

CREATE TABLE reflections (
    id INTEGER PRIMARY KEY,
    stock TEXT NOT NULL,
    date TEXT NOT NULL,              -- the decision day it reflects on
    target_day TEXT NOT NULL,        -- recalled only by decisions made on or after this day
    trial INTEGER NOT NULL,
    reflection TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (stock, date, trial)
);
CREATE INDEX reflections_stock_target ON reflections(stock, target_day);

CREATE TABLE pairs (
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
    UNIQUE (stock, date, chosen, rejected)
);
