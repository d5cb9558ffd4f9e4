-- Offline batch (`sep batch export` / `sep batch ingest`): the requests a job wrote to a file in the
-- OpenAI Batch API format (what `vllm run-batch`, OpenAI's Batch API and Ray Data LLM read), and
-- the results read back. Each decision is replayed through the agents from these until it needs a
-- request that has no result yet: that request is in the next export.
CREATE TABLE batch_requests (
    job TEXT NOT NULL,
    custom_id TEXT NOT NULL,         -- JOB/STOCK/DAY/STAGE/TRIAL
    stage TEXT NOT NULL,             -- summary | forecast | reflect | retry | best_of
    stock TEXT NOT NULL,
    date TEXT NOT NULL,              -- the text day of a summary, else the decision day
    trial INTEGER NOT NULL,
    body_sha TEXT NOT NULL,          -- sha256 of the body: a result answers this body or none
    body TEXT NOT NULL,              -- the chat completion request, as a live run sends it
    exported_at TEXT NOT NULL,
    PRIMARY KEY (job, custom_id)
);
CREATE TABLE batch_results (
    job TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    body_sha TEXT NOT NULL,          -- the request it answers
    status TEXT NOT NULL,            -- ok | failed (a failed request is exported again)
    response TEXT,                   -- the chat completion body (ok)
    error TEXT,                      -- what the runner said (failed)
    ingested_at TEXT NOT NULL,
    PRIMARY KEY (job, custom_id)
);
