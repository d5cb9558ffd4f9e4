-- Quality flags (sep.quality): every generated text is stored with what its checks found.
-- flags: comma-separated names among copied, ungrounded, invented_dates, degenerate; NULL when clean.

-- summaries: `method` says who wrote the stored points: 'model' (the LLM's cited points) or
-- 'extractive' (the day's top representative titles), used when the model's attempt was flagged
-- (its flags are kept here) or when asked for (`--summarizer extractive`).
ALTER TABLE summaries ADD COLUMN method TEXT NOT NULL DEFAULT 'model';
ALTER TABLE summaries ADD COLUMN flags TEXT;
ALTER TABLE summaries ADD COLUMN attempt TEXT;   -- the model's raw answer when it was flagged (a failed attempt)

-- predictions: a flagged explanation counts as unparsable in `sep eval`.
ALTER TABLE predictions ADD COLUMN flags TEXT;

-- reflections: a flagged lesson is kept for the audit but never recalled.
ALTER TABLE reflections ADD COLUMN flags TEXT;
