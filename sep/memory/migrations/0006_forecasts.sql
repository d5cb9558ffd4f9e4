-- Honest forecasts: who made each prediction, which days its training saw, and walk-forward experiments.

-- The days a training run learned from: decision days data_start..data_end whose target day is on or
-- before data_end. Anything scored on or before data_end with this run is in-sample.
ALTER TABLE runs ADD COLUMN stocks TEXT;          -- JSON list of stocks, NULL when trained from a file without them
ALTER TABLE runs ADD COLUMN data_start TEXT;
ALTER TABLE runs ADD COLUMN data_end TEXT;

-- predictions: `model` joins the key, so a policy's answers sit beside the base model's for the same
-- days instead of replacing them; `data_end` is the latest data_end of the runs (policy, reward model)
-- that made the answer, so evaluation can tell in-sample days from forecasts.
CREATE TABLE predictions_new (
    id INTEGER PRIMARY KEY,
    stock TEXT NOT NULL,
    date TEXT NOT NULL,
    trial INTEGER NOT NULL,          -- 0: the forecast (known by D); 1..: retries told the outcome (hindsight)
    target_day TEXT NOT NULL,
    actual TEXT NOT NULL,
    label TEXT,
    explanation TEXT,
    confidence REAL,                 -- probability of `label`
    correct INTEGER NOT NULL,
    response TEXT NOT NULL,
    prompt TEXT NOT NULL,
    model TEXT NOT NULL,             -- the model or policy that answered
    created_at TEXT NOT NULL,
    method TEXT NOT NULL DEFAULT 'reflect',
    candidates TEXT,
    data_end TEXT,                   -- NULL: no trained run involved
    UNIQUE (stock, date, method, model, trial)
);
INSERT INTO predictions_new (id, stock, date, trial, target_day, actual, label, explanation, confidence, correct,
                             response, prompt, model, created_at, method, candidates)
    SELECT id, stock, date, trial, target_day, actual, label, explanation, confidence, correct, response, prompt,
           model, created_at, method, candidates FROM predictions;
DROP TABLE predictions;
ALTER TABLE predictions_new RENAME TO predictions;
CREATE INDEX predictions_day ON predictions(stock, date);

-- sep experiment run: one row per (name, settings); a rerun with the same settings resumes it.
CREATE TABLE experiments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    config TEXT NOT NULL,            -- JSON: stocks, ranges, arms, steps, model
    config_hash TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,            -- running | done | failed
    result TEXT,                     -- JSON: the arm table, when done
    started_at TEXT NOT NULL,
    finished_at TEXT
);

-- Every test-day forecast of every arm (kept apart from `predictions`: arms share days and models).
CREATE TABLE experiment_forecasts (
    experiment INTEGER NOT NULL,
    arm TEXT NOT NULL,
    stock TEXT NOT NULL,
    date TEXT NOT NULL,
    target_day TEXT NOT NULL,
    actual TEXT NOT NULL,
    label TEXT,
    confidence REAL,
    explanation TEXT,
    response TEXT,
    model TEXT NOT NULL,
    data_end TEXT,                   -- the training data's last day for this forecast (always before `date`)
    created_at TEXT NOT NULL,
    PRIMARY KEY (experiment, arm, stock, date)
);
