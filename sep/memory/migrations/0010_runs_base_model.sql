-- The model a run learned on (a catalog name or a model folder): a policy or reward run used on
-- another base is refused, and the experiment compares arms on one base.
ALTER TABLE runs ADD COLUMN base_model TEXT;
