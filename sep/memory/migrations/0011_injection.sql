-- Texts that address the model, not the market (sep.guard): the rule that flagged one at import
-- or dedup (NULL: clean), and a user's verdict that a flag was wrong (`sep data unflag ID`), which
-- no later check overrides. A flagged text never enters a prompt.
ALTER TABLE texts ADD COLUMN injection TEXT;
ALTER TABLE texts ADD COLUMN injection_allowed INTEGER NOT NULL DEFAULT 0;
