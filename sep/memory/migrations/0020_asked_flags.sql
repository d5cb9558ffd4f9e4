-- Issue 31: why a forecast was asked again. Each ask's quality flags, in order, asks apart by ';'
-- ("stance_mismatch;" = flagged, then clean); NULL when the forecast was asked once.
ALTER TABLE predictions ADD COLUMN asked_flags TEXT;
ALTER TABLE experiment_forecasts ADD COLUMN asked_flags TEXT;
