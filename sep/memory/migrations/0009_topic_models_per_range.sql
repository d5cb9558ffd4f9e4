-- Topic models are kept per fitted range (a `--refit --start/--end` no longer replaces the
-- stock's only model) and saved with BERTopic's safetensors serialization instead of pickle.
CREATE TABLE topic_models_new (
    run INTEGER PRIMARY KEY,         -- the dedup run that fitted it
    stock TEXT NOT NULL,
    start TEXT, "end" TEXT,          -- the range asked for (NULL: open)
    first_day TEXT, last_day TEXT,   -- the days of the texts it was fitted on
    embedder TEXT NOT NULL,
    format TEXT NOT NULL,            -- bertopic-safetensors-zip | pickle (written before this migration)
    model BLOB NOT NULL
);
INSERT INTO topic_models_new (run, stock, start, "end", first_day, last_day, embedder, format, model)
    SELECT m.run, m.stock, r.start, r."end", NULL, NULL, m.embedder, 'pickle', m.model
    FROM topic_models m LEFT JOIN dedup_runs r ON r.id = m.run;
DROP TABLE topic_models;
ALTER TABLE topic_models_new RENAME TO topic_models;
CREATE INDEX topic_models_stock ON topic_models(stock, run);

CREATE TABLE topics_new (
    stock TEXT NOT NULL,
    topic INTEGER NOT NULL,
    run INTEGER NOT NULL,            -- topic_models.run: the model these topics belong to
    size INTEGER NOT NULL,
    words TEXT NOT NULL,
    example TEXT,
    flag TEXT,
    PRIMARY KEY (stock, run, topic)
);
INSERT INTO topics_new SELECT stock, topic, run, size, words, example, flag FROM topics;
DROP TABLE topics;
ALTER TABLE topics_new RENAME TO topics;

ALTER TABLE dedup_runs ADD COLUMN topic_model INTEGER;  -- topic_models.run fitted or used by this run
