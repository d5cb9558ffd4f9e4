-- Batch jobs own their results: a job is its name plus a fingerprint of what changes answers
-- (model id, trials, window, prompts, summarizer, policy, reward, best-of). A changed job file under
-- the same name is refused until it is renamed or run with --restart; `sep batch status` and
-- `sep eval --job` read only the job's own items and the model that answered them.
CREATE TABLE jobs (
    name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    model TEXT NOT NULL,             -- the name its predictions carry in predictions.model
    config TEXT NOT NULL,            -- JSON: what the fingerprint covers
    created_at TEXT NOT NULL
);
