-- Issue 31: how many asks a forecast took. An answer the quality gate flags is asked again, sampled and
-- still without the outcome (Agents.forecast); reports count the re-asked forecasts apart.
ALTER TABLE predictions ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE experiment_forecasts ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
