-- The stance step's judgements (sep.stances): P(positive/neutral/negative) of one text by one model
-- under one prompt version, raw (a prompt's calibration is applied when read). A summary point that
-- many windows show is judged once.
CREATE TABLE stances (
    text_key TEXT NOT NULL,          -- sha1 of the text, whitespace collapsed
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    p_positive REAL NOT NULL,
    p_neutral REAL NOT NULL,
    p_negative REAL NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (text_key, model, prompt_version)
);
