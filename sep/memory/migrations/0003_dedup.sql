-- Deduplication and topic filtering of texts (sep dedup). NULL columns mean "dedup has not run on this day".
ALTER TABLE texts ADD COLUMN dup_of INTEGER;             -- the representative copy this text repeats
ALTER TABLE texts ADD COLUMN dup_kind TEXT;              -- exact | near
ALTER TABLE texts ADD COLUMN topic INTEGER;              -- BERTopic topic id (-1 = outlier)
ALTER TABLE texts ADD COLUMN flag TEXT;                  -- off-topic reason, e.g. "keyword:ads:리딩방" or "topic:politics"
ALTER TABLE texts ADD COLUMN is_representative INTEGER;  -- 1: one of the day's top-k, read by summarize; 0: not
ALTER TABLE texts ADD COLUMN dedup_run INTEGER;          -- dedup_runs.id that last decided this row

CREATE TABLE dedup_runs (
    id INTEGER PRIMARY KEY,
    stock TEXT NOT NULL,
    start TEXT, "end" TEXT,
    refit INTEGER NOT NULL,          -- 1: topic model fitted in this run; 0: new texts transformed
    embedder TEXT NOT NULL,
    params TEXT NOT NULL,            -- JSON of every setting that shapes the result (seed included)
    input INTEGER NOT NULL,
    exact_duplicates INTEGER NOT NULL,
    near_duplicates INTEGER NOT NULL,
    off_topic INTEGER NOT NULL,
    kept INTEGER NOT NULL,           -- representatives
    topics INTEGER NOT NULL,
    seconds REAL NOT NULL,
    timings TEXT NOT NULL,           -- JSON: embedding, umap, hdbscan, rest
    at TEXT NOT NULL
);

CREATE TABLE topic_models (          -- the fitted BERTopic per stock, so new days are transformed, not refitted
    stock TEXT PRIMARY KEY,
    run INTEGER NOT NULL,
    embedder TEXT NOT NULL,
    model BLOB NOT NULL              -- pickled BERTopic (written and read only by sep)
);

CREATE TABLE topics (
    stock TEXT NOT NULL,
    topic INTEGER NOT NULL,
    run INTEGER NOT NULL,
    size INTEGER NOT NULL,
    words TEXT NOT NULL,             -- top words, space separated
    example TEXT,
    flag TEXT,                       -- off-topic category of the whole cluster, or NULL
    PRIMARY KEY (stock, topic)
);
CREATE INDEX texts_dedup ON texts(stock, date, is_representative);
