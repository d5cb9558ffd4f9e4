-- A reflection's shape (issue 31): the cited item that misled and why, the item overlooked, the answer as
-- written (JSON); `reflection` keeps only the general lesson, which is what recall shows later.
ALTER TABLE reflections ADD COLUMN detail TEXT;
-- The stance-only baseline: the mean P(positive) - P(negative) of every item the window showed, judged by
-- the stance step (no explanation), beside each derived forecast.
ALTER TABLE predictions ADD COLUMN window_stance REAL;
ALTER TABLE experiment_forecasts ADD COLUMN window_stance REAL;
