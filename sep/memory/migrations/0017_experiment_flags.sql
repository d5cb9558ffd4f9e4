-- Issue 31: why an experiment forecast was withheld (the quality gate's flags, comma-joined; NULL when
-- answered), so the experiment table counts stance_mismatch and the other flags per arm.
ALTER TABLE experiment_forecasts ADD COLUMN flags TEXT;
