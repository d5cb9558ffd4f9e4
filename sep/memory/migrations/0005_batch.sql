-- Batch jobs: the last outcome of each (job, stock, day). Whether a day is done is read from
-- `predictions` (the agents store each decision in one transaction); this keeps failures and timings.
CREATE TABLE batch_items (
    job TEXT NOT NULL,
    stock TEXT NOT NULL,
    date TEXT NOT NULL,
    status TEXT NOT NULL,            -- done | failed
    error TEXT,
    seconds REAL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (job, stock, date)
);
