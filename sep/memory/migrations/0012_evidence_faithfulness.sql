-- Evidence-first explanations (issue 22): the items an answer cited, and the faithfulness test's
-- answers with those items removed or alone, cached like summaries.
ALTER TABLE predictions ADD COLUMN evidence TEXT;  -- JSON list: item, direction (+/-), note, day, point, texts (ids)

CREATE TABLE IF NOT EXISTS faithfulness (
    stock TEXT NOT NULL,
    date TEXT NOT NULL,
    model TEXT NOT NULL,
    key TEXT NOT NULL,         -- hash of the forecast's prompt and its cited items: a new forecast asks again
    variant TEXT NOT NULL,     -- 'without': the cited items removed from the window; 'only': nothing but them
    label TEXT,                -- up / down / NULL (unparsable)
    p_up REAL,                 -- P(up) read at the label, NULL when the backend gives no log-probs
    response TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (stock, date, model, key, variant)
);
