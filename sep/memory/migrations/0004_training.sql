-- Training runs, and predictions made by other methods than the reflect loop (best-of-n).
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,              -- sft | reward | ppo | grpo
    out TEXT NOT NULL,               -- run directory: config.json, metrics.json, adapter/, checkpoints/
    config TEXT NOT NULL,            -- JSON
    data_hash TEXT NOT NULL,         -- sha256 of the training examples
    examples INTEGER NOT NULL,
    status TEXT NOT NULL,            -- running | done | failed
    metrics TEXT,                    -- JSON, when done
    started_at TEXT NOT NULL,
    finished_at TEXT
);

-- predictions: add `method` (reflect | best-of-n) to the key, so a best-of-n answer for a day
-- sits beside the reflect trials of that day. SQLite can't change a UNIQUE constraint in place.
CREATE TABLE predictions_new (
    id INTEGER PRIMARY KEY,
    stock TEXT NOT NULL,
    date TEXT NOT NULL,
    trial INTEGER NOT NULL,
    target_day TEXT NOT NULL,
    actual TEXT NOT NULL,
    label TEXT,
    explanation TEXT,
    confidence REAL,
    correct INTEGER NOT NULL,
    response TEXT NOT NULL,
    prompt TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at TEXT NOT NULL,
    method TEXT NOT NULL DEFAULT 'reflect',   -- reflect | best-of-n
    candidates TEXT,                          -- best-of-n: JSON [{label, explanation, reward}]
    UNIQUE (stock, date, method, trial)
);
INSERT INTO predictions_new (id, stock, date, trial, target_day, actual, label, explanation, confidence, correct,
                             response, prompt, model, created_at)
    SELECT id, stock, date, trial, target_day, actual, label, explanation, confidence, correct, response, prompt,
           model, created_at FROM predictions;
DROP TABLE predictions;
ALTER TABLE predictions_new RENAME TO predictions;
